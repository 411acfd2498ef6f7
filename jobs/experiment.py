"""`python -m jobs.experiment`: arms x seeds from one warm start (experiments/runner.py)."""

from experiments.runner import main

if __name__ == "__main__":
    main()
