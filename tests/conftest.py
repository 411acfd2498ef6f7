import json
import os
from itertools import islice
from pathlib import Path

import pytest

from dataio.corpus import BUILTIN_WIKI, read_documents

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_file(relative: str) -> Path:
    """A file from ../shared/data, read in place; the test skips where that folder is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is not here (../shared/data is only on the project's own machines)")
    return path


@pytest.fixture(scope="session")
def ray_cluster():
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
