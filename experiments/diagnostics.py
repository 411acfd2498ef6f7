"""Diagnostics of a pipeline run's embedding space beside a lexical space, before any training.

    python -m experiments.diagnostics --run-dir PIPELINE_RUN_DIR --pool POOL_DIR [--k 10] [--out FILE]

For the run's own space (embed/, centred or whitened as select.center / select.whiten say) and for the
lexical space (selection/lexical.py, computed here from the run's sequences decoded with the run's
tokenizer), it reports (selection/diagnostics.py):
- near-duplicate recall@k: the share of near-duplicate sequences whose source passage or a sibling copy
  is among their k nearest neighbours;
- kNN purity by category, and the AUC of the similarity to the nearest clean sequence per category;
- what selections keep of each category against the pool: in the run's space the select stage's
  subsets (subset_<name>.parquet that exist) and INGENIOUS draws recomputed from its probabilities at
  each of `--temperatures` (at 1 it is the stage's draw 0, checked), with the partitions' greedy
  orders merged by gain as the greedy top-k; in the lexical space one partition's greedy order on its
  kNN graph (select.knn_k), its top-k and its draws at the same temperatures.
The budget is round(select.fraction x sequences), the draws' seed select.seed, as in the select stage.

The categories and near-duplicate groups come from the pool file (experiments/categories.py); the
selection never reads them. Writes a JSON to `--out` and a markdown table beside it (`.md`); prints
the table. About 12 s on 2 cores for 5,908 sequences of 128 tokens (the web pool).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import yaml

from dataio import uri as U
from dataio.contracts import RUN_CONFIG, PrepareOutputs, SelectOutputs
from dataio.rundir import read_embeddings, read_sequences, read_table, shard_files
from experiments.categories import sequence_groups
from experiments.webpool import POOL_FILE
from selection.diagnostics import clean_similarity_auc, composition, knn_purity, near_duplicate_recall, neighbours
from selection.ids import rows_of
from selection.lexical import LexicalParams, lexical_embeddings
from selection.sampling import draw_subset, taylor_softmax
from selection.shard import order_shard
from selection.space import fit_space, moments
from training.tokenizer import load_tokenizer

CLEAN, COPY = "clean", "near_duplicate"
RUN, LEXICAL = "run", "lexical"


def run_config(run_dir: str) -> dict:
    """The run's config.yaml (what the pipeline wrote at the top of the run directory)."""
    path = U.join(run_dir, RUN_CONFIG)
    if not U.is_file(path):
        raise ValueError(f"{run_dir}: no {RUN_CONFIG}: not a pipeline run directory")
    return yaml.safe_load(U.read_text(path))


def run_embeddings(run_dir: str, ids: np.ndarray, select: dict) -> np.ndarray:
    """The embed stage's vectors in the order of `ids`, in select's space (centred or whitened)."""
    files = shard_files(U.join(run_dir, "embed"))
    if not files:
        raise ValueError(f"{U.join(run_dir, 'embed')}: no embedding shards")
    found, x = read_embeddings(files)
    if len(found) != len(ids):
        raise ValueError(f"{run_dir}: embed/ holds {len(found)} embeddings but prepare/ has {len(ids)} sequences")
    x = x[rows_of(ids, found, where=f"{run_dir}/embed")]
    if select.get("center") or select.get("whiten"):
        x = fit_space(moments(x), whiten=bool(select.get("whiten")), eps=float(select["whiten_eps"])).apply(x)
    return x


def decoded_texts(run_dir: str, ids: np.ndarray, kind: str) -> list[str]:
    """The training sequences' text, in the order of `ids`, decoded with the run's tokenizer."""
    prepare = U.join(run_dir, "prepare")
    tok = load_tokenizer(str(U.local_dir(U.join(prepare, PrepareOutputs.TOKENIZER))), kind=kind)
    seq_ids, tokens = read_sequences(U.join(prepare, PrepareOutputs.SEQUENCES))
    rows = rows_of(ids, seq_ids, where=f"{prepare}/{PrepareOutputs.SEQUENCES}")
    return tok.batch_decode([tokens[r].tolist() for r in rows], skip_special_tokens=True)


