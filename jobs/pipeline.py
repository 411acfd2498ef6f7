"""Run the INGENIOUS loop: prepare -> warmstart -> embed -> select -> train -> evaluate.

    python -m jobs.pipeline [--config PATH] [--run-dir DIR] [--force STAGE]

Each stage is skipped when its folder holds a completion marker written under the same config
hash (its own settings plus its inputs' hashes), its inputs' outputs are what they were when it ran,
and its own outputs are intact; a stage that runs makes every later stage run. A run holds a lease on
its run directory (dataio/lease.py): a second run on the same one stops at once, and a run that lost
its lease stops at its next manifest or marker.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import yaml

from actors.monitor import PeakRss
from actors.nodes import require_visible
from dataio import uri as U
from dataio.contracts import RUN_CONFIG, STAGE_NAMES
from dataio.lease import Lease
from dataio.log import configure, get_logger
from dataio.redact import redact, redact_tree, report_failure, user_message
from dataio.rundir import RunDir, config_hash
from dataio.uri import is_uri
from jobs.config import PipelineConfig, load_config
from jobs.executor import Executor, connect
from jobs.stages import STAGES, Context

log = get_logger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


def stage_hashes(cfg: PipelineConfig) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for stage in STAGES:
        hashes[stage.name] = config_hash(
            {"settings": stage.settings(cfg), "upstream": [hashes[n] for n in stage.needs]}
        )
    return hashes


def connect_ray(cfg: PipelineConfig) -> None:
    """Join the cluster the config's `ray` section names (jobs/executor.connect)."""
    connect(cfg.ray.address, cfg.ray.num_cpus)


def run_pipeline(
    cfg: PipelineConfig,
    run_dir: str | Path,
    *,
    only: list[str] | None = None,
    force: list[str] = (),
    lease: Lease | None = None,
) -> list[dict]:
    """Run (or skip) the stages; returns one row per stage: stage, status, seconds, written. `lease`:
    the run directory's lease, already held by the caller (jobs.refresh); else the run takes it."""
    for name in list(force) + list(only or []):
        if name not in STAGE_NAMES:
            raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGE_NAMES)}")
    run = RunDir(run_dir)
    hashes = stage_hashes(cfg)  # reads the corpus' fingerprint: a missing corpus stops here
    connect_ray(cfg)
    if U.is_local(run.root):
        require_visible(run.root)  # before anything is written there
    if lease is not None:
        if lease.root != run.root:
            raise ValueError(f"the lease given is on {lease.where}, not on the run directory {redact(run.root)}")
        run.lease = lease
        return _run_stages(cfg, run, hashes, only=only, force=force)
    with Lease(run.root, redact(run.root)) as held:  # before anything in the run directory is touched
        run.lease = held
        return _run_stages(cfg, run, hashes, only=only, force=force)


def _run_stages(
    cfg: PipelineConfig, run: RunDir, hashes: dict[str, str], *, only: list[str] | None, force: list[str]
) -> list[dict]:
    ctx, rows, dirty = Context(cfg, run, executor=Executor(fence=run.fence)), [], False

    def record_config() -> None:
        """config.yaml describes the run directory's stages: it changes only once a stage of this
        config is about to write (a bad config that fails its checks leaves the old one)."""
        run.fence()
        U.write_text(run.path(RUN_CONFIG), yaml.safe_dump(redact_tree(cfg.to_dict()), sort_keys=False))

    to_run = [s for s in STAGES if only is None or s.name in only]
    prechecked: set[str] = set()
    for stage in STAGES:
        digest = hashes[stage.name]
        for later in to_run[to_run.index(stage) + 1 :] if stage in to_run else []:
            after = later.checked_after
            if after and later.name not in prechecked and run.is_done(after, hashes[after]):
                later.precheck(ctx)  # before this stage is paid for
                prechecked.add(later.name)
        if only is not None and stage.name not in only:
            continue
        for need in stage.needs:
            if not run.is_done(need, hashes[need]):
                raise ValueError(
                    f"stage {stage.name!r} needs {need!r} finished with this config first "
                    f"(run `ingenious {need}` or `ingenious run`): {run.why_not_done(need, hashes[need])}"
                )
        why = run.why_not_done(stage.name, digest)
        if why is None and not dirty and stage.name not in force:
            rows.append(
                {"stage": stage.name, "status": "skipped", "seconds": 0.0, "peak_gb": None, "written": "(already done)"}
            )
            continue
        dirty = True
        reason = "forced" if stage.name in force else why or "an earlier stage ran"
        log.info(f"{stage.name}: running (config hash {digest}; {reason})")
        ctx.plan = stage.plan(ctx)  # bad input is found here, before begin() clears the stage's folder
        if not any(r["status"] == "ran" for r in rows):
            record_config()
        inputs = {n: run.output_digest(n) for n in stage.needs}
        resumed = run.resumable(stage.name, digest, inputs) and stage.name not in force
        out = run.begin(stage.name, digest, redact_tree(stage.settings(cfg)), inputs, keep=resumed)
        start = time.perf_counter()
        with PeakRss(interval=0.5, gpu=True) as memory:
            summary = stage.run(ctx, out)
            stage.verify(ctx, out, summary)
        seconds, peak_gb = time.perf_counter() - start, memory.peak_total / 2**30
        peak_gpu_gb = round(memory.peak_gpu / 2**30, 3) if memory.peak_gpu is not None else None
        run.finish(
            stage.name,
            {
                "seconds": seconds,
                "peak_rss_gb": round(peak_gb, 3),
                "peak_gpu_gb": peak_gpu_gb,
                "summary": redact_tree(summary),
                "upstream": {n: hashes[n] for n in stage.needs},
            },
        )
        rows.append(
            {
                "stage": stage.name,
                "status": "ran",
                "seconds": seconds,
                "peak_gb": peak_gb,
                "written": redact(str(summary.get("written", ""))),
            }
        )
    if not any(r["status"] == "ran" for r in rows):
        record_config()
    return rows


