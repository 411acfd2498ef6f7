"""The parts of results.md that a categorised pool makes possible: the gate, steps-to-target and each
arm's composition by category (experiments/categories.py)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from experiments.layout import MAIN, Gate, gate_file
from training.stats import format_interval


def _main_runs(records: list[dict]) -> dict[str, list[dict]]:
    by_arm: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["run"].group == MAIN:
            by_arm[r["run"].arm].append(r)
    return by_arm


def gate_section(root: Path, gate: Gate | None) -> list[str]:
    path = gate_file(root)
    if gate is None or not path.exists():
        return []
    v = json.loads(path.read_text())
    diffs = ", ".join(f"{d:+.4f}" for d in v["differences"])
    interval = (
        f"{v['mean']:+.4f} ± {v['half_width']:.4f}" if v["half_width"] is not None else f"{v['mean']:+.4f} (one pair)"
    )
    verdict = (
        "**passed**: the pool can separate a clearly better subset from random, so the other arms were run."
        if v["passed"]
        else "**failed**: the interval does not exclude 0, so this pool cannot measure the difference between "
        "selection strategies; the other arms were not run. Raise the pool's redundancy and noise first."
    )
    return [
        "## Gate",
        "",
        f"{v['arm']} - {v['against']}, {v['set']} loss, paired by seed: {interval} (t 95% CI; pairs: {diffs}). "
        f"Gate {verdict}",
        "",
    ]


def steps_to_target(curve: list[tuple[int, float]], target: float) -> float | None:
    """The first step at which the piecewise-linear loss curve reaches `target`; None if it never does."""
    for (s0, l0), (s1, l1) in zip(curve, curve[1:]):
        if l0 <= target:
            return float(s0)
        if l1 <= target:
            return s0 + (s1 - s0) * (l0 - target) / (l0 - l1)
    return float(curve[-1][0]) if curve and curve[-1][1] <= target else None


def eval_curve(record: dict, warm: dict, name: str) -> list[tuple[int, float]]:
    """(step, loss on `name`) from the warm start (step 0), the run's snapshots and its final model."""
    loss = record["loss"]
    points = [(0, warm["loss"][f"final/{name}"])] if f"final/{name}" in warm["loss"] else []
    points += sorted(
        (int(k.split("/")[0].removeprefix("step")), v)
        for k, v in loss.items()
        if k.startswith("step") and k.endswith(f"/{name}")
    )
    if f"final/{name}" in loss:
        points.append((record["run"].train.steps, loss[f"final/{name}"]))
    return points


def steps_table(records: list[dict], warm: dict, name: str, reference: str) -> list[str]:
    by_arm = _main_runs(records)
    refs = [r["loss"][f"final/{name}"] for r in by_arm.get(reference, []) if f"final/{name}" in r["loss"]]
    if not refs:
        return []
    target = float(np.mean(refs))
    lines = [
        f"Steps to reach `{reference}`'s final {name} loss ({target:.4f}, its mean over seeds), on each run's "
        "held-out curve (warm start, snapshots and final model, linear between them); fewer is better.",
        "",
        "| arm | steps to target | runs that reach it |",
        "|---|---|---|",
    ]
    for arm, rs in by_arm.items():
        steps = [steps_to_target(eval_curve(r, warm, name), target) for r in rs]
        reached = [s for s in steps if s is not None]
        cell = (
            f"{format_interval(reached, 0)} (n={len(reached)})"
            if len(reached) > 1
            else (f"{reached[0]:.0f}" if reached else "-")
        )
        lines.append(f"| {arm} | {cell} | {len(reached)} of {len(rs)} |")
    return lines


def composition_table(records: list[dict], pool: dict[str, float] | None) -> list[str]:
    """Per arm, the mean over seeds of each category's share of its training examples."""
    rs = [r for r in records if r["run"].group == MAIN and r.get("composition")]
    if not rs or pool is None:
        return []
    cats = list(pool)
    lines = [
        "Share of each category among the sequences an arm trained on (every training example counted, "
        "so a sequence seen twice counts twice; mean over seeds); `distinct` is the number of different "
        "sequences it saw. Selection never sees the category.",
        "",
        "| arm | " + " | ".join(cats) + " | distinct |",
        "|---" * (len(cats) + 2) + "|",
        "| pool | " + " | ".join(f"{100 * pool[c]:.1f}%" for c in cats) + " | - |",
    ]
    for arm, runs in _main_runs(rs).items():
        shares = [f"{100 * np.mean([r['composition'][c] for r in runs]):.1f}%" for c in cats]
        distinct = np.mean([r["distinct"] for r in runs])
        lines.append(f"| {arm} | " + " | ".join(shares) + f" | {distinct:.0f} |")
    return lines
