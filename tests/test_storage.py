"""A run directory and a corpus on S3 (a local S3-compatible server on loopback, the session's
`s3_server`): every stage's tasks read and write the bucket themselves, and a rerun after an
interrupted write resumes from the shards that made it."""

import dataclasses
import json
import os
import socket
import time
from itertools import islice
from pathlib import Path

import pytest

from dataio import uri as U
from dataio.corpus import BUILTIN_WIKI, read_documents
from dataio.lease import Lease
from dataio.rundir import RunDir
from jobs.config import load_config
from jobs.pipeline import main, run_pipeline, stage_hashes
from jobs.refresh import refresh
from tests.conftest import bucket_files

pytestmark = pytest.mark.integration
CONFIG = """
name: s3
model: {{kind: bert, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, seq_len: 64}}
corpus: {{source: {corpus}}}
prepare: {{vocab_size: 600, documents_per_shard: 40, heldout_fraction: 0.1}}
warmstart: {{steps: 2, global_batch_size: 8, warmup_steps: 1, checkpoint_every: 2}}
embed: {{layer: -1, batch_size: 32, num_actors: 1}}
select: {{fraction: 0.25, knn_k: 5, num_partitions: 2}}
"""


def remote_files(client, prefix: str) -> dict[str, bytes]:
    return bucket_files(client, "runs", prefix)


def put_corpus(s3, documents: int, key: str = "wiki.jsonl") -> str:
    body = "".join(
        json.dumps({"id": d.doc_id, "text": d.text}) + "\n" for d in islice(read_documents(BUILTIN_WIKI), documents)
    )
    s3.put_object(Bucket="corpus", Key=key, Body=body.encode())
    return f"s3://corpus/{key}"


def test_stages_write_to_s3_and_resume_after_an_interrupted_write(ray_cluster, s3, tmp_path):
    cfg = load_config(_write(tmp_path, CONFIG.format(corpus=put_corpus(s3, 160))))
    stages = ["prepare", "warmstart", "embed", "select"]
    rows = run_pipeline(cfg, "s3://runs/exp", only=stages)
    assert [r["status"] for r in rows] == ["ran"] * 4
    first = remote_files(s3, "exp/")
    for stage in ("prepare", "warmstart", "embed", "select"):
        assert f"{stage}/_SUCCESS" in first and f"{stage}/manifest.json" in first
    assert "prepare/sequences/part-00003.parquet" in first and "select/subset.parquet" in first

    # Run again (from any machine: nothing is kept locally): every stage is done on S3.
    assert [r["status"] for r in run_pipeline(cfg, "s3://runs/exp", only=stages)] == ["skipped"] * 4

    # An interrupted write: select's marker and one partition never reached S3.
    s3.delete_object(Bucket="runs", Key="exp/select/_SUCCESS")
    s3.delete_object(Bucket="runs", Key="exp/select/partitions/part-00001.parquet")
    rows = run_pipeline(cfg, "s3://runs/exp", only=["select"])
    manifest = json.loads(remote_files(s3, "exp/select/")["manifest.json"])
    assert rows[0]["status"] == "ran" and [p["partition"] for p in manifest["summary"]["per_partition"]] == [1]
    again = remote_files(s3, "exp/select/")
    for name in (
        "_SUCCESS",
        "subset.parquet",
        "subset_ingenious.parquet",
        "probabilities.parquet",
        "partitions/part-00000.parquet",
        "partitions/part-00001.parquet",
    ):
        assert again[name] == first[f"select/{name}"]  # the same bytes as the uninterrupted run

    # A config change: select starts afresh under a new hash and dies after one partition. None of
    # the old config's files stay beside the new manifest, and the old config's run takes nothing of
    # it: it selects again, same bytes.
    changed = dataclasses.replace(cfg, select=dataclasses.replace(cfg.select, seed=cfg.select.seed + 1))
    run = RunDir("s3://runs/exp")
    out = run.begin("select", stage_hashes(changed)["select"], {}, {"embed": run.output_digest("embed")})
    U.write_bytes(U.join(out, "partitions", "part-00000.parquet"), b"the new config's first partition")
    partial = remote_files(s3, "exp/select/")
    assert sorted(k for k in partial if k and not k.endswith("/")) == ["manifest.json", "partitions/part-00000.parquet"]
    assert json.loads(partial["manifest.json"])["config_hash"] == stage_hashes(changed)["select"]
    assert [r["status"] for r in run_pipeline(cfg, "s3://runs/exp", only=["select"])] == ["ran"]
    final = remote_files(s3, "exp/select/")
    for name in ("_SUCCESS", "subset.parquet", "partitions/part-00000.parquet", "partitions/part-00001.parquet"):
        assert final[name] == first[f"select/{name}"]

    # A bad corpus pointed at this finished run: the error names the object and line (the task's own
    # message, not Ray's wrapper), and nothing is lost: every file, config.yaml included, is as it was.
    s3.put_object(Bucket="corpus", Key="bad.jsonl", Body=b'{"text": "fine"}\n{"text": broken\n')
    bad = _write(tmp_path, CONFIG.format(corpus="s3://corpus/bad.jsonl"))
    before = remote_files(s3, "exp/")
    with pytest.raises(SystemExit, match=r"^error: s3://corpus/bad.jsonl:2: invalid JSON"):
        main(["--config", str(bad), "--run-dir", "s3://runs/exp"], only=stages)
    assert remote_files(s3, "exp/") == before

    # The scheduled refresh, previous run and new snapshot both on S3: the previous tokenizer is read
    # from the bucket, only new sequences are embedded, and the diff lands beside the run.
    diff = refresh("s3://runs/exp", put_corpus(s3, 180, "wiki-next.jsonl"), out="s3://runs/exp-refresh")
    assert diff["pool"]["dropped"] == 0 and diff["pool"]["added"] > 0
    assert diff["embedding"]["embedded_now"] == diff["pool"]["added"]
    assert any(k.endswith("/diff.json") for k in remote_files(s3, "exp-refresh/"))


