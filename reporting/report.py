"""A static HTML report of a run: what was chosen, how well, at what cost, and what training made of it.

    python -m jobs.report RUN_DIR [--out RUN_DIR/report]    (the command: jobs/report.py)

Writes index.html and PNG plots (no server, no JavaScript): subset size and fraction, the greedy
gain curve per partition, coverage of the selected subsets against random subsets of the same size,
a 2-D projection (PCA) of selected and unselected embeddings, per-partition and per-stage time and
memory, training loss curves, held-out and downstream evaluation, and the configs.
"""

from __future__ import annotations

import html
import json
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dataio import uri as U  # noqa: E402
from dataio.contracts import RUN_CONFIG, STAGE_NAMES, EvaluateOutputs, SelectOutputs, TrainOutputs  # noqa: E402
from dataio.redact import redact  # noqa: E402
from dataio.rundir import RunDir, read_embeddings, read_ids, read_table, shard_files  # noqa: E402
from selection.facility_location import coverage  # noqa: E402
from selection.ids import rows_of  # noqa: E402
from selection.knn import normalize_embeddings  # noqa: E402

MAX_POINTS = 20_000  # coverage and projection on a fixed sample of the pool beyond this size


def _save(fig: plt.Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def gain_curves(select: str, out: Path) -> str:
    table = read_table(U.join(select, SelectOutputs.PROBABILITIES), ["shard", "rank", "gain"])
    table = table.sort_by([("shard", "ascending"), ("rank", "ascending")])
    shard, rank, gain = (table.column(c).to_numpy() for c in ("shard", "rank", "gain"))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for p in np.unique(shard):
        ax.plot(rank[shard == p], gain[shard == p], lw=1, label=f"partition {p}")
    ax.set(xlabel="greedy rank", ylabel="marginal gain", yscale="log", title="Greedy gain curve per partition")
    if len(np.unique(shard)) <= 10:
        ax.legend(fontsize=7)
    return _save(fig, out / "gains.png")


def subset_quality(run: RunDir, out: Path, seed: int = 0) -> tuple[str, dict]:
    """Coverage of ingenious draw 0 (and greedi, when the run computed it) against random subsets of
    the same size, and a PCA map of the configured strategy's subset."""
    ids, emb = read_embeddings(shard_files(run.stage("embed")))
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(ids), min(len(ids), MAX_POINTS), replace=False))
    emb = normalize_embeddings(emb)
    select = run.stage("select")
    subsets = {"ingenious (draw 0)": read_ids(U.join(select, SelectOutputs.subset("ingenious")))}
    if U.exists(U.join(select, SelectOutputs.subset("greedi"))):
        subsets["greedi"] = read_ids(U.join(select, SelectOutputs.subset("greedi")))
    strategy = run.read_manifest("select")["summary"]["strategy"]
    shown = read_ids(U.join(select, SelectOutputs.SUBSET))
    scores = {}
    for name, subset in subsets.items():
        rows = rows_of(subset, ids, where="the embeddings")
        randoms = [coverage(emb[sample], emb[rng.choice(len(ids), len(rows), replace=False)]) for _ in range(3)]
        scores[name] = {
            "size": len(rows),
            "coverage": coverage(emb[sample], emb[rows]),
            "random_mean": float(np.mean(randoms)),
            "random_std": float(np.std(randoms)),
        }
    centred = emb[sample] - emb[sample].mean(0)
    xy = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
    chosen = np.isin(ids[sample], shown)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(xy[~chosen, 0], xy[~chosen, 1], s=3, c="#bbbbbb", label="not selected")
    ax.scatter(xy[chosen, 0], xy[chosen, 1], s=4, c="#d62728", label=f"selected ({strategy})")
    ax.set(title="Embeddings, first two principal components", xticks=[], yticks=[])
    ax.legend(markerscale=3)
    return _save(fig, out / "projection.png"), scores


