"""An experiment's numbers as data (summary.json beside results.md), so other tools read every experiment
the same way:

    {"primary": "<set>",
     "arms":   {"<arm>": {"<set>": {"mean", "half_width", "n"}}},
     "paired": {"<arm>": {"<against arm>": {"<set>": {"mean", "half_width", "n"}}}},
     "oracle_gap_closed": {"<arm>": share},
     "diagnostics": the main variant's space judged before training (experiments/diagnostics.py), or null}

Final held-out losses of the main arms (ablations have one seed and no intervals); `half_width` is the
t-based 95% interval's (null for one seed); differences are paired by seed, arm minus the other (negative:
the arm's loss is lower). The share of the random-to-oracle gap an arm closes, on the primary set:
(reference - arm) / (reference - oracle), with the gate's arms as reference and oracle.
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.layout import MAIN, Experiment, diagnostics_file, summary_file
from training.stats import mean_interval


def final_losses(records: list[dict], arm: str, name: str) -> dict[int, float]:
    """Seed -> final loss on the set `name` of the main runs of `arm`."""
    return {
        r["run"].seed: r["loss"][f"final/{name}"]
        for r in records
        if r["run"].group == MAIN and r["run"].arm == arm and f"final/{name}" in r["loss"]
    }


def paired_differences(records: list[dict], arm: str, against: str, name: str) -> list[float]:
    """The arm's final loss minus the other arm's, for each seed both have, in seed order."""
    mine, theirs = final_losses(records, arm, name), final_losses(records, against, name)
    return [mine[s] - theirs[s] for s in sorted(mine) if s in theirs]


def interval(values: list[float]) -> dict | None:
    if not values:
        return None
    mean, half = mean_interval(values)
    return {"mean": mean, "half_width": half, "n": len(values)}


def summarise(exp: Experiment, records: list[dict], sets: list[str], diagnostics: dict | None = None) -> dict:
    arms = list(dict.fromkeys(r["run"].arm for r in records if r["run"].group == MAIN))
    table = {a: {s: interval(list(final_losses(records, a, s).values())) for s in sets} for a in arms}
    paired = {
        a: {b: {s: interval(paired_differences(records, a, b, s)) for s in sets} for b in exp.compare_to if b != a}
        for a in arms
    }
    gap = {}
    if exp.gate is not None and table.get(exp.gate.against) and table.get(exp.gate.arm):
        reference = table[exp.gate.against][exp.primary]
        oracle = table[exp.gate.arm][exp.primary]
        if reference and oracle and reference["mean"] != oracle["mean"]:
            span = reference["mean"] - oracle["mean"]
            gap = {a: (reference["mean"] - t[exp.primary]["mean"]) / span for a, t in table.items() if t[exp.primary]}
    return {
        "primary": exp.primary,
        "arms": table,
        "paired": paired,
        "oracle_gap_closed": gap,
        "diagnostics": diagnostics,
    }


def write_summary(root: Path, exp: Experiment, records: list[dict], sets: list[str]) -> dict:
    path = diagnostics_file(root)
    diagnostics = json.loads(path.read_text()) if path.exists() else None
    summary = summarise(exp, records, sets, diagnostics)
    summary_file(root).write_text(json.dumps(summary, indent=1) + "\n")
    return summary
