"""Selection benchmark: speed against submodlib and apricot, and what distribution costs in quality.

    python -m bench.selection --quick          # under 5 minutes on 2 cores
    python -m bench.selection                  # the full grid (n = 10k and 50k, k = 10 and 50)
    python -m bench.selection --embeddings runs/default/embed   # on a run's real embeddings
    python -m bench.scale --n 1000000          # 25% of 1M embeddings through the Ray select stage

Part 1 times greedy facility location on one kNN graph (built once, shared by every optimizer,
symmetrised because submodlib's sparse mode symmetrises whatever it is given) and evaluates every
optimizer's subset with one objective. Part 2 measures the share of central greedy's advantage
over a random subset that each distributed design keeps, with the objective over all n points.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from bench.common import clustered_embeddings, markdown_table, measure, write_result
from dataio.rundir import read_embeddings, shard_files
from selection.facility_location import FacilityLocation
from selection.greedy import lazy_greedy
from selection.knn import (
    KnnGraph,
    KnnParams,
    knn_graph,
    knn_recall,
    normalize_embeddings,
)
from selection.merge import candidate_count, candidate_graph, merge_by_gain, merge_select
from selection.partition import nearest_centroid, random_partition, spherical_kmeans
from selection.shard import order_shard


def compare_optimizers(
    n: int, k: int, fraction: float, *, with_submodlib: bool, slow_repeats: int, x: np.ndarray | None = None
) -> dict:
    x = clustered_embeddings(n, seed=n + k) if x is None else x
    graph, graph_s, _ = measure(lambda: knn_graph(x, k), repeats=1)
    sym = graph.matrix.maximum(graph.matrix.T).tocsr()
    objective = FacilityLocation(KnnGraph(sym))
    budget = round(fraction * n)
    (ours, _), ours_s, ours_mb = measure(lambda: lazy_greedy(objective, budget), repeats=5)
    row = {
        "n": n,
        "k": k,
        "budget": budget,
        "graph_s": graph_s,
        "ours_s": ours_s,
        "ours_mb": ours_mb,
        "ours_f": objective.evaluate(ours),
    }
    import submodlib

    def run_submodlib(mode: str):
        kwargs = (
            {"sijs": sym, "num_neighbors": k} if mode == "sparse" else {"sijs": sym.toarray(), "separate_rep": False}
        )
        fn = submodlib.FacilityLocationFunction(n=n, mode=mode, **kwargs)
        return [j for j, _ in fn.maximize(budget=budget, optimizer="LazyGreedy", show_progress=False)]

    # submodlib's sparse LazyGreedy loops over all n points per gain: over 1500 s at n = 50k (issue 3),
    # and its dense mode holds the kernel twice (20 GB at 50k). Past 10k only apricot runs.
    modes = ["sparse", "dense"] if with_submodlib else []
    for mode in modes:
        chosen, secs, mb = measure(lambda: run_submodlib(mode), repeats=slow_repeats)
        row.update(
            {f"submodlib_{mode}_s": secs, f"submodlib_{mode}_mb": mb, f"submodlib_{mode}_f": objective.evaluate(chosen)}
        )
    try:
        from apricot import FacilityLocationSelection
    except ImportError:  # the `bench` extra brings it; without it the row says so
        row["apricot"] = "not installed"
        return row
    # apricot reads a precomputed similarity as X[candidate, point]: hand it the transpose.
    chosen, secs, mb = measure(
        lambda: FacilityLocationSelection(budget, metric="precomputed", optimizer="lazy").fit(sym.T.tocsr()).ranking,
        repeats=slow_repeats,
    )
    row.update({"apricot_s": secs, "apricot_mb": mb, "apricot_f": objective.evaluate(chosen)})
    return row


def comparison_table(rows: list[dict]) -> str:
    """Greedy facility location on one kNN graph (seconds are medians; memory is peak extra RSS)."""

    def cell(r: dict, name: str) -> str:
        s = r.get(f"{name}_s")
        return "-" if s is None else f"{s:.2f} ({s / r['ours_s']:.0f}x)"

    def ratio(r: dict, name: str) -> str:
        return "-" if f"{name}_f" not in r else f"{r['ours_f'] / r[f'{name}_f']:.5f}"

    header = [
        "n",
        "k",
        "budget",
        "graph s",
        "ours s",
        "submodlib sparse s (x)",
        "submodlib dense s (x)",
        "apricot s (x)",
        "f ours/submodlib",
        "f ours/apricot",
    ]
    cells = [
        [
            r["n"],
            r["k"],
            r["budget"],
            f"{r['graph_s']:.2f}",
            f"{r['ours_s']:.4f}",
            cell(r, "submodlib_sparse"),
            cell(r, "submodlib_dense"),
            cell(r, "apricot"),
            ratio(r, "submodlib_sparse"),
            ratio(r, "apricot"),
        ]
        for r in rows
    ]
    table = "## Greedy facility location on one kNN graph (medians; x = baseline s / ours s)\n\n"
    table += markdown_table(header, cells)
    print("\n" + table, flush=True)
    return table


def local_solution(
    parts: np.ndarray, x: np.ndarray, k: int, budget: int
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Per-partition greedy orders, the union of each partition's budget-share prefix, every point's
    k-th neighbour similarity in its partition's graph (the merge's edge floor), and the subset of
    the merge by gain (greedy on the union of the partitions' objectives)."""
    orders, gains, thresholds = [], [], np.zeros(len(x), dtype=np.float32)
    for p in np.unique(parts):
        result = order_shard(np.flatnonzero(parts == p), x[parts == p], k)
        orders.append(result.sequence_ids)
        gains.append(result.gains)
        thresholds[result.sequence_ids] = result.kth_similarity
    share = [o[: math.ceil(len(o) * budget / len(x))] for o in orders]
    by_gain = np.concatenate(orders)[merge_by_gain(np.concatenate(orders), np.concatenate(gains), budget)]
    return orders, np.concatenate(share)[:budget], thresholds, by_gain


