"""results.md and plots of an experiment folder (what experiments/runner.py wrote).

Every number over seeds is a mean ± the half-width of its t-based 95% confidence interval (n shown;
training/stats.py); differences against a reference arm are paired by seed (same seed = same masks,
dropout and data order rules).
Selection cost is the embed + select wall-clock of the pipeline an arm's subsets come from.
Coverage is the dense facility-location objective per point of a run's first draw (see Coverage).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dataio.contracts import MANIFEST, SUBSET_NAMES, PrepareOutputs, TrainOutputs  # noqa: E402
from dataio.rundir import read_embeddings, read_ids, shard_files  # noqa: E402
from dataio.sequences import ParquetRows  # noqa: E402
from experiments.categories import composition, sequence_categories  # noqa: E402
from experiments.layout import (  # noqa: E402
    MAIN,
    SELECTION_STAGES,
    Experiment,
    Run,
    baselines_file,
    curves_file,
    diagnostics_file,
    downstream_file,
    eval_file,
    pipeline_dir,
    pool_dir,
    results_file,
    run_dir,
    train_file,
    warmstart_dir,
)
from experiments.webpool import POOL_FILE  # noqa: E402
from reporting.pool_report import composition_table, gate_section, steps_table  # noqa: E402
from reporting.summary import paired_differences, write_summary
from selection.facility_location import coverage  # noqa: E402
from selection.ids import rows_of  # noqa: E402
from selection.knn import normalize_embeddings  # noqa: E402
from training.loop import TrainConfig  # noqa: E402
from training.selection_io import subset_schedule  # noqa: E402
from training.stats import INTERVAL, format_interval  # noqa: E402


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _stage_seconds(pipeline: Path, stage: str) -> float:
    manifest = _read(pipeline / stage / MANIFEST) or {}
    return float(manifest.get("seconds") or 0.0)


def _cell(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{format_interval(values, digits)} (n={len(values)})"


def _scores(folder: Path) -> dict:
    scores = _read(eval_file(folder)) or {}
    rows = (_read(downstream_file(folder)) or {}).get("rows", [])
    return {
        "loss": {k: v["loss"] for k, v in scores.items()},
        "tasks": {r["task"]: 100 * r["score"] for r in rows},
        "glue": float(np.mean([100 * r["score"] for r in rows])) if rows else None,
    }


class Coverage:
    """How well a run's first subset draw covers the pool: the mean over the pool of the cosine
    similarity to the nearest selected sequence, always in the main pipeline's embedding space, so
    subsets chosen from other embeddings (ablations) are judged on the same scale as random ones."""

    def __init__(self, root: Path):
        self.root, self._memo = root, {}
        main = pipeline_dir(root, MAIN)
        ids = np.concatenate([read_ids(f) for f in shard_files(main / "prepare" / PrepareOutputs.SEQUENCES)])
        emb_ids, emb = read_embeddings(shard_files(main / "embed"))
        self.pool_ids = ids
        self.emb = normalize_embeddings(emb[rows_of(ids, emb_ids, where=f"the embeddings of {main}")])

    def __call__(
        self, variant: str, subset: str, seed: int, fraction: float, subset_file: str | None = None
    ) -> float | None:
        if subset == "full":
            return None
        key = (variant, subset, seed, fraction, subset_file)  # the random and greedy references recur for every run
        if key not in self._memo:
            train = TrainConfig(subset=subset, seed=seed, subset_file=subset_file)
            select = pipeline_dir(self.root, variant) / "select"
            rows = subset_schedule(train, self.pool_ids, fraction=fraction, select_dir=select).draw_rows(0)
            self._memo[key] = coverage(self.emb, self.emb[rows])
        return self._memo[key]

    def advantage(self, value: float | None, fraction: float) -> float | None:
        """The share of the main greedy subset's coverage gain over random subsets that `value` keeps
        (a selection is judged by this share, not by its coverage, since a random subset already covers
        most of the pool)."""
        if value is None:
            return None
        randoms = np.mean([self(MAIN, "random", s, fraction) for s in range(3)])
        return (value - randoms) / (self(MAIN, "greedi", 0, fraction) - randoms)


class Composition:
    """What each run trained on, by pool category: every training example of its schedule (the same
    function of the config and seed the trainer walks), joined to the pool's categories."""

    def __init__(self, root: Path, exp: Experiment):
        self.root, self.exp = root, exp
        self.ids, self.cats = sequence_categories(pipeline_dir(root, MAIN) / "prepare", str(pool_dir(root) / POOL_FILE))
        self.pool_ids = ParquetRows(str(pipeline_dir(root, MAIN) / "prepare" / PrepareOutputs.SEQUENCES)).ids
        self.pool = composition(self.ids, self.cats, self.ids)

    def __call__(self, run: Run) -> tuple[dict[str, float], int]:
        select = pipeline_dir(self.root, run.variant) / "select"
        fraction = self.exp.pipelines[run.variant].select.fraction
        folder = str(run_dir(self.root, run))  # a re-selecting run's later draws are its own
        schedule = subset_schedule(run.train, self.pool_ids, fraction=fraction, select_dir=select, out_dir=folder)
        trained = self.pool_ids[np.concatenate([schedule.batch_rows(s) for s in range(run.train.steps)])]
        return composition(self.ids, self.cats, trained), len(np.unique(trained))