def test_one_run_per_uri(s3, tmp_path):
    """A second run on a URI in use stops at once, naming the holder, before it touches the shared
    cache; an expired lease (a holder that stopped renewing) is taken over."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "a", "text": "one document"}) + "\n")
    cfg = load_config(_write(tmp_path, CONFIG.format(corpus=corpus)))
    holder = Lease("s3://runs/held").acquire()
    try:
        with pytest.raises(
            ValueError, match=f"s3://runs/held is in use by another run: host {socket.gethostname()}, pid {os.getpid()}"
        ):
            run_pipeline(cfg, "s3://runs/held")
        assert [k for k in remote_files(s3, "held/") if k] == [
            "lease.json"
        ]  # nothing else (a folder placeholder aside)
    finally:
        holder.release()
    expired = {
        "host": "elsewhere",
        "pid": 1,
        "token": "x",
        "started": "2020-01-01T00:00:00",
        "expires": time.time() - 1,
    }
    s3.put_object(Bucket="runs", Key="held/lease.json", Body=json.dumps(expired).encode())
    lease = Lease("s3://runs/held").acquire()
    assert json.loads(remote_files(s3, "held/")["lease.json"])["pid"] == os.getpid()
    lease.release()
    assert [k for k in remote_files(s3, "held/") if k and not k.endswith("/")] == []  # (folder placeholders aside)


KEY, SECRET = "AKIAREDACTMEKEY", "wJalrXUtnREDACTME+bPxRfiCY"


def ray_log_files() -> list[Path]:
    """Every log file of the session's Ray cluster: each worker's output and Ray Train's own logs."""
    import ray

    return [p for p in Path(ray._private.worker._global_node.get_logs_dir_path()).rglob("*") if p.is_file()]


