"""The executor (jobs/executor.py): the one door to Ray. Real Ray tasks and actors of the package."""

from __future__ import annotations

import pytest

from actors.embedder import Embedder
from actors.prepare import count_file_documents
from jobs.executor import Executor, Task
from jobs.resources import Resources

FIELDS = {"text_field": "text", "id_field": "id", "line_documents": False}


def corpus(folder, sizes):
    files = []
    for i, n in enumerate(sizes):
        f = folder / f"c{i}.jsonl"
        f.write_text("".join(f'{{"id": "{i}-{d}", "text": "document {d}"}}\n' for d in range(n)))
        files.append(str(f))
    return files


class NoGpu(Executor):
    def has_gpu(self) -> bool:
        return False


class OneGpu(Executor):
    def has_gpu(self) -> bool:
        return True


def test_resources_become_ray_options():
    ex = NoGpu()
    assert ex.options(Resources(cpus=0.5, gpus=2.0, memory_gb=1.5)) == {
        "num_cpus": 0.5,
        "num_gpus": 2.0,
        "memory": int(1.5 * 2**30),
    }
    assert ex.options(Resources(gpus="auto")) == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert OneGpu().options(Resources(gpus="auto"))["num_gpus"] == 1.0
    assert [ex.gpus(True), ex.gpus(False), OneGpu().gpus(False)] == [1.0, 0.0, 0.0]
    assert OneGpu().use_gpu("auto") and not ex.use_gpu("auto")


@pytest.mark.parametrize("bad", [{"cpus": 0}, {"gpus": -1.0}, {"actors": 0}])
def test_bad_resources_are_refused(bad):
    with pytest.raises(ValueError, match="resources"):
        Resources(**bad)


@pytest.mark.integration
def test_run_keeps_order_and_skips_tasks_whose_outputs_exist(ray_cluster, tmp_path):
    files = corpus(tmp_path, [3, 1, 4, 1, 5])
    done = tmp_path / "done-2"
    done.write_text("")
    tasks = [
        Task(count_file_documents, (f, FIELDS), outputs=(str(tmp_path / f"done-{i}"),)) for i, f in enumerate(files)
    ]
    assert tasks[2].done() and not tasks[0].done()
    assert Executor().run(tasks, "counting", "files") == [3, 1, None, 1, 5]  # task 2 finished before: not rerun
    assert Executor().run([Task(count_file_documents, (files[2], FIELDS))]) == [4]  # no outputs: always runs


@pytest.mark.integration
def test_a_run_that_lost_its_lease_stops_at_its_next_finished_shard(ray_cluster, tmp_path):
    """The executor checks the stage's lease as each task finishes (the fence a stage's run directory
    hands it), so a run whose lease another run took stops within one shard, not at the stage's end."""
    import json
    import time

    from dataio.lease import Lease
    from dataio.rundir import RunDir

    lease = Lease(str(tmp_path / "run")).acquire()
    run = RunDir(str(tmp_path / "run"), lease)
    files = corpus(tmp_path, [3, 1])
    assert Executor(fence=run.fence).run([Task(count_file_documents, (f, FIELDS)) for f in files]) == [3, 1]
    taken = {"host": "other-host", "pid": 1, "token": "another run", "started": "now", "expires": time.time() + 60}
    (tmp_path / "run" / "lease.json").write_text(json.dumps(taken))
    checks = []

    def fence() -> None:
        checks.append(1)
        run.fence()

    with pytest.raises(ValueError, match="this run lost its lease"):
        Executor(fence=fence).run([Task(count_file_documents, (f, FIELDS)) for f in files], "counting", "files")
    assert len(checks) == 1  # stopped at the first finished task
    lease.release()


@pytest.mark.integration
def test_a_task_error_reaches_the_caller_with_its_message(ray_cluster, tmp_path):
    with pytest.raises(Exception, match="missing.jsonl"):
        Executor().run([Task(count_file_documents, (str(tmp_path / "missing.jsonl"), FIELDS))], "counting", "files")


@pytest.mark.integration
def test_submit_chains_results_and_all_done(ray_cluster, tmp_path):
    ex = Executor()
    files = corpus(tmp_path, [2, 7])
    pending = [ex.submit(Task(count_file_documents, (f, FIELDS))) for f in files]
    first = ex.first_done(pending)
    assert first in pending
    assert ex.get(pending) == [2, 7] and ex.all_done(pending)
    stored = ex.put([1, 2, 3])
    assert ex.get(stored) == [1, 2, 3]


@pytest.mark.integration
def test_map_actors_runs_only_the_undone_calls(ray_cluster, tmp_path):
    """An actor pool call per task; tasks whose output exists are not sent (and no actor starts for none)."""
    done = tmp_path / "out.parquet"
    done.write_text("")
    task = Task(Embedder, ("never-read.parquet", str(done)), outputs=(str(done),))
    assert Executor().map_actors(Embedder, {}, Resources(), "embed_shard", [task], "embed", "shards") == []