def collect(root: Path, exp: Experiment, composed: Composition | None = None) -> list[dict]:
    """One record per finished run: its settings, train seconds, held-out losses, downstream scores,
    and with a categorised pool its composition."""
    records, cover = [], Coverage(root)
    for run in exp.runs:
        folder = run_dir(root, run)
        trained = _read(train_file(folder))
        if trained is None:
            continue
        pipe, fraction = pipeline_dir(root, run.variant), exp.pipelines[run.variant].select.fraction
        # an arm trained on one of the select stage's subsets pays for embedding and selection
        selection_s = (
            sum(_stage_seconds(pipe, s) for s in ("embed", "select")) if run.train.subset in SUBSET_NAMES else 0.0
        )
        covered = cover(run.variant, run.train.subset, run.train.seed, fraction, run.train.subset_file)
        shares, distinct = composed(run) if composed else (None, None)
        records.append(
            {
                "run": run,
                "train_s": trained["seconds"],
                "selection_s": selection_s,
                **_scores(folder),
                "coverage": covered,
                "advantage": cover.advantage(covered, fraction),
                # the variant's greedy (GreeDi) subset: what its embeddings and partitions make of selection
                "topk_advantage": cover.advantage(cover(run.variant, "greedi", 0, fraction), fraction),
                "curve": _curve(folder / TrainOutputs.METRICS),
                "composition": shares,
                "distinct": distinct,
            }
        )
    return records


def _curve(path: Path) -> np.ndarray:
    if not path.exists():
        return np.zeros((0, 2))
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    return np.array([[r["step"], r["loss"]] for r in rows], dtype=np.float64)


def _sets(records: list[dict], primary: str) -> list[str]:
    names = {k.split("/", 1)[1] for r in records for k in r["loss"] if k.startswith("final/")}
    return sorted(names, key=lambda n: (n != primary, n != "heldout", n))