def timings(run: RunDir, out: Path) -> tuple[str | None, list[dict]]:
    rows = [
        {"stage": s, **{k: m.get(k) for k in ("seconds", "peak_rss_gb")}}
        for s in STAGE_NAMES
        if (m := run.read_manifest(s))
    ]
    stats = (run.read_manifest("select") or {}).get("summary", {}).get("per_partition", [])
    if not stats:
        return None, rows
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar([s["partition"] for s in stats], [s["seconds"] for s in stats])
    ax.set(xlabel="partition", ylabel="seconds", title="kNN graph + greedy, per partition task")
    return _save(fig, out / "partition_seconds.png"), rows


def training_curves(run: RunDir, out: Path) -> str | None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    offset, drawn = 0, False
    for stage in ("warmstart", "train"):
        path = U.join(run.stage(stage), TrainOutputs.METRICS)
        if U.exists(path):
            lines = [json.loads(x) for x in U.read_text(path).splitlines() if x]
            ax.plot([offset + m["step"] for m in lines], [m["loss"] for m in lines], lw=1, label=stage)
            offset += len(lines)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="optimizer step (warm start, then subset training)", ylabel="training loss", title="Training loss")
    ax.legend()
    return _save(fig, out / "training.png")


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in r.values()) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


def build_report(run_dir: str | Path, out: str | Path | None = None) -> str:
    """Render the report of a run directory (local or on object storage) into `out` (default
    RUN_DIR/report; a URI gets a rendered copy uploaded); returns the index.html it wrote."""
    run = RunDir(run_dir)
    if not run.has_marker("select"):
        raise ValueError(f"{redact(run.root)}: the select stage has not finished; nothing to report yet")
    target = U.normalize(out) if out else run.path("report")
    if U.is_local(target):
        _render(run, Path(target))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            _render(run, Path(tmp))
            U.upload_dir(tmp, target)
    return U.join(target, "index.html")


def _render(run: RunDir, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    summary = run.read_manifest("select")["summary"]
    gains = gain_curves(run.stage("select"), out)
    projection, scores = subset_quality(run, out)
    partition_png, stage_rows = timings(run, out)
    training_png = training_curves(run, out)
    evaluation = U.read_json(U.join(run.stage("evaluate"), EvaluateOutputs.METRICS))
    eval_rows = [{"model/set": k, **v} for k, v in evaluation.items()] if evaluation else []
    downstream = U.join(run.stage("evaluate"), EvaluateOutputs.DOWNSTREAM_TABLE)
    quality = [{"subset": k, **v} for k, v in scores.items()]
    img = lambda name: f'<img src="{name}" alt="{name}">' if name else "<p>(not available)</p>"  # noqa: E731
    title = f"ingenious-ray report: {html.escape(U.name(run.root))}"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} img{{max-width:100%;border:1px solid #eee}}
pre{{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}}</style></head><body>
<h1>Run {html.escape(U.name(run.root))}</h1><p>{html.escape(redact(run.root))}</p>
<h2>Subset</h2><p>{summary["budget"]} of {summary["sequences"]} sequences
({100 * summary["budget"] / summary["sequences"]:.1f}%), strategy <b>{html.escape(summary["strategy"])}</b>,
{summary["partitions"]} partition(s) ({html.escape(summary["partition"])}).</p>
<h2>Coverage against random subsets of the same size</h2>
<p>Coverage: mean cosine similarity of each pool sequence to its nearest selected one (the facility-location
objective per sequence); random: mean and std over 3 seeded random subsets.</p>{_table(quality)}
<h2>Greedy gains</h2>{img(gains)}
<h2>Selected and unselected embeddings</h2>{img(projection)}
<h2>Time and memory</h2>{_table(stage_rows)}{img(partition_png)}
<h2>Training</h2>{img(training_png)}
<h2>Evaluation</h2>{_table(eval_rows)}
<pre>{html.escape(U.read_text(downstream)) if U.exists(downstream) else "(no downstream fine-tuning in this run)"}</pre>
<h2>Config</h2><pre>{html.escape(U.read_text(run.path(RUN_CONFIG)))}</pre>
</body></html>"""
    (out / "index.html").write_text(page, encoding="utf-8")