def judge_space(x: np.ndarray, cats: np.ndarray, groups: np.ndarray, k: int) -> dict:
    """Recall@k of near-duplicates, kNN purity and the AUC against clean text, for one space."""
    nbrs = neighbours(x, k)
    return {
        "dim": int(x.shape[1]),
        "near_duplicate_recall": near_duplicate_recall(nbrs, groups, cats == COPY),
        "knn_purity": knn_purity(nbrs, cats),
        "clean_similarity_auc": clean_similarity_auc(x, cats, CLEAN) if (cats == CLEAN).sum() >= 2 else {},
    }


def drawn(partitions: list[tuple[np.ndarray, np.ndarray]], budget: int, seed: int, temperature: float) -> np.ndarray:
    """One INGENIOUS draw (draw 0) from partitions of (ids in greedy order, gains) at a temperature."""
    probs = [(ids, taylor_softmax(gains, temperature)) for ids, gains in partitions]
    return draw_subset(probs, budget, seed=seed, draw=0)


def run_subsets(run_dir: str, budget: int, seed: int, temperatures: list[float]) -> tuple[dict, bool | None]:
    """The select stage's subsets, its partitions' greedy orders merged by gain (top budget), and draws at
    each temperature; and whether the draw at temperature 1 is the stage's subset_ingenious (None: no file)."""
    select = U.join(run_dir, "select")
    out: dict[str, np.ndarray] = {}
    for name in SelectOutputs.SUBSET_SCHEMAS:
        path = U.join(select, SelectOutputs.subset(name))
        if U.is_file(path):
            t = read_table(path)
            if "draw" in t.column_names:  # one importance-sampling draw: the first
                t = t.filter(pc.equal(t.column("draw"), pc.min(t.column("draw"))))
            out[f"select:{name}"] = t.column("sequence_id").to_numpy()
    probs_file = U.join(select, SelectOutputs.PROBABILITIES)
    if not U.is_file(probs_file):
        return out, None
    t = read_table(probs_file).sort_by([("shard", "ascending"), ("rank", "ascending")])
    shard, ids, gains = (t.column(c).to_numpy() for c in ("shard", "sequence_id", "gain"))
    cuts = np.flatnonzero(np.diff(shard)) + 1
    partitions = list(zip(np.split(ids, cuts), np.split(gains, cuts)))
    out["greedy top-k"] = ids[np.lexsort((t.column("rank").to_numpy(), shard, -gains))[:budget]]
    for temp in temperatures:
        out[f"ingenious T={temp:g}"] = drawn(partitions, budget, seed, temp)
    same = None
    if "select:ingenious" in out:
        same = bool(np.array_equal(drawn(partitions, budget, seed, 1.0), out["select:ingenious"]))
    return out, same


def lexical_subsets(ids: np.ndarray, x: np.ndarray, select: dict, budget: int, temperatures: list[float]) -> dict:
    """Greedy facility location on the lexical space (one partition, its kNN graph): the top budget of
    the greedy order and draws at each temperature."""
    order = order_shard(ids, x, int(select["knn_k"]))
    out = {"greedy top-k": order.sequence_ids[:budget]}
    for temp in temperatures:
        out[f"ingenious T={temp:g}"] = drawn([(order.sequence_ids, order.gains)], budget, int(select["seed"]), temp)
    return out