def _main_table(records: list[dict], sets: list[str], warm: dict, baselines: dict | None = None) -> list[str]:
    by_arm: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["run"].group == MAIN:
            by_arm[r["run"].arm].append(r)
    head = (
        ["arm", "subset", "redraw every", "steps"]
        + [f"{s} loss" for s in sets]
        + ["GLUE avg", "coverage", "train s", "selection s"]
    )
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    if warm["loss"]:
        losses = [f"{warm['loss'][f'final/{s}']:.3f}" if f"final/{s}" in warm["loss"] else "-" for s in sets]
        glue = f"{warm['glue']:.1f}" if warm["glue"] is not None else "-"
        lines.append(
            "| warm start (every arm's step 0) | full | - | 0 | " + " | ".join(losses) + f" | {glue} | - | - | - |"
        )
    if baselines:
        losses = [f"{baselines[f'unigram/{s}']:.3f}" if f"unigram/{s}" in baselines else "-" for s in sets]
        lines.append(
            "| unigram model of the pool (word frequencies only) | - | - | - | "
            + " | ".join(losses)
            + " | - | - | - | - |"
        )
    for arm, rs in by_arm.items():
        t = rs[0]["run"].train
        losses = [_cell([r["loss"][f"final/{s}"] for r in rs if f"final/{s}" in r["loss"]]) for s in sets]
        glue = _cell([r["glue"] for r in rs if r["glue"] is not None], 1)
        cover = _cell([r["coverage"] for r in rs if r["coverage"] is not None], 4)
        lines.append(
            f"| {arm} | {t.subset} | {t.redraw_every or '-'} | {t.steps} | "
            + " | ".join(losses)
            + f" | {glue} | {cover} | {np.mean([r['train_s'] for r in rs]):.0f} | {rs[0]['selection_s']:.0f} |"
        )
        for step in rs[0]["run"].snapshots:  # the long arm stopped early, as the paper's early-stopping baseline
            losses = [_cell([r["loss"][f"step{step}/{s}"] for r in rs if f"step{step}/{s}" in r["loss"]]) for s in sets]
            lines.append(
                f"| {arm} @ step {step} | {t.subset} | - | {step} | " + " | ".join(losses) + " | - | - | - | - |"
            )
    return lines


def _paired_table(records: list[dict], sets: list[str], reference: str) -> list[str]:
    runs = {(r["run"].arm, r["run"].seed): r for r in records if r["run"].group == MAIN}
    arms = list(dict.fromkeys(a for a, _ in runs))
    if reference not in arms:
        return []
    head = ["arm"] + [f"Δ {s} loss" for s in sets] + ["Δ GLUE avg"]
    lines = [
        f"Paired by seed against `{reference}` (negative loss and positive GLUE = better than {reference}):",
        "",
        "| " + " | ".join(head) + " |",
        "|---" * len(head) + "|",
    ]
    for arm in arms:
        if arm == reference:
            continue
        pairs = [(runs[(arm, s)], runs[(reference, s)]) for a, s in runs if a == arm and (reference, s) in runs]
        cells = [_cell(paired_differences(records, arm, reference, s)) for s in sets]
        glue = _cell([a["glue"] - b["glue"] for a, b in pairs if a["glue"] is not None and b["glue"] is not None], 1)
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {glue} |")
    return lines


