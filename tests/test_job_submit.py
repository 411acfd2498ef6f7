"""`ray job submit` against a real local head with the job server: the pipeline runs as a job, and
its relative paths land in the user's folder, not in Ray's temporary copy of the code."""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from itertools import islice
from pathlib import Path

import pytest

from dataio.corpus import BUILTIN_WIKI, read_documents

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
JOB = """
name: job
model: {kind: bert, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, seq_len: 64}
corpus: {source: corpus.jsonl}
prepare: {vocab_size: 600, documents_per_shard: 60, heldout_fraction: 0.1}
warmstart: {steps: 3, global_batch_size: 8, warmup_steps: 1, checkpoint_every: 3}
embed: {layer: -1, batch_size: 32, num_actors: 1}
select: {fraction: 0.25, knn_k: 5}
train: {steps: 3, global_batch_size: 8, warmup_steps: 1, redraw_every: 2, checkpoint_every: 3}
evaluate: {max_sequences: 20}
"""
EXCLUDES = [".venv", ".git", "runs", "**/__pycache__", "*.egg-info", ".pytest_cache"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A second, separate Ray head with the dashboard's job server, stopped with its process group."""
    temp = Path("/tmp") / f"ray-jobs-{os.getpid()}"  # Ray's socket paths must stay short
    # Every listener gets its own free port: the session's Ray (conftest) already holds the fixed defaults,
    # the dashboard agent's 52365 and the client server's 10001 (the others are random unless set), and a head
    # whose agent cannot bind answers "No available agent to submit job" forever.
    gcs, dashboard, agent, ray_client = (free_port() for _ in range(4))
    # Ray 2.60 heads require a token: the head, the job CLI and the job all get this one.
    env = {
        **os.environ,
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
    }
    proc = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            f"--port={gcs}",
            f"--dashboard-port={dashboard}",
            f"--dashboard-agent-listen-port={agent}",
            f"--ray-client-server-port={ray_client}",
            "--dashboard-host=127.0.0.1",
            "--num-cpus=2",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    probe = [RAY, "job", "submit", "--address", address, "--", "python", "-c", "print('ready')"]
    deadline = time.monotonic() + 120
    while True:  # ready once the job server and the node's agent take a job
        answer = subprocess.run(probe, capture_output=True, text=True, env=env, timeout=60)
        if answer.returncode == 0:
            break
        if time.monotonic() > deadline:
            stop(proc)
            pytest.fail(
                f"the Ray head's job server did not take a job within 2 minutes; last answer: "
                f"{answer.stderr[-500:]} (logs in {temp}/session_latest/logs)"
            )
        time.sleep(2)
    yield address, env
    stop(proc)


def stop(head: subprocess.Popen) -> None:
    """Stops the head's whole process group; a clean stop of every Ray process can take half a minute,
    which a throwaway test head does not need."""
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=15)


def test_pipeline_as_a_submitted_job(head, tmp_path):
    address, env = head
    user = tmp_path / "user"  # the folder the user submits from; relative paths mean this folder
    user.mkdir()
    with (user / "corpus.jsonl").open("w") as f:
        for doc in islice(read_documents(BUILTIN_WIKI), 120):
            f.write(json.dumps({"id": doc.doc_id, "text": doc.text}) + "\n")
    config = user / "job.yaml"
    config.write_text(JOB)
    runtime_env = {"env_vars": {"INGENIOUS_BASE_DIR": str(user), "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}}
    command = [
        RAY,
        "job",
        "submit",
        "--address",
        address,
        "--working-dir",
        str(ROOT),
        "--runtime-env-json",
        json.dumps({**runtime_env, "excludes": EXCLUDES}),
        "--",
        "python",
        "-m",
        "jobs.pipeline",
        "--config",
        str(config),
        "--run-dir",
        "runs/job",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "evaluate   ran" in done.stdout
    run = user / "runs" / "job"  # in the user's folder, not in Ray's working copy
    for stage in ("prepare", "warmstart", "embed", "select", "train", "evaluate"):
        assert (run / stage / "_SUCCESS").exists()
    assert json.loads((run / "evaluate" / "metrics.json").read_text())["train/heldout"]["loss"] > 0


def test_relative_run_dir_without_a_base_is_refused(head):
    address, env = head
    command = [
        RAY,
        "job",
        "submit",
        "--address",
        address,
        "--working-dir",
        str(ROOT),
        "--runtime-env-json",
        json.dumps({"excludes": EXCLUDES}),
        "--",
        "python",
        "-m",
        "jobs.pipeline",
        "--run-dir",
        "runs/lost",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0
    assert "temporary copy of the code" in done.stdout + done.stderr


def test_the_job_api_refuses_a_request_without_the_token(head):
    """The head as cluster.yaml starts it (RAY_AUTH_MODE=token): a POST to /api/jobs/ from someone
    without the token runs nothing; with it, the API answers."""
    address, env = head
    body = json.dumps({"entrypoint": "touch /tmp/ingenious-unauthenticated-job"}).encode()
    for headers in ({}, {"Authorization": "Bearer wrong-token"}):
        request = urllib.request.Request(
            f"{address}/api/jobs/", data=body, method="POST", headers={"Content-Type": "application/json", **headers}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code in (401, 403)
    listing = urllib.request.Request(
        f"{address}/api/jobs/", headers={"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"}
    )
    with urllib.request.urlopen(listing, timeout=30) as answer:
        assert answer.status == 200
