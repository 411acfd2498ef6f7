"""The run-directory lease: one writer per run directory, on local disks, S3 (moto) and GCS (a fake).

The races start two runs at a barrier and hold one of them back for a moment between looking at the
lease and writing it: the widest window a check-then-write lease has. With conditional writes the
outcome does not depend on the timing: exactly one run proceeds, every time.
"""

import json
import re
import socket
import subprocess
import threading
import time
import types
from pathlib import Path

import pytest

from dataio import uri as U
from dataio.contracts import MANIFEST, MARKER
from dataio.lease import Lease
from dataio.leasestore import GcsStore, LocalStore
from dataio.rundir import RunDir

ROUNDS = 10
IN_USE = "is in use by another run"


@pytest.fixture
def atomic_moto(s3, monkeypatch):
    """The in-process moto server answers requests on threads and checks a write's condition before
    it stores the object, not atomically as S3 does: one lock around its conditional writes."""
    from moto.s3.responses import S3Response

    lock = threading.Lock()
    for name in ("put_object", "delete_object"):
        original = getattr(S3Response, name)

        def serial(self, *a, _original=original, **kw):
            with lock:
                return _original(self, *a, **kw)

        monkeypatch.setattr(S3Response, name, serial)
    return s3


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path) -> str:
    """A run directory's root: a local folder or an s3:// prefix on moto (fresh per test)."""
    if request.param == "local":
        return str(tmp_path / "run")
    request.getfixturevalue("atomic_moto")
    return "s3://runs/race"


def write_raw(root: str, record: dict) -> None:
    """A lease written behind the lease's back (another run's, or a stale one)."""
    U.write_bytes(U.join(root, "lease.json"), json.dumps(record).encode())


def stale(token: str = "dead") -> dict:
    return {"host": "elsewhere", "pid": 1, "token": token, "started": "2020-01-01T00:00:00", "expires": time.time() - 1}