def _task_table(records: list[dict], group: str, warm: dict | None = None) -> list[str]:
    rs = [r for r in records if r["run"].group == group and r["tasks"]]
    if not rs:
        return []
    tasks = list(rs[0]["tasks"])
    lines = ["| arm | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    if warm and warm["tasks"]:
        lines.append("| warm start | " + " | ".join(f"{warm['tasks'].get(t, float('nan')):.1f}" for t in tasks) + " |")
    for arm in dict.fromkeys(r["run"].arm for r in rs):
        mine = [r for r in rs if r["run"].arm == arm]
        lines.append(
            f"| {arm} | " + " | ".join(_cell([r["tasks"][t] for r in mine if t in r["tasks"]], 1) for t in tasks) + " |"
        )
    return lines


def _ablation_table(records: list[dict], sets: list[str], exp: Experiment) -> list[str]:
    rs = [r for r in records if r["run"].group == "ablation"]
    if not rs:
        return []
    seed = rs[0]["run"].seed
    refs = [r for r in records if r["run"].group == MAIN and r["run"].seed == seed and r["run"].train.subset != "full"]
    head = (
        ["run", "what changes"]
        + [f"{s} loss" for s in sets]
        + ["GLUE avg", "coverage", "greedy gain kept", "its greedy top-k's gain kept", "embed + select s"]
    )
    lines = [
        f"One seed ({seed}); the main arms with that seed for reference. Coverage: mean cosine similarity of each "
        "pool sequence to its nearest sequence in the run's first draw, in the main embedding space; greedy gain "
        "kept: (coverage - random's) / (the main greedy top-k's - random's); its greedy top-k's: the same for "
        "the GreeDi subset of the run's own pipeline (what its embeddings and partitions make of greedy selection).",
        "",
        "| " + " | ".join(head) + " |",
        "|---" * len(head) + "|",
    ]
    for r in refs + rs:
        note = exp.notes.get(r["run"].arm, "main pipeline (reference)")
        losses = [f"{r['loss'][f'final/{s}']:.3f}" if f"final/{s}" in r["loss"] else "-" for s in sets]
        glue = f"{r['glue']:.1f}" if r["glue"] is not None else "-"
        cover = (
            f"{r['coverage']:.4f} | {r['advantage']:.2f} | {r['topk_advantage']:.2f}"
            if r["coverage"] is not None
            else "- | - | -"
        )
        lines.append(
            f"| {r['run'].arm} | {note} | " + " | ".join(losses) + f" | {glue} | {cover} | {r['selection_s']:.0f} |"
        )
    return lines


def _stage_table(root: Path, records: list[dict]) -> list[str]:
    main = pipeline_dir(root, MAIN)
    lines = ["| stage | seconds |", "|---|---|"]
    for stage in SELECTION_STAGES:
        lines.append(f"| {stage} (once, shared by every main arm) | {_stage_seconds(main, stage):.0f} |")
    by_arm: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_arm[r["run"].arm].append(r["train_s"])
    for arm, secs in by_arm.items():
        lines.append(f"| train {arm} (per run, {len(secs)} runs) | {np.mean(secs):.0f} |")
    selection = _stage_seconds(main, "embed") + _stage_seconds(main, "select")
    short = [r["train_s"] for r in records if r["run"].group == MAIN and not r["run"].snapshots]
    long = [(r["train_s"], r["run"].train.steps) for r in records if r["run"].group == MAIN and r["run"].snapshots]
    if short and long:
        steps = min(r["run"].train.steps for r in records if r["run"].group == MAIN)
        lines += [
            "",
            f"Selection (embed + select) took {selection:.0f} s, {100 * selection / np.mean(short):.0f}% of one "
            f"{steps}-step arm's training ({np.mean(short):.0f} s); the {long[0][1]}-step full-data run took "
            f"{np.mean([s for s, _ in long]) - np.mean(short):.0f} s longer than a {steps}-step arm. Arms ran two at a "
            "time, one CPU each, so their seconds are per-CPU wall-clock.",
        ]
    return lines


def plot_curves(records: list[dict], warm: dict, sets: list[str], out: Path, smooth: int = 10) -> None:
    """Training loss per main arm (mean over seeds, moving average), then each evaluation set's loss
    against steps (the warm start at 0, the long arm's snapshots, every arm's final model)."""
    fig, axes = plt.subplots(1, 1 + len(sets), figsize=(6 * (1 + len(sets)), 4.5), squeeze=False)
    left, panels = axes[0][0], axes[0][1:]
    by_arm: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["run"].group == MAIN:
            by_arm[r["run"].arm].append(r)
    for arm, rs in by_arm.items():
        n = min(len(r["curve"]) for r in rs)
        if n == 0:
            continue
        steps, loss = rs[0]["curve"][:n, 0], np.mean([r["curve"][:n, 1] for r in rs], axis=0)
        kernel = np.ones(min(smooth, n)) / min(smooth, n)
        left.plot(steps[len(kernel) - 1 :], np.convolve(loss, kernel, mode="valid"), label=f"{arm} (n={len(rs)})")
        for name, ax in zip(sets, panels):
            scored = [r for r in rs if f"final/{name}" in r["loss"]]  # a report can be written mid-run
            if not scored:
                continue
            xs = sorted(
                {int(k.split("/")[0].removeprefix("step")) for r in scored for k in r["loss"] if k.startswith("step")}
            )
            ys = [np.mean([r["loss"][f"step{x}/{name}"] for r in scored]) for x in xs]
            xs, ys = xs + [int(steps[-1])], ys + [np.mean([r["loss"][f"final/{name}"] for r in scored])]
            if f"final/{name}" in warm["loss"]:
                xs, ys = [0] + xs, [warm["loss"][f"final/{name}"]] + ys
            ax.plot(xs, ys, marker="o", label=arm)
    left.set(title="training loss (on each arm's own batches)", xlabel="step", ylabel="loss")
    for name, ax in zip(sets, panels):
        ax.set(title=f"{name} loss (mean over seeds)", xlabel="optimizer steps after the warm start", ylabel="loss")
    for ax in axes[0]:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def diagnostics_section(root: Path) -> list[str]:
    """The main variant's space judged before training (diagnostics.md), where the runner wrote it."""
    table = diagnostics_file(root).with_suffix(".md")
    if not table.exists():
        return []
    return ["## The selection space, before training", "", table.read_text().strip(), ""]


def write_report(root: Path, exp: Experiment) -> str:
    composed = Composition(root, exp) if exp.pool is not None else None
    records, warm = collect(root, exp, composed), _scores(warmstart_dir(root))
    pool_shares = composed.pool if composed else None
    sets = _sets(records, exp.primary)
    plot_curves(records, warm, sets, curves_file(root))
    main = exp.pipelines[MAIN]
    pool = ((_read(pipeline_dir(root, MAIN) / "prepare" / MANIFEST) or {}).get("summary") or {}).get("sequences") or 0
    seen = main.train.steps * main.train.global_batch_size
    regime = (
        f"The pool holds {pool:,} training sequences, so in {main.train.steps} steps the full-data arm sees it "
        f"{seen / pool:.1f} times and a {main.select.fraction:.0%} subset {seen / (pool * main.select.fraction):.1f} "
        f"times; the warm start saw it {main.warmstart.steps * main.warmstart.global_batch_size / pool:.1f} times. "
        if pool
        else ""
    )
    if pool and main.train.redraw_every:  # a redrawn subset is walked only until the next draw
        passes = main.train.redraw_every * main.train.global_batch_size / (pool * main.select.fraction)
        regime += (
            f"A redrawn subset is walked for {main.train.redraw_every} steps ({passes:.2f} passes over it) before "
            "the next draw; see `distinct` below for how much of the pool the redraw arms saw. "
        )
    downstream = [*_task_table(records, MAIN, warm)]
    parts = [
        f"# Experiment {exp.name}",
        "",
        f"Model: {main.model.kind}, {main.model.num_layers} layers, hidden {main.model.hidden_size}, "
        f"seq {main.model.seq_len}; warm start {main.warmstart.steps} steps; arms trained "
        f"{main.train.steps} steps at batch {main.train.global_batch_size}; subset fraction {main.select.fraction}. "
        f"{regime}Losses are {'masked' if main.model.kind == 'bert' else 'causal'}-LM cross-entropy (nats per "
        f"token) on sequences never trained on: {', '.join(f'`{n}`' for n in sets)} (`heldout`: held-out documents "
        "of the corpus; the others: `evaluate.external` files by name); GLUE avg is the mean dev score over the "
        "downstream tasks (x100), where the experiment fine-tunes.",
        "",
        *gate_section(root, exp.gate),
        *diagnostics_section(root),
        "## Arms",
        "",
        f"Each cell: {INTERVAL} (n shown). The primary metric is the `{exp.primary}` loss.",
        "",
        *_main_table(records, sets, warm, _read(baselines_file(root))),
        "",
        *[line for arm in exp.compare_to for line in [*_paired_table(records, sets, arm), ""]],
        *[line for arm in exp.compare_to for line in [*steps_table(records, warm, exp.primary, arm), ""]],
        *composition_table(records, pool_shares),
        "",
        *(["## Downstream scores per task (dev sets, ×100)", "", *downstream, ""] if downstream else []),
        "## Ablations",
        "",
        *_ablation_table(records, sets, exp),
        "",
        *_task_table(records, "ablation"),
        "",
        "## Wall-clock",
        "",
        *_stage_table(root, records),
        "",
        f"![loss curves]({curves_file(root).name})",
        "",
    ]
    text = "\n".join(parts)
    results_file(root).write_text(text)
    write_summary(root, exp, records, sets)
    return text