def test_credentials_in_uris_are_never_printed_or_stored(ray_cluster, s3, tmp_path, capsys):
    """A run directory URI with credentials through every stage from prepare to select (the warm
    start's Ray Train storage is inside it), then a training run that fails inside its Ray Train worker
    on a URI with credentials: none of it is printed, logged or stored with them."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": d.doc_id, "text": d.text}) + "\n" for d in islice(read_documents(BUILTIN_WIKI), 60))
    )
    text = CONFIG.format(corpus=corpus) + f"evaluate: {{external: ['https://reader:{SECRET}@example.org/wiki.txt']}}\n"
    uri = f"s3://{KEY}:{SECRET}@runs/secret?region=us-east-1"
    stages = ["prepare", "warmstart", "embed", "select"]
    main(["--config", str(_write(tmp_path, text)), "--run-dir", uri], only=stages)
    printed = capsys.readouterr()
    assert "run directory: s3://***@runs/secret?region=us-east-1" in printed.out  # the run summary
    assert "https://***@example.org/wiki.txt" in printed.out  # the config echoed at the start
    stored = remote_files(s3, "secret/")
    assert "config.yaml" in stored and all(f"{stage}/_SUCCESS" in stored for stage in stages)
    assert any(k.startswith("warmstart/ray/") for k in stored)  # Ray Train's checkpoints, under the URI given
    assert "warmstart/metrics.jsonl" in stored and any(k.startswith("embed/_logs/") for k in stored)

    # Training whose worker cannot find the subset file the config names by a URI with credentials:
    # Ray Train logs the worker's error itself, then raises a WorkerGroupError (no ValueError) in the
    # driver, which prints it, traceback and all, with the URI masked.
    missing = f"s3://{KEY}:{SECRET}@corpus/missing.parquet?region=us-east-1"
    text += f"train: {{steps: 2, global_batch_size: 8, subset: file, subset_file: '{missing}'}}\n"
    with pytest.raises(SystemExit) as failed:
        main(["--config", str(_write(tmp_path, text)), "--run-dir", uri], only=["train"])
    line = str(failed.value)
    assert line.startswith("error: WorkerGroupError: ")
    assert "train.subset_file 's3://***@corpus/missing.parquet?region=us-east-1' does not exist" in line
    failure = capsys.readouterr()
    assert "Traceback" in failure.err and "train_worker" in failure.err  # the worker's own traceback
    assert any(k.startswith("train/ray/") for k in remote_files(s3, "secret/"))  # train's Ray Train storage

    # An error that names the run directory's URI names it without its credentials.
    with pytest.raises(SystemExit) as refused:
        main(["--config", str(_write(tmp_path, text)), "--run-dir", f"nope://{KEY}:{SECRET}@x/run"])
    assert "'nope://***@x/run'" in str(refused.value)

    places = {f"the run directory's {k}": v for k, v in remote_files(s3, "secret/").items()}
    places |= {f"Ray's log {p}": p.read_bytes() for p in ray_log_files()}
    shown = {
        "stdout": printed.out + failure.out,
        "stderr": printed.err + failure.err,
        "errors": line + str(refused.value),
    }
    places |= {k: v.encode() for k, v in shown.items()}
    leaks = [where for where, content in places.items() if KEY.encode() in content or SECRET.encode() in content]
    assert not leaks


def test_a_run_directory_without_a_bucket_or_in_a_missing_one_is_an_error(s3, tmp_path):
    cfg = load_config(_write(tmp_path, CONFIG.format(corpus=put_corpus(s3, 20))))
    with pytest.raises(ValueError, match="'s3://' names no bucket"):
        run_pipeline(cfg, "s3://")
    with pytest.raises(ValueError, match="cannot write the lease s3://no-such-bucket/run/lease.json"):
        run_pipeline(cfg, "s3://no-such-bucket/run")
    assert not any(tmp_path.rglob("s3:*"))  # never a local folder named after the URI


def test_bad_uri_is_named(tmp_path):
    with pytest.raises(ValueError, match="'nope://x/run/prepare/manifest.json': cannot open its filesystem"):
        RunDir("nope://x/run").read_manifest("prepare")


def _write(tmp_path, text):
    path = tmp_path / "s3.yaml"
    path.write_text(text)
    return path