def merged_solution(
    orders: list[np.ndarray], x: np.ndarray, k: int, budget: int, oversample: float, thresholds: np.ndarray | None
) -> np.ndarray:
    """The merge round over every point; `thresholds` None is the merge before it had edge floors."""
    candidates = np.sort(np.concatenate([o[: candidate_count(len(o), budget, len(x), oversample)] for o in orders]))
    cand = x[candidates]
    blocks = [
        (
            np.arange(s, min(s + 20000, len(x))),
            candidate_graph(
                x[s : s + 20000], cand, k, thresholds=None if thresholds is None else thresholds[s : s + 20000]
            ),
        )
        for s in range(0, len(x), 20000)
    ]
    order, _, _ = merge_select(blocks, min(budget, len(candidates)))
    return candidates[order]


def knn_methods(n: int, k: int) -> tuple[list[dict], str]:
    x = clustered_embeddings(n, seed=3)
    _, exact_s, exact_mb = measure(lambda: knn_graph(x, k), repeats=1)
    rows = [{"method": "exact (FAISS flat)", "seconds": exact_s, "recall": 1.0, "peak_mb": exact_mb}]
    for method in ("torch", "ivf", "hnsw"):
        graph, secs, mb = measure(lambda: knn_graph(x, k, KnnParams(method=method, device="cpu")), repeats=1)
        rows.append({"method": method, "seconds": secs, "recall": knn_recall(x, graph, k), "peak_mb": mb})
    table = f"## kNN graph build at n={n}, d={x.shape[1]}, k={k} (recall on 1000 sampled rows)\n\n" + markdown_table(
        ["method", "seconds", "x exact", "recall", "peak MB"],
        [
            [
                r["method"],
                f"{r['seconds']:.2f}",
                f"{exact_s / r['seconds']:.2f}",
                f"{r['recall']:.3f}",
                f"{r['peak_mb']:.0f}",
            ]
            for r in rows
        ],
    )
    print("\n" + table, flush=True)
    return rows, table