def diagnose(run_dir: str, pool_dir: str, *, k: int = 10, temperatures: tuple[float, ...] = (1.0, 0.1, 0.01)) -> dict:
    """Every diagnostic of the run's space and of the lexical space (see the module docstring)."""
    start = clock = time.perf_counter()
    seconds: dict[str, float] = {}
    cfg = run_config(run_dir)
    select = cfg["select"]
    ids, cats, groups = sequence_groups(U.join(run_dir, "prepare"), U.join(pool_dir, POOL_FILE))
    budget = round(float(select["fraction"]) * len(ids))
    if budget < 1:
        raise ValueError(f"{run_dir}: select.fraction={select['fraction']} of {len(ids)} sequences selects nothing")
    spaces = {RUN: run_embeddings(run_dir, ids, select)}
    seconds["read"], clock = time.perf_counter() - clock, time.perf_counter()
    texts = decoded_texts(run_dir, ids, cfg["model"]["kind"])
    spaces[LEXICAL] = lexical_embeddings(texts, LexicalParams())
    seconds["lexical space"], clock = time.perf_counter() - clock, time.perf_counter()
    report = {"run_dir": run_dir, "pool": pool_dir, "k": k, "sequences": len(ids), "budget": budget}
    report["pool_composition"] = {c: v["pool"] for c, v in composition(ids, ids, cats).items()}
    report["groups"] = {"grouped": int((groups >= 0).sum()), "groups": int(len(np.unique(groups[groups >= 0])))}
    report["spaces"] = {name: judge_space(x, cats, groups, k) for name, x in spaces.items()}
    seconds["neighbours"], clock = time.perf_counter() - clock, time.perf_counter()
    run_sets, same = run_subsets(run_dir, budget, int(select["seed"]), list(temperatures))
    lex_sets = lexical_subsets(ids, spaces[LEXICAL], select, budget, list(temperatures))
    for name, subsets in ((RUN, run_sets), (LEXICAL, lex_sets)):
        report["spaces"][name]["subsets"] = {
            s: {c: v["subset"] for c, v in composition(sub, ids, cats).items()} for s, sub in subsets.items()
        }
    report["select_draw_reproduced"] = same
    seconds["subsets"] = time.perf_counter() - clock
    report["seconds"] = {**seconds, "total": time.perf_counter() - start}
    return report


def markdown(report: dict) -> str:
    """A short table of the report: the spaces side by side, then what each selection keeps."""
    k, spaces = report["k"], report["spaces"]
    names = list(spaces)
    lines = [f"## Embedding-space diagnostics ({report['sequences']} sequences, k = {k})", ""]
    lines += ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    recall = [spaces[n]["near_duplicate_recall"] for n in names]
    lines.append(
        f"| near-duplicate recall@{k} (n = {recall[0]['queries']}) | "
        + " | ".join(_num(r["recall"]) for r in recall)
        + " |"
    )
    for c in report["pool_composition"]:
        lines.append(f"| kNN purity: {c} | " + " | ".join(_num(spaces[n]["knn_purity"].get(c)) for n in names) + " |")
    for c in spaces[names[0]]["clean_similarity_auc"]:
        auc = [_num(spaces[n]["clean_similarity_auc"].get(c)) for n in names]
        lines.append(f"| AUC vs clean: {c} | " + " | ".join(auc) + " |")
    cats = list(report["pool_composition"])
    lines += ["", f"Share of each category in a subset of {report['budget']} sequences:", ""]
    lines += ["| space | subset | " + " | ".join(cats) + " |", "|---|---|" + "---|" * len(cats)]
    lines.append("| | pool | " + " | ".join(_pct(report["pool_composition"][c]) for c in cats) + " |")
    for n in names:
        for s, shares in spaces[n].get("subsets", {}).items():
            lines.append(f"| {n} | {s} | " + " | ".join(_pct(shares.get(c, 0.0)) for c in cats) + " |")
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def json_ready(value):
    """The report with NaN as null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {key: json_ready(v) for key, v in value.items()}
    return None if isinstance(value, float) and value != value else value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, help="a pipeline run directory with prepare/ and embed/")
    parser.add_argument("--pool", required=True, help="the pool folder (pool.jsonl.gz) the run's corpus came from")
    parser.add_argument("--k", type=int, default=10, help="neighbours per item (default 10)")
    parser.add_argument("--temperatures", default="1,0.1,0.01", help="INGENIOUS draws' temperatures (comma list)")
    parser.add_argument("--out", help="JSON file to write (the markdown goes beside it, .md)")
    args = parser.parse_args(argv)
    temperatures = tuple(float(t) for t in args.temperatures.split(",") if t.strip())
    report = json_ready(diagnose(args.run_dir, args.pool, k=args.k, temperatures=temperatures))
    table = markdown(report)
    if args.out:
        U.write_text(args.out, json.dumps(report, indent=1) + "\n")
        suffix = Path(args.out).suffix
        U.write_text((args.out[: -len(suffix)] if suffix else args.out) + ".md", table)
    print(table)


if __name__ == "__main__":
    main()
