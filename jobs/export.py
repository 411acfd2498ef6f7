"""`ingenious export`: a run's selected data, as Parquet or JSON lines, for another trainer.

    ingenious export [--config PATH] [--run-dir DIR] [--format parquet|jsonl] [--out URI] [--force]

Reads the finished prepare (and, for the subsets it writes, select) stage of the run directory and
writes jobs/stages/export.py's folders. Like a stage: skipped when finished with the same settings
and inputs, resumed file by file when interrupted, redone with --force. The run directory's lease is
held throughout, so no pipeline run changes the selection while it is read.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dataio import uri as U
from dataio.contracts import ExportOutputs
from dataio.lease import Lease
from dataio.log import get_logger
from dataio.redact import redact, redact_tree, report_failure, user_message
from dataio.rundir import RunDir, config_hash
from jobs.config import PipelineConfig
from jobs.pipeline import add_run_args, base_dir, connect_ray, load_run, stage_hashes
from jobs.stages.base import Context
from jobs.stages.export import Export, ExportConfig

log = get_logger(__name__)


def export_folder(run_root: str, ecfg: ExportConfig) -> str:
    """Where the export goes: --out, else <run directory>/export/<format>."""
    return U.normalize(ecfg.out) if ecfg.out else U.join(run_root, ExportOutputs.FOLDER, ecfg.format)


def run_export(cfg: PipelineConfig, run_dir: str | Path, ecfg: ExportConfig, *, force: bool = False) -> dict:
    """Export (or skip) and return what happened: status, seconds, the folder and its summary."""
    run, stage = RunDir(run_dir), Export(ecfg, cfg)
    hashes = stage_hashes(cfg)
    connect_ray(cfg)
    with Lease(run.root, redact(run.root)) as held:
        run.lease = held
        for need in stage.needs:
            if not run.is_done(need, hashes[need]):
                raise ValueError(
                    f"export needs {need!r} finished with this config first (run `ingenious run`): "
                    f"{run.why_not_done(need, hashes[need])}"
                )
        folder = export_folder(run.root, ecfg)
        # The export may live outside the run directory, so its inputs' digests go into its hash
        # (a RunDir checks recorded inputs only against stages of its own root).
        inputs = {n: run.output_digest(n) for n in stage.needs}
        digest = config_hash(
            {"settings": stage.settings(cfg), "upstream": [hashes[n] for n in stage.needs], "inputs": inputs}
        )
        target, name = RunDir(U.parent(folder), lease=held), U.name(folder)
        if target.why_not_done(name, digest) is None and not force:
            return {
                "status": "skipped",
                "seconds": 0.0,
                "folder": folder,
                "summary": target.read_manifest(name)["summary"],
            }
        ctx = Context(cfg, run)
        ctx.plan = stage.plan(ctx)
        out = target.begin(
            name, digest, redact_tree(stage.settings(cfg)), keep=target.resumable(name, digest, {}) and not force
        )
        start = time.perf_counter()
        summary = stage.run(ctx, out)
        stage.verify(ctx, out, summary)
        seconds = time.perf_counter() - start
        target.finish(name, {"seconds": seconds, "summary": redact_tree(summary), "upstream": inputs})
        return {"status": "ran", "seconds": seconds, "folder": folder, "summary": summary}


def add_export_args(parser: argparse.ArgumentParser) -> None:
    add_run_args(parser)
    parser.add_argument(
        "--format", default="parquet", choices=ExportOutputs.FORMATS, help="file format (default: parquet)"
    )
    parser.add_argument(
        "--out", default=None, help="folder, a path or s3://, gs:// URI (default: <run-dir>/export/<format>)"
    )
    parser.add_argument("--force", action="store_true", help="redo the export even if it finished")


def execute_export(args: argparse.Namespace) -> None:
    """`ingenious export`'s body: export, then print what was written where."""
    cfg, run_dir = load_run(args)
    out = args.out
    if out is not None and not U.is_uri(out):
        out = str(base_dir() / out)  # relative to where relative paths are taken from (jobs.pipeline.base_dir)
    try:
        result = run_export(cfg, run_dir, ExportConfig(format=args.format, out=out), force=args.force)
    except (ValueError, OSError) as e:
        log.debug("the export failed", exc_info=True)
        raise SystemExit(f"error: {redact(user_message(e))}") from None
    except Exception as e:  # a failure inside Ray or a bug: its traceback and last line, redacted
        raise SystemExit(report_failure(e)) from None
    s = result["summary"]
    print(
        f"export {result['status']} ({result['seconds']:.1f} s): {s['draws']} draw(s) of subset {s['subset']!r}, "
        f"{sum(s['rows_per_draw'])} rows in {s['files']} {s['format']} files\nfolder: {redact(result['folder'])}"
    )
