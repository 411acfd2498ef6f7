import json
import logging
import os
from contextlib import contextmanager
from itertools import islice
from pathlib import Path

import pytest

from dataio.corpus import BUILTIN_WIKI, read_documents

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` by relative path, with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@contextmanager
def left_as_found(roots: list[Path], test: str):
    """Folders a module's tests share (a finished run) must come out of each test as they went in, so
    that no test's result depends on which tests ran before it: a test that changes one works on a copy."""
    before = {root: tree_state(root) for root in roots}
    yield
    for root, state in before.items():
        now = tree_state(root)
        changed = sorted(name for name in state.keys() | now.keys() if state.get(name) != now.get(name))
        assert not changed, f"{test} changed the shared {root} (copy it first): {', '.join(changed[:10])}"


def shared_file(relative: str) -> Path:
    """A file from ../shared/data, read in place; the test skips where that folder is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is not here (../shared/data is only on the project's own machines)")
    return path


@pytest.fixture(scope="session")
def s3_server():
    """A local S3 server (moto) on loopback for the whole session, its endpoint and test keys in the
    environment before Ray starts, so every Ray worker reads and writes it too. None without moto."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        yield None
        return
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }
    )
    yield os.environ["AWS_ENDPOINT_URL"]
    server.stop()


@pytest.fixture
def s3(s3_server):
    """A boto3 client of the session's S3 server, with fresh buckets `runs` and `corpus`."""
    if s3_server is None:
        pytest.skip("moto is not installed (pip install -e '.[test]')")
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server)
    for bucket in ("runs", "corpus"):
        if any(b["Name"] == bucket for b in client.list_buckets()["Buckets"]):
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for o in page.get("Contents", []):
                    client.delete_object(Bucket=bucket, Key=o["Key"])
        else:
            client.create_bucket(Bucket=bucket)
    return client


def bucket_keys(client, bucket: str, prefix: str) -> list[str]:
    return [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for o in page.get("Contents", [])
    ]


def bucket_files(client, bucket: str, prefix: str) -> dict[str, bytes]:
    return {
        k[len(prefix) :]: client.get_object(Bucket=bucket, Key=k)["Body"].read()
        for k in bucket_keys(client, bucket, prefix)
    }


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """One real local Ray cluster per test session (startup is seconds; idle Ray holds ~0.6 GB)."""
    import ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    # Ray Train's controller polls workers every 2 s and a worker's report waits for the previous one
    # to be collected, so tiny test runs that checkpoint every few steps would mostly wait.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def write_corpus(path: Path, documents: int) -> Path:
    """The first `documents` articles of the embedded default corpus as a JSON-lines file."""
    with path.open("w") as f:
        for doc in islice(read_documents(BUILTIN_WIKI), documents):
            f.write(json.dumps({"id": doc.doc_id, "text": doc.text}) + "\n")
    return path


def write_sst2(folder: Path) -> Path:
    """An SST-2-format task (60 train, 20 dev) made of the corpus' own first sentences."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = [d.text.split(".")[0].replace("\t", " ") for d in islice(read_documents(BUILTIN_WIKI), 80)]
    for name, docs in (("sst2_train_full.tsv", range(0, 60)), ("sst2_dev.tsv", range(60, 80))):
        (folder / name).write_text("sentence\tlabel\n" + "".join(f"{texts[i]}\t{i % 2}\n" for i in docs))
    return folder