def dense_objective(x: np.ndarray, subset: np.ndarray, rows: np.ndarray) -> float:
    """f(S) with the dense cosine kernel (every pair, floored at 0), estimated on a fixed sample of
    points: each sampled point's exact best similarity to S, scaled to all n points."""
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x[np.asarray(subset)])
    best, _ = index.search(x[rows], 1)
    return float(np.clip(best, 0.0, None).sum()) * len(x) / len(rows)


def distributed_quality(
    n: int, k: int, fraction: float, partitions: list[int], sample: int = 20_000, x: np.ndarray | None = None
) -> tuple[dict, str]:
    x = clustered_embeddings(n, seed=7) if x is None else x
    budget = round(fraction * n)
    rows_sample = np.random.default_rng(1).choice(n, size=min(sample, n), replace=False)
    graph, graph_s, _ = measure(lambda: knn_graph(x, k), repeats=1)
    full = FacilityLocation(graph)
    (central, _), central_s, _ = measure(lambda: lazy_greedy(full, budget), repeats=1)
    rng = np.random.default_rng(0)
    randoms = [rng.choice(n, budget, replace=False) for _ in range(3)]
    base = {
        "knn": float(np.mean([full.evaluate(r) for r in randoms])),
        "dense": float(np.mean([dense_objective(x, r, rows_sample) for r in randoms])),
    }
    top = {"knn": full.evaluate(central), "dense": dense_objective(x, central, rows_sample)}
    rows = []

    def add(design: str, subset: np.ndarray, seconds: float) -> None:
        f = {"knn": full.evaluate(subset), "dense": dense_objective(x, subset, rows_sample)}
        kept = {m: (f[m] - base[m]) / (top[m] - base[m]) for m in f}
        rows.append(
            {
                "design": design,
                "kept": kept["dense"],
                "kept_knn": kept["knn"],
                "seconds": seconds,
                "ratio": f["dense"] / top["dense"],
            }
        )

    add("central exact greedy", central, graph_s + central_s)
    add("random subset", randoms[0], 0.0)
    for p in partitions:
        for kind in ("random", "cluster"):

            def shards() -> np.ndarray:
                if kind == "random":
                    return random_partition(np.arange(n), p, seed=0)
                fit = x[np.random.default_rng(0).choice(n, min(n, 100_000), replace=False)]
                return nearest_centroid(x, spherical_kmeans(fit, p, seed=0))

            parts, part_s, _ = measure(shards, repeats=1)
            (orders, local, floors, by_gain), local_s, _ = measure(
                lambda: local_solution(parts, x, k, budget), repeats=1
            )
            add(f"{kind} shards P={p}, no merge", local, part_s + local_s)
            add(f"{kind} shards P={p} + merge by gain (partitions' objectives)", by_gain, part_s + local_s)
            merged, merge_s, _ = measure(lambda: merged_solution(orders, x, k, budget, 2.0, None), repeats=1)
            add(f"{kind} shards P={p} + merge, no edge floor (before issue 15)", merged, part_s + local_s + merge_s)
            merged, merge_s, _ = measure(lambda: merged_solution(orders, x, k, budget, 2.0, floors), repeats=1)
            add(f"{kind} shards P={p} + merge over all points, edges floored", merged, part_s + local_s + merge_s)
    params = KnnParams(method="ivf", nprobe=16)
    approx, approx_s, _ = measure(lambda: knn_graph(x, k, params), repeats=1)
    (order, _), greedy_s, _ = measure(lambda: lazy_greedy(FacilityLocation(approx), budget), repeats=1)
    add(
        f"global IVF graph (recall {knn_recall(x, approx, k, sample=500):.3f}) + central greedy",
        order,
        approx_s + greedy_s,
    )
    table = (
        f"## Distributed selection at n={n}, k={k}, budget {budget}: share of central greedy's advantage kept\n\n"
        f"advantage kept = (f(S) - f(random)) / (f(central greedy) - f(random)). Main column: f with the dense "
        f"cosine kernel over all n points, estimated on a fixed sample of {len(rows_sample)} points; "
        f"second column: f on the exact k={k} graph that central greedy optimises. "
        f"A random subset reaches {base['dense'] / top['dense']:.4f} of central greedy's dense f.\n\n"
    ) + markdown_table(
        ["design", "advantage kept (dense f)", "advantage kept (kNN f)", "f / f(central)", "seconds"],
        [
            [r["design"], f"{r['kept']:.3f}", f"{r['kept_knn']:.3f}", f"{r['ratio']:.4f}", f"{r['seconds']:.1f}"]
            for r in rows
        ],
    )
    print("\n" + table, flush=True)
    return {"n": n, "k": k, "budget": budget, "random_dense_ratio": base["dense"] / top["dense"], "rows": rows}, table


