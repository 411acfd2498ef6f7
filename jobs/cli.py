"""`ingenious` console command: `ingenious run` for the whole loop, one stage by name, or `ingenious
export` (a run's selected data for another trainer)."""

from __future__ import annotations

import argparse

from dataio.contracts import STAGE_NAMES
from jobs.export import add_export_args, execute_export
from jobs.pipeline import add_common_args, execute


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="ingenious", description="INGENIOUS subset selection for LM pretraining on Ray"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_common_args(sub.add_parser("run", help="the whole pipeline (skips finished stages)"))
    for name in STAGE_NAMES:
        add_common_args(sub.add_parser(name, help=f"only the {name} stage (its inputs must be finished)"))
    add_export_args(
        sub.add_parser("export", help="write the run's selected data (Parquet or JSONL) for other trainers")
    )
    args = parser.parse_args(argv)
    if args.command == "export":
        execute_export(args)
        return
    execute(args, None if args.command == "run" else [args.command])


if __name__ == "__main__":
    main()
