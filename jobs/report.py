"""`python -m jobs.report RUN_DIR` or `ingenious-report RUN_DIR`: the HTML report of a run
(reporting/report.py). A command: nothing imports it."""

from __future__ import annotations

import argparse

from dataio.redact import redact, report_failure
from reporting import report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.report", description=report.__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", default=None, help="report folder (default: RUN_DIR/report)")
    args = parser.parse_args(argv)
    try:
        print(report.build_report(args.run_dir, args.out))
    except ValueError as e:
        raise SystemExit(f"error: {redact(str(e))}") from None
    except Exception as e:  # a failure inside Ray or a bug: its traceback and last line, redacted
        raise SystemExit(report_failure(e)) from None


if __name__ == "__main__":
    main()