def real_embeddings(folder: Path) -> None:
    """Both comparisons on a run's real sequence embeddings (all of them, k = 10 and 20, 25%)."""
    _, emb = read_embeddings(shard_files(folder))
    x = normalize_embeddings(emb)
    print(f"real embeddings from {folder}: n={len(x)}, d={x.shape[1]}")
    rows = [compare_optimizers(len(x), 10, 0.25, with_submodlib=True, slow_repeats=3, x=x)]
    quality, quality_md = distributed_quality(len(x), 20, 0.25, [4, 8], x=x)
    payload = {"embeddings": str(folder), "n": len(x), "d": int(x.shape[1]), "optimizers": rows, "quality": quality}
    write_result("selection", payload, comparison_table(rows) + "\n\n" + quality_md, form="embeddings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small grid, under 5 minutes on 2 cores")
    parser.add_argument("--embeddings", help="an embed/ folder of a run: benchmark on those real embeddings")
    parser.add_argument(
        "--merge-quality",
        type=int,
        nargs="*",
        metavar="P",
        help="only the distributed-selection table at n = 100k, for these partition counts",
    )
    args = parser.parse_args()
    if args.embeddings:
        real_embeddings(Path(args.embeddings))
        return
    if args.merge_quality:
        quality, table = distributed_quality(100_000, 20, 0.25, args.merge_quality)
        write_result("selection", {"quality": quality}, table, form="merge-quality")
        return
    grid = (
        [(10_000, 10, 0.10)]
        if args.quick
        else [(n, k, f) for n in (10_000, 50_000) for k in (10, 50) for f in (0.10, 0.25)]
    )
    rows = [
        compare_optimizers(n, k, f, with_submodlib=n <= 10_000, slow_repeats=1 if args.quick else 3) for n, k, f in grid
    ]
    tables = [comparison_table(rows)]
    knn_rows, knn_md = knn_methods(20_000 if args.quick else 100_000, 20)
    quality, quality_md = distributed_quality(100_000, 20, 0.25, [8] if args.quick else [4, 8, 16])
    first = rows[0]
    default = next(r for r in quality["rows"] if r["design"].startswith("cluster shards P=8, no merge"))
    summary = {
        "speedup_vs_submodlib": first["submodlib_sparse_s"] / first["ours_s"],
        "objective_ratio": first["ours_f"] / first["submodlib_sparse_f"],
        "advantage_kept": default["kept"],
    }
    line = " ".join(f"{k}={v:.5f}" if k == "objective_ratio" else f"{k}={v:.3f}" for k, v in summary.items())
    print(f"\n{line}")
    payload = {"summary": summary, "optimizers": rows, "knn": knn_rows, "quality": quality}
    write_result(
        "selection",
        payload,
        "\n\n".join([f"Summary: `{line}`", *tables, knn_md, quality_md]),
        form="quick" if args.quick else "full",
    )


if __name__ == "__main__":
    main()
