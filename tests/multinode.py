"""A Ray cluster of several nodes on this one machine that share no disk, and an S3 server.

The head runs nothing (`--num-cpus=0`). Each worker node is started inside its own mount namespace
(`unshare --mount --propagation private`) with an empty tmpfs mounted over the folders the driver
writes (the test's temporary folders), so a stage that hands a worker a path on the driver's disk
fails there as it would on a real cluster. Corpus and run directory live on a moto S3 server on
loopback, which every node reaches. Needs root (mount namespaces) and moto; the tests skip without.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen, *, kill: bool = False) -> None:
    """Stop a process group we started (a node: its raylet and every worker under it)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)
    except ProcessLookupError:
        pass


@dataclass
class Cluster:
    env: dict[str, str]  # for drivers: RAY_ADDRESS, token, S3 endpoint and keys
    hidden: list[str]  # folders the worker nodes cannot see
    head: subprocess.Popen | None = None
    nodes: list[subprocess.Popen] = field(default_factory=list)

    def start_head(self, temp: Path) -> None:
        gcs = free_port()
        ports = {
            f"--{name}": free_port()
            for name in (
                "dashboard-port",
                "dashboard-agent-listen-port",
                "ray-client-server-port",
                "node-manager-port",
                "object-manager-port",
                "metrics-export-port",
                "runtime-env-agent-port",
                "dashboard-agent-grpc-port",
            )
        }
        self.head = subprocess.Popen(
            [
                RAY,
                "start",
                "--head",
                "--block",
                "--num-cpus=0",
                f"--port={gcs}",
                "--dashboard-host=127.0.0.1",
                f"--temp-dir={temp}",
                "--disable-usage-stats",
                *(f"{k}={v}" for k, v in ports.items()),
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.env["RAY_ADDRESS"] = f"127.0.0.1:{gcs}"

    def add_node(self, num_cpus: int = 1) -> subprocess.Popen:
        """A worker node that cannot see `hidden`: a private tmpfs over each, then `ray start`."""
        ports = " ".join(
            f"--{name}={free_port()}"
            for name in (
                "dashboard-agent-listen-port",
                "node-manager-port",
                "object-manager-port",
                "metrics-export-port",
                "runtime-env-agent-port",
                "dashboard-agent-grpc-port",
            )
        )
        mounts = " && ".join(f"mount -t tmpfs tmpfs {h}" for h in self.hidden)
        script = (
            f"{mounts} && exec {RAY} start --block --address={self.env['RAY_ADDRESS']} --num-cpus={num_cpus} "
            f"--disable-usage-stats {ports}"
        )
        node = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.nodes.append(node)
        return node

    def node_id(self, node: subprocess.Popen, timeout: float = 60) -> str:
        """The Ray node id of a worker node we started (the id Ray and the shard logs name it by), from its
        raylet's command line, so a test can stop the very node that ran some piece of work."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child in psutil.Process(node.pid).children(recursive=True):
                try:
                    args = child.cmdline()
                except psutil.Error:  # a process that ended while we looked
                    continue
                if args and Path(args[0]).name == "raylet":
                    return next(a.split("=", 1)[1] for a in args if a.startswith("--node_id="))
            time.sleep(0.5)  # `ray start` has not started its raylet yet
        raise RuntimeError(f"node {node.pid} started no raylet within {timeout} s")

    def kill(self, node: subprocess.Popen) -> None:
        """Lose a worker node at once: SIGKILL to its raylet and every worker process under it. Ray's
        workers are not in the node's process group: killed with the group alone, they went on working
        (and writing shards) until they noticed their raylet gone."""
        self.nodes.remove(node)
        for process in psutil.Process(node.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):  # one that ended meanwhile
                process.kill()
        stop_group(node, kill=True)

    def wait_for_cpus(self, cpus: int, timeout: float = 120) -> None:
        probe = (
            "import ray; ray.init(log_to_driver=False); "
            "print(sum(n['Resources'].get('CPU', 0) for n in ray.nodes() if n['Alive']))"
        )
        deadline = time.monotonic() + timeout
        while True:
            answer = subprocess.run(
                [sys.executable, "-c", probe], capture_output=True, text=True, env=self.env, timeout=120, cwd=ROOT
            )
            if answer.returncode == 0 and float((answer.stdout.strip().splitlines() or ["0"])[-1]) >= cpus:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the cluster did not reach {cpus} CPUs: {answer.stdout[-300:]} {answer.stderr[-500:]}"
                )
            time.sleep(2)

    def driver(self, *args: str, log: Path | None = None) -> subprocess.Popen:
        """A Python process on the cluster, its output (stdout and stderr) in a pipe, or in the file `log`
        for one the test leaves running while it does other things: a full pipe nobody reads stalls it."""
        with log.open("w") if log else contextlib.nullcontext(subprocess.PIPE) as out:
            return subprocess.Popen(
                [sys.executable, *args], env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True
            )

    def stop(self) -> None:
        for node in self.nodes:
            stop_group(node)
        if self.head:
            stop_group(self.head)


def can_unshare() -> bool:
    return (
        shutil.which("unshare") is not None
        and os.geteuid() == 0
        and subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True).returncode
        == 0
    )


def cluster_env(s3_endpoint: str) -> dict[str, str]:
    env = {
        **os.environ,
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
        "PYTHONPATH": str(ROOT),
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        # A lost node is declared dead within seconds, not the default half minute.
        "RAY_health_check_period_ms": "1000",
        "RAY_health_check_failure_threshold": "3",
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    }
    env["RAY_AUTH_MODE"] = "token"  # Ray 2.60: every process of a token cluster
    env.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
    env.pop("RAY_ADDRESS", None)
    return env
