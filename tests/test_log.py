"""dataio/log.py: `[ingenious]` lines on stdout, one handler per process, from the driver and from Ray workers."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from dataio.log import ROOT, configure, get_logger

REPO = Path(__file__).resolve().parents[1]


def test_lines_carry_the_prefix_go_to_the_current_stdout_and_hide_credentials(capsys):
    log = get_logger("tests.log")
    log.info("stage: running")
    log.warning("the lease was taken over")
    log.info("reading s3://KEY:SECRET@bucket/run")
    log.debug("not shown at INFO")
    assert capsys.readouterr().out.splitlines() == [
        "[ingenious] stage: running",
        "[ingenious] warning: the lease was taken over",
        "[ingenious] reading s3://***@bucket/run",
    ]


def test_configuring_again_adds_no_second_handler(capsys):
    get_logger("a"), configure(), configure("INFO"), get_logger("b")
    ours = [h for h in logging.getLogger(ROOT).handlers if type(h).__module__ == "dataio.log"]  # pytest adds its own
    assert len(ours) == 1
    get_logger("b").info("once")
    assert capsys.readouterr().out == "[ingenious] once\n"


def test_debug_level_shows_the_original_exception(capsys):
    try:
        configure("DEBUG")
        try:
            raise FileNotFoundError("s3://KEY:SECRET@bucket/x.jsonl")
        except FileNotFoundError:
            get_logger("tests.log").debug("reading failed", exc_info=True)
    finally:
        configure("INFO")
    out = capsys.readouterr().out
    assert out.startswith("[ingenious] reading failed\nTraceback")
    assert "FileNotFoundError: s3://***@bucket/x.jsonl" in out and "SECRET" not in out


def test_a_ray_worker_line_reaches_the_driver_once():
    """Ray forwards a worker's stdout to the driver; the worker sets its handler up on its own, once."""
    script = """
import time

import ray
from dataio.log import get_logger

@ray.remote
def work():
    get_logger("w1").info("from the worker")
    get_logger("w2").info("from the worker again")

ray.init(num_cpus=1, include_dashboard=False)
ray.get([work.remote(), work.remote()])
time.sleep(3)  # the driver collects worker output asynchronously
ray.shutdown()
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_DEDUP_LOGS": "0"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (done.stdout + done.stderr).splitlines()
    assert sum(line.endswith("[ingenious] from the worker") for line in lines) == 2, lines[-20:]
    assert sum(line.endswith("[ingenious] from the worker again") for line in lines) == 2, lines[-20:]