def race(leases: list[Lease], monkeypatch, slow: int) -> list[Lease | Exception]:
    """Acquire every lease at once, lease `slow` waiting 0.1 s after each look at the lease."""
    holder = Lease.holder

    def looked(self):
        found = holder(self)
        if self is leases[slow]:
            time.sleep(0.1)
        return found

    monkeypatch.setattr(Lease, "holder", looked)
    barrier, results = threading.Barrier(len(leases)), [None] * len(leases)

    def go(i: int) -> None:
        barrier.wait()
        try:
            results[i] = leases[i].acquire()
        except Exception as e:
            results[i] = e

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(leases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.setattr(Lease, "holder", holder)
    return results


def one_proceeds(results: list, root: str) -> Lease:
    """Exactly one acquired; the others stopped with the lease message; the winner's lease is intact."""
    winners = [r for r in results if isinstance(r, Lease)]
    losers = [r for r in results if not isinstance(r, Lease)]
    assert len(winners) == 1, f"{len(winners)} runs hold {root}: {results}"
    assert all(isinstance(e, ValueError) and IN_USE in str(e) for e in losers), losers
    winner = winners[0]
    assert json.loads(U.read_bytes(U.join(root, "lease.json")))["token"] == winner.token
    winner.check()  # it still holds the lease: nothing of the winner's was lost
    return winner


def test_two_runs_started_at_once_exactly_one_proceeds(where, monkeypatch):
    for round_ in range(ROUNDS):
        results = race([Lease(where), Lease(where)], monkeypatch, slow=round_ % 2)
        one_proceeds(results, where).release()
        assert not U.exists(U.join(where, "lease.json"))


def test_two_takeovers_of_a_stale_lease_at_once_exactly_one_wins(where, monkeypatch):
    for round_ in range(ROUNDS):
        write_raw(where, stale(f"dead{round_}"))
        results = race([Lease(where), Lease(where)], monkeypatch, slow=round_ % 2)
        one_proceeds(results, where).release()


def test_a_held_lease_is_refused_and_an_expired_one_taken_over(where):
    held = Lease(where).acquire()
    with pytest.raises(ValueError, match=f"run directory {re.escape(where)} {IN_USE}: host .*, pid \\d+"):
        Lease(where).acquire()
    held.release()
    dead = subprocess.Popen(["true"])
    dead.wait()
    crashed = {"host": socket.gethostname(), "pid": dead.pid, "token": "crashed", "expires": time.time() + 60}
    write_raw(where, crashed)  # a holder whose process is gone: its lease holds until it expires
    with pytest.raises(ValueError, match=f"{IN_USE}: host {socket.gethostname()}, pid {dead.pid}"):
        Lease(where).acquire()
    write_raw(where, stale())
    Lease(where).acquire().release()


def test_a_run_that_lost_its_lease_stops_at_its_next_manifest_write(where):
    lease = Lease(where).acquire()
    run = RunDir(where, lease)
    run.begin("prepare", "h1", {})
    write_raw(where, {**stale(), "token": "another run", "host": "other-host", "expires": time.time() + 60})
    with pytest.raises(ValueError, match=f"run directory {re.escape(where)}: this run lost its lease .*other-host"):
        run.finish("prepare", {})
    assert not U.exists(run.path("prepare", MARKER))
    with pytest.raises(ValueError, match="lost its lease"):
        run.begin("embed", "h2", {})
    assert not U.exists(run.path("embed", MANIFEST))
    lease.release()
    assert json.loads(U.read_bytes(U.join(where, "lease.json")))["token"] == "another run"  # not ours to remove


class Flaky:
    """A lease store whose replace fails `failures` times (a storage outage) before it works again."""

    def __init__(self, store, failures: int):
        self.store, self.failures, self.replaces = store, failures, 0

    def __getattr__(self, name):
        return getattr(self.store, name)

    def replace(self, blob: bytes, version: str):
        self.replaces += 1
        if self.failures:
            self.failures -= 1
            raise OSError("503 Slow Down")
        return self.store.replace(blob, version)


def test_renewal_retries_and_a_lease_it_cannot_keep_stops_the_run(tmp_path):
    root = tmp_path / "run"
    flaky = Flaky(LocalStore(str(root)), failures=2)
    lease = Lease(root, ttl_s=5, renew_s=0.2, store=flaky).acquire()
    first = lease.expires
    deadline = time.time() + 4
    while lease.expires == first and time.time() < deadline:
        time.sleep(0.05)
    assert lease.expires > first and flaky.replaces >= 3 and lease.lost is None  # two failures, then renewed
    lease.check()
    lease.release()

    down = Flaky(LocalStore(str(tmp_path / "down")), failures=10**6)
    lease = Lease(tmp_path / "down", ttl_s=0.6, renew_s=0.2, store=down).acquire()
    run = RunDir(tmp_path / "down", lease)
    time.sleep(1.2)
    assert down.replaces > 1  # it kept trying
    with pytest.raises(
        ValueError, match=f"run directory {re.escape(str(tmp_path / 'down'))}: this run lost its lease: it expired"
    ):
        run.begin("prepare", "h", {})
    lease.release()


class Interrupting:
    """A filesystem that deletes `deletes` files and then fails: a run killed in the middle of begin()."""

    def __init__(self, fs, deletes: int):
        self.fs, self.left = fs, deletes

    def __getattr__(self, name):
        return getattr(self.fs, name)

    def delete_file(self, path: str) -> None:
        if self.left == 0:
            raise OSError("interrupted")
        self.left -= 1
        self.fs.delete_file(path)


def finished_stage(root: str) -> RunDir:
    run = RunDir(root)
    out = run.begin("embed", "old", {})
    for name in ("part-00000.parquet", "part-00001.parquet", "_logs/part-00000.json", "_logs/part-00001.json"):
        U.write_bytes(U.join(out, name), b"old config's data")
    run.finish("embed", {})
    return run


def test_an_interrupted_begin_leaves_a_folder_a_later_run_reclaims(where, monkeypatch):
    """begin() of a new config over a finished stage, interrupted after each of its deletions in turn:
    the stage is never taken for finished, and the next run's begin() always reclaims the folder."""
    resolve = U.resolve
    for deletes in range(7):  # the marker, four data files, then nothing left to interrupt
        run = finished_stage(where)
        monkeypatch.setattr(U, "resolve", lambda uri, n=deletes: (Interrupting(resolve(uri)[0], n), resolve(uri)[1]))
        try:
            run.begin("embed", "new", {})
        except OSError:
            pass
        monkeypatch.setattr(U, "resolve", resolve)
        if deletes:
            assert RunDir(where).why_not_done("embed", "old") is not None, f"seen finished after {deletes} deletions"
        folder = RunDir(where).begin("embed", "new", {})  # the next run
        assert U.list_files(folder, recursive=True) == [U.join(folder, MANIFEST)]
        assert RunDir(where).read_manifest("embed")["config_hash"] == "new"
        U.delete_tree(folder)


def test_refresh_refuses_a_second_run_on_its_version_folder(tmp_path, monkeypatch):
    import jobs.refresh as refresh

    previous = tmp_path / "previous"
    for stage in ("prepare", "warmstart", "embed", "select"):
        (previous / stage).mkdir(parents=True)
        (previous / stage / MARKER).write_bytes(b"")
    config = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    (previous / "config.yaml").write_text(config.read_text())
    corpus = tmp_path / "snapshot.jsonl"
    corpus.write_text(json.dumps({"id": "a", "text": "one document"}) + "\n")
    looked, read_json = [], U.read_json

    def started(cfg):  # the refresh's work begins: it connects to Ray
        raise Started

    monkeypatch.setattr(U, "read_json", lambda path: looked.append(path) or read_json(path))
    monkeypatch.setattr(refresh, "connect_ray", started)
    with pytest.raises(Started):
        refresh.refresh(str(previous), str(corpus))
    version = U.parent(
        next(p for p in looked if p.endswith("diff.json"))
    )  # <previous>/refresh/<snapshot>-<config>: it looked for its diff.json there
    assert not U.exists(U.join(version, "lease.json"))  # held while it ran, then dropped
    with Lease(version) as first:
        with pytest.raises(
            ValueError, match=f"run directory {re.escape(version)} {IN_USE}: host .*, pid {first.record['pid']}"
        ):
            refresh.refresh(str(previous), str(corpus))
    # A pipeline run writing the previous run directory: the refresh does not read it meanwhile.
    with Lease(str(previous)) as writer:
        with pytest.raises(
            ValueError, match=f"run directory {re.escape(str(previous))} {IN_USE}: host .*, pid {writer.record['pid']}"
        ):
            refresh.refresh(str(previous), str(corpus))
    assert not U.exists(U.join(str(previous), "lease.json"))  # the refresh took none it left behind


class Started(Exception):
    pass


def test_an_experiment_refuses_a_second_run_on_its_folder(tmp_path, monkeypatch):
    import jobs.experiment as command

    ran = []
    monkeypatch.setattr(command, "run_experiment", lambda exp, out: ran.append(exp) or 1 / 0)
    exp = types.SimpleNamespace(name="exp")
    with Lease(tmp_path / "runs" / "exp"):
        with pytest.raises(ValueError, match=f"run directory {re.escape(str(tmp_path / 'runs' / 'exp'))} {IN_USE}"):
            command.run_and_report(exp, tmp_path / "runs")
    assert ran == []
    with pytest.raises(ZeroDivisionError):  # free again: the run starts (and the lease is dropped after it)
        command.run_and_report(exp, tmp_path / "runs")
    assert ran == [exp] and not (tmp_path / "runs" / "exp" / "lease.json").exists()


class FakeGcs:
    """The three JSON-API calls a GCS lease makes, with generation preconditions, in memory."""

    def __init__(self):
        self.blob, self.generation, self.lock = None, 0, threading.Lock()

    def request(self, method: str, url: str, *, params: dict, data: bytes = b"", **_):
        with self.lock:
            match = params.get("ifGenerationMatch")
            if match is not None and int(match) != (self.generation if self.blob is not None else 0):
                return types.SimpleNamespace(status_code=412, text="conditionNotMet")
            if method == "GET":
                if self.blob is None:
                    return types.SimpleNamespace(status_code=404, text="")
                headers = {"x-goog-generation": str(self.generation)}
                return types.SimpleNamespace(status_code=200, content=self.blob, headers=headers)
            if method == "DELETE":
                self.blob = None
                return types.SimpleNamespace(status_code=204 if match is not None else 404, text="")
            self.blob, self.generation = data, self.generation + 1
            generation = self.generation
            return types.SimpleNamespace(status_code=200, json=lambda: {"generation": str(generation)})


def test_a_gcs_lease_uses_generation_preconditions(monkeypatch):
    fake = FakeGcs()
    for round_ in range(ROUNDS):
        leases = [Lease("gs://runs/race", store=GcsStore("gs://runs/race", session=fake)) for _ in range(2)]
        one_proceeds_gcs(race(leases, monkeypatch, slow=round_ % 2), fake).release()
        assert fake.blob is None
    fake.blob, fake.generation = json.dumps(stale()).encode(), 7
    leases = [Lease("gs://runs/race", store=GcsStore("gs://runs/race", session=fake)) for _ in range(2)]
    one_proceeds_gcs(race(leases, monkeypatch, slow=0), fake).release()


def one_proceeds_gcs(results: list, fake: FakeGcs) -> Lease:
    winners = [r for r in results if isinstance(r, Lease)]
    assert len(winners) == 1 and all(IN_USE in str(e) for e in results if e not in winners), results
    assert json.loads(fake.blob)["token"] == winners[0].token
    return winners[0]