def print_table(rows: list[dict], run_dir: str | Path) -> None:
    print(f"\n{'stage':<10} {'status':<8} {'seconds':>8} {'peak GB':>8}  written")
    for r in rows:
        peak = f"{r['peak_gb']:.1f}" if r["peak_gb"] is not None else "-"
        print(f"{r['stage']:<10} {r['status']:<8} {r['seconds']:>8.1f} {peak:>8}  {r['written']}")
    print(f"\nrun directory: {redact(str(run_dir)) if is_uri(run_dir) else Path(run_dir).resolve()}")


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """--config and --run-dir: which run (every command on a run directory takes these two)."""
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="pipeline YAML (default: configs/default.yaml)")
    parser.add_argument(
        "--run-dir",
        default=None,
        help="run directory, a path or s3://, gs:// URI (default: $INGENIOUS_RUN_ROOT/<name>, else ./runs/<name>)",
    )


def add_common_args(parser: argparse.ArgumentParser) -> None:
    add_run_args(parser)
    parser.add_argument("--force", action="append", default=[], metavar="STAGE", help="redo this stage (repeatable)")


def main(argv: list[str] | None = None, only: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.pipeline", description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args(argv)
    execute(args, only)


def base_dir() -> Path:
    """The folder relative paths (in the config and --run-dir) are taken from: INGENIOUS_BASE_DIR if
    set, else the current folder. A job submitted with `ray job submit --working-dir` runs in Ray's
    temporary copy of the code, which is deleted with the job, so there a relative path is an error
    unless INGENIOUS_BASE_DIR says where the user meant."""
    if os.environ.get("INGENIOUS_BASE_DIR"):
        return Path(os.environ["INGENIOUS_BASE_DIR"]).expanduser().resolve()
    return Path.cwd()


def in_ray_working_copy(folder: Path) -> bool:
    return "runtime_resources" in folder.parts  # <session>/runtime_resources/working_dir_files/<pkg>


def execute(args: argparse.Namespace, only: list[str] | None) -> None:
    """Run the stages `args` ask for and print the table of what ran (the entry points' common body)."""
    cfg, run_dir = load_run(args)
    try:
        rows = run_pipeline(cfg, run_dir, only=only, force=args.force)
    except (ValueError, OSError) as e:  # OSError: storage the run cannot reach (a missing bucket, no network)
        log.debug("the pipeline failed", exc_info=True)
        raise SystemExit(f"error: {redact(user_message(e))}") from None
    except Exception as e:  # a failure inside Ray (a training worker, out of memory) or a bug
        raise SystemExit(report_failure(e)) from None
    print_table(rows, run_dir)


def load_run(args: argparse.Namespace) -> tuple[PipelineConfig, str | Path]:
    """The config and run directory `args` name (--config, --run-dir); a bad one exits with its error."""
    configure()
    base = base_dir()
    try:
        cfg = load_config(args.config, base=base)
        run_root = os.environ.get("INGENIOUS_RUN_ROOT")  # cluster.yaml sets it: s3://<bucket>/runs
        if args.run_dir is None and run_root:
            run_dir = U.join(run_root, cfg.name)
        else:
            run_dir = args.run_dir if is_uri(args.run_dir or "") else base / (args.run_dir or Path("runs") / cfg.name)
        if in_ray_working_copy(base) and not (is_uri(run_dir) or Path(args.run_dir or "runs").is_absolute()):
            raise ValueError(
                f"this job runs in Ray's temporary copy of the code ({base}), deleted with the job: "
                "give an absolute --run-dir on storage every node sees, or set INGENIOUS_BASE_DIR "
                "in the job's runtime env to the folder relative paths are meant from"
            )
    except ValueError as e:
        log.debug("the config was rejected", exc_info=True)
        raise SystemExit(f"config error: {redact(str(e))}") from None
    log.info(f"config {args.config}:\n{yaml.safe_dump(redact_tree(cfg.to_dict()), sort_keys=False)}")
    return cfg, run_dir


if __name__ == "__main__":
    main()
