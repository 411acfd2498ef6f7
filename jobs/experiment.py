"""The paper's comparison at small scale: arms x seeds trained from one warm start, scored, reported.

    python -m jobs.experiment [--config configs/experiment-bert.yaml ...] [--out runs]
    ingenious-experiment ...     (the same, once the package is installed)

Each experiment config is read by experiments/config.py, run by experiments/runner.py (which resumes
after an interruption) and reported by reporting/experiment_report.py: results.md and the plots in the
experiment folder, also when the gate stops the experiment early. A command: nothing imports it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import yaml

from dataio.lease import Lease
from dataio.log import configure, get_logger
from dataio.redact import redact, redact_tree, report_failure
from experiments.config import load_experiment
from experiments.layout import MAIN, Experiment, results_file
from experiments.runner import Outcome, run_experiment
from reporting.experiment_report import write_report

log = get_logger(__name__)
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIGS = [CONFIG_DIR / "experiment-bert.yaml", CONFIG_DIR / "experiment-gpt2.yaml"]


def run_and_report(exp: Experiment, out: Path) -> Path:
    """Run `exp` into out/<name> and write its report there, holding the folder's lease (a second run of
    the experiment at the same time stops at once, naming the first); returns the experiment folder. A
    failed gate ends the command once the report of what ran is written."""
    with Lease(out / exp.name):
        done = run_experiment(exp, out)
        write_report(done.root, done.experiment)
    if done.gate_failed:
        raise SystemExit(gate_failure(done))
    return done.root


def gate_failure(done: Outcome) -> str:
    exp, verdict = done.experiment, done.gate
    return (
        f"[ingenious] experiment {exp.name}: gate failed: {exp.gate.arm} - {exp.gate.against} "
        f"{exp.primary} loss = {verdict['mean']:.4f} ± {verdict['half_width'] or float('nan'):.4f} "
        "(t 95% CI) does not exclude 0. The pool cannot separate arms: raise its redundancy and noise "
        f"(the pool config {exp.pool}) or train longer, before spending the other runs. "
        f"Report so far: {results_file(done.root)}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.experiment", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        action="append",
        default=None,
        metavar="PATH",
        help="experiment YAML (repeatable; default: configs/experiment-bert.yaml and experiment-gpt2.yaml)",
    )
    parser.add_argument("--out", default="runs", help="parent folder of the experiment folders (default: ./runs)")
    args = parser.parse_args(argv)
    configure()
    base = Path(os.environ.get("INGENIOUS_BASE_DIR") or Path.cwd())
    if "://" in args.out:  # variants share finished stages by symbolic links, which object stores lack
        raise SystemExit(
            f"--out {redact(args.out)}: an experiment's folder must be a local path (on a cluster, one "
            "every node mounts); object storage is not supported for experiments"
        )
    try:
        experiments = [load_experiment(p, base=base) for p in (args.config or DEFAULT_CONFIGS)]
    except ValueError as e:
        log.debug("the experiment config was rejected", exc_info=True)
        raise SystemExit(f"config error: {redact(str(e))}") from None
    for exp in experiments:
        log.info(
            f"experiment {exp.name}: {len(exp.runs)} runs, variants {', '.join(exp.pipelines)}\n"
            f"{yaml.safe_dump(redact_tree(exp.pipelines[MAIN].to_dict()), sort_keys=False)}"
        )
        try:
            root = run_and_report(exp, base / args.out)
        except ValueError as e:  # bad input found once the run is under way (a pool, a subset file)
            log.debug("the experiment stopped", exc_info=True)
            raise SystemExit(f"error: {redact(str(e))}") from None
        except Exception as e:  # a failure inside Ray (a training worker, out of memory) or a bug
            raise SystemExit(report_failure(e)) from None
        print(results_file(root).read_text(), flush=True)
        print(f"results: {results_file(root)}", flush=True)


if __name__ == "__main__":
    main()
