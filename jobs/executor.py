"""The one place the stages and experiments talk to Ray (besides the remote functions in actors/).

A stage builds `Task`s (a remote function from actors/, its arguments, the `Resources` its section
declares and the files it writes) and hands them to the `Executor`, which owns the rest: Ray options,
submission, gathering in order with progress lines, retries, GPU detection and per-shard resume (a
task whose output files all exist finished before an interruption and is not submitted again). The
remote functions write their outputs atomically (dataio/uri.py), so an existing file is a whole one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util import ActorPool

from actors.monitor import Progress
from dataio import uri as U
from jobs.resources import Resources

# Ray reruns a task whose worker process or node died (not one whose code raised: it would raise again).
# A task is a pure function of its inputs that writes its output atomically, so a rerun is safe.
TASK_RETRIES = 3

Pending = ray.ObjectRef  # a submitted task's future result; stages only pass it back to the executor


@dataclass(frozen=True)
class Task:
    """One unit of work: `fn` (a remote function of actors/) called with `args` and `kwargs`."""

    fn: Any
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    resources: Resources = Resources()
    outputs: tuple[str, ...] = ()  # files (paths or URIs) it writes: all present means done before

    def done(self) -> bool:
        return bool(self.outputs) and all(U.exists(f) for f in self.outputs)


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start a local one with `num_cpus` CPUs."""
    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, log_to_driver=True)
    else:
        # The dashboard also serves the state API that Ray Train's placement-group cleaner polls.
        ray.init(num_cpus=num_cpus)


class Executor:
    """Runs tasks on the connected Ray cluster (connect() first). `fence`, when given, is called as each
    task or actor call finishes (a stage's run directory lease check, RunDir.fence): a run that lost its
    lease stops at its next finished shard instead of writing on beside the run that took it."""

    def __init__(self, fence: Callable[[], None] | None = None):
        self.fence = fence or (lambda: None)

    def cpus(self) -> float:
        """The connected cluster's CPUs (as its nodes report them now)."""
        return ray.cluster_resources().get("CPU", 0.0)

    def has_gpu(self) -> bool:
        return ray.cluster_resources().get("GPU", 0) > 0

    def use_gpu(self, setting: float | bool | str) -> bool:
        """A `use_gpu` setting (true, false or "auto": whether the cluster has a GPU) as a bool."""
        return self.gpus(setting) > 0

    def gpus(self, setting: float | bool | str) -> float:
        """GPUs one task reserves: a number as given; true 1, false 0; "auto" 1 when the cluster has any.
        A task runs on CUDA only when it reserved a GPU (training/device.task_device)."""
        if setting == "auto":
            return 1.0 if self.has_gpu() else 0.0
        return float(setting)

    def options(self, r: Resources) -> dict:
        opts: dict[str, Any] = {"num_cpus": r.cpus, "num_gpus": self.gpus(r.gpus)}
        if r.memory_gb:
            opts["memory"] = int(r.memory_gb * 2**30)
        return opts

    def submit(self, task: Task) -> Pending:
        """Start `task` and return its future result (which another task may take as an argument)."""
        return task.fn.options(**self.options(task.resources), max_retries=TASK_RETRIES).remote(
            *task.args, **task.kwargs
        )

    def put(self, value: Any) -> Pending:
        """Store `value` once in the cluster, for many tasks to take as an argument without a copy each."""
        return ray.put(value)

    def get(self, pending: Pending | list[Pending]) -> Any:
        return ray.get(pending)

    def run(self, tasks: list[Task], what: str | None = None, unit: str = "tasks") -> list[Any]:
        """Run the tasks not done before (Task.done) and return one result per task, in order: None for a
        task done before. Progress lines as they finish when `what` names them."""
        todo = [i for i, t in enumerate(tasks) if not t.done()]
        results: list[Any] = [None] * len(tasks)
        for i, result in zip(todo, self.gather([self.submit(tasks[i]) for i in todo], what, unit)):
            results[i] = result
        return results

    def gather(self, pending: list[Pending], what: str | None = None, unit: str = "tasks") -> list[Any]:
        """The results of `pending`, in order. With `what`, a progress line as they finish, and the first
        task error raised as soon as it happens (without, in the order of `pending`)."""
        progress, left = Progress(what, len(pending), unit) if what else None, list(pending)
        while left:
            finished, left = ray.wait(left, num_returns=1)
            if what is not None:
                ray.get(finished)  # raise a task's error as soon as it happens
                progress.advance(len(finished))
            self.fence()
        return ray.get(pending)

    def first_done(self, pending: list[Pending]) -> Pending:
        """Wait for one of `pending` to finish and return it."""
        [done], _ = ray.wait(pending, num_returns=1)
        return done

    def all_done(self, pending: list[Pending]) -> bool:
        """Whether every one of `pending` has finished (without waiting)."""
        return len(ray.wait(pending, num_returns=len(pending), timeout=0)[0]) == len(pending)

    def map_actors(
        self,
        actor: Any,
        init: dict,
        resources: Resources,
        method: str,
        tasks: list[Task],
        what: str,
        unit: str,
        *,
        calls_per_actor: int = 1,
    ) -> list[Any]:
        """Run the tasks not done before as calls of `method` on a pool of at most `resources.actors` actors
        of the remote class `actor` (each built once with `init`: a model loaded once serves many shards).
        `calls_per_actor` calls are in flight on each (a threaded actor's max_concurrency), so one call's
        reading and writing overlap another's compute. Results come back as the calls finish, not in task order."""
        todo = [t for t in tasks if not t.done()]
        if not todo:
            return []
        actors = [
            actor.options(**self.options(resources)).remote(**init) for _ in range(min(resources.actors, len(todo)))
        ]
        slots = [a for a in actors for _ in range(calls_per_actor)]
        calls = ActorPool(slots).map_unordered(lambda a, t: getattr(a, method).remote(*t.args, **t.kwargs), todo)
        return list(track(calls, len(todo), what, unit, self.fence))


def track(
    items: Iterator[Any], total: int, what: str, unit: str, fence: Callable[[], None] | None = None
) -> Iterator[Any]:
    """Yield `items` unchanged, with a progress line (and `fence` called) as they come."""
    progress = Progress(what, total, unit)
    for item in items:
        if fence is not None:
            fence()
        yield item
        progress.advance()
