"""`python -m jobs.report RUN_DIR`: the HTML report of a run (reporting/report.py)."""

from reporting.report import main

if __name__ == "__main__":
    main()
