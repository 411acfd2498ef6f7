import os
from pathlib import Path

import pytest

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
