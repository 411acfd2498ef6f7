"""Run the INGENIOUS loop: prepare -> warmstart -> embed -> select -> train -> evaluate.

    python -m jobs.pipeline [--config PATH] [--run-dir DIR] [--force STAGE]

Each stage is skipped when its folder holds a completion marker written under the same config
hash (its own settings plus its inputs' hashes); a stage that runs makes every later stage run.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import ray
import yaml

from dataio.rundir import RunDir, config_hash
from jobs.config import PipelineConfig, load_config
from jobs.stages import STAGE_NAMES, STAGES, Context

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


def stage_hashes(cfg: PipelineConfig) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for stage in STAGES:
        hashes[stage.name] = config_hash({"settings": stage.settings(cfg), "upstream": [hashes[n] for n in stage.needs]})
    return hashes


def connect_ray(cfg: PipelineConfig) -> None:
    if ray.is_initialized():
        return
    if cfg.ray.address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=cfg.ray.address, log_to_driver=True)
    else:
        # The dashboard also serves the state API that Ray Train's placement-group cleaner polls.
        ray.init(num_cpus=cfg.ray.num_cpus)


def run_pipeline(
    cfg: PipelineConfig, run_dir: str | Path, *, only: list[str] | None = None, force: list[str] = ()
) -> list[dict]:
    """Run (or skip) the stages; returns one row per stage: stage, status, seconds, written."""
    for name in list(force) + list(only or []):
        if name not in STAGE_NAMES:
            raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGE_NAMES)}")
    run = RunDir(run_dir)
    run.root.mkdir(parents=True, exist_ok=True)
    (run.root / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    connect_ray(cfg)
    ctx, hashes, rows, dirty = Context(cfg, run), stage_hashes(cfg), [], False
    for stage in STAGES:
        digest = hashes[stage.name]
        if only is not None and stage.name not in only:
            continue
        for need in stage.needs:
            if not run.is_done(need, hashes[need]):
                raise ValueError(f"stage {stage.name!r} needs {need!r} finished with this config first "
                                 f"(run `ingenious {need}` or `ingenious run`)")
        if run.is_done(stage.name, digest) and not dirty and stage.name not in force:
            rows.append({"stage": stage.name, "status": "skipped", "seconds": 0.0, "written": "(already done)"})
            continue
        dirty = True
        print(f"[ingenious] {stage.name}: running (config hash {digest})", flush=True)
        out = run.begin(stage.name, digest, stage.settings(cfg))
        start = time.perf_counter()
        summary = stage.run(ctx, out)
        seconds = time.perf_counter() - start
        run.finish(stage.name, {"seconds": seconds, "summary": summary, "upstream": {n: hashes[n] for n in stage.needs}})
        rows.append({"stage": stage.name, "status": "ran", "seconds": seconds, "written": summary.get("written", "")})
    return rows


def print_table(rows: list[dict], run_dir: Path) -> None:
    print(f"\n{'stage':<10} {'status':<8} {'seconds':>8}  written")
    for r in rows:
        print(f"{r['stage']:<10} {r['status']:<8} {r['seconds']:>8.1f}  {r['written']}")
    print(f"\nrun directory: {Path(run_dir).resolve()}")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="pipeline YAML (default: configs/default.yaml)")
    parser.add_argument("--run-dir", default=None, help="run directory (default: ./runs/<name>)")
    parser.add_argument("--force", action="append", default=[], metavar="STAGE", help="redo this stage (repeatable)")


def main(argv: list[str] | None = None, only: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.pipeline", description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args(argv)
    execute(args, only)


def execute(args: argparse.Namespace, only: list[str] | None) -> None:
    try:
        cfg = load_config(args.config)
    except ValueError as e:
        raise SystemExit(f"config error: {e}") from None
    run_dir = Path(args.run_dir or Path("runs") / cfg.name)
    print(f"[ingenious] config {args.config}:\n{yaml.safe_dump(cfg.to_dict(), sort_keys=False)}", flush=True)
    try:
        rows = run_pipeline(cfg, run_dir, only=only, force=args.force)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print_table(rows, run_dir)


if __name__ == "__main__":
    main()
