"""SemDeDup and D4 (selection/dedup.py) against dense NumPy references on small clustered data."""

import numpy as np
import pytest

from selection.dedup import (
    dedup_to_ratio,
    earlier_max_similarity,
    prune_prototypical,
    score_cluster,
    semdedup_keep,
    semdedup_subset,
)
from selection.knn import normalize_embeddings
from selection.partition import nearest_centroid, spherical_kmeans


def clustered(seed: int = 0, clusters: int = 4, per: int = 60, d: int = 16, twins: int = 40):
    """Unit rows around `clusters` centres, with `twins` planted near-duplicates (a copy of a row with
    a tiny perturbation: cosine > 0.999 to it), ids shuffled and sparse."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    labels = np.repeat(np.arange(clusters), per)
    x = centres[labels] + 0.6 * rng.normal(size=(len(labels), d))
    src = rng.choice(len(x), twins, replace=False)
    x = np.concatenate([x, x[src] + 1e-3 * rng.normal(size=(twins, d))])
    labels = np.concatenate([labels, labels[src]])
    ids = rng.choice(10**9, len(x), replace=False).astype(np.int64)
    return ids, normalize_embeddings(x), labels


def semdedup_reference(ids: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference code's rule, densely: sort by similarity to the centroid ascending (keep_hard),
    M_j = max over i < j of sim(i, j) from the strict upper triangle; (ids in order, M)."""
    centroid = x.astype(np.float64).sum(axis=0)
    centroid /= np.linalg.norm(centroid)
    order = np.lexsort((ids, x @ centroid.astype(np.float32)))
    xs = x[order].astype(np.float64)
    sims = np.triu(xs @ xs.T, k=1)
    sims[np.tril_indices(len(xs))] = -np.inf
    return ids[order], sims.max(axis=0)


def d4_reference(ids, x, labels, keep_ratio, budget, num_clusters, seed):
    """D4 in one process from the dense SemDeDup reference: keep the lowest duplicate scores (ties by
    id), re-cluster them (spherical k-means, rows in id order), keep the budget farthest from their centroid."""
    all_ids, all_scores = [], []
    for c in np.unique(labels):
        i, m = semdedup_reference(ids[labels == c], x[labels == c])
        all_ids.append(i)
        all_scores.append(m)
    all_ids, all_scores = np.concatenate(all_ids), np.concatenate(all_scores)
    kept = all_ids[np.lexsort((all_ids, all_scores))[: round(keep_ratio * len(ids))]]
    kept = np.sort(kept)
    kx = x[[np.flatnonzero(ids == k)[0] for k in kept]]
    centroids = spherical_kmeans(kx, num_clusters, seed=seed)
    sims = (kx @ centroids.T)[np.arange(len(kept)), nearest_centroid(kx, centroids)]
    return kept[np.lexsort((kept, sims))[:budget]]


@pytest.mark.parametrize("block", [1, 7, 64, 4096])
def test_earlier_max_similarity_equals_the_dense_reference(block):
    ids, x, _ = clustered()
    _, reference = semdedup_reference(np.arange(len(x)), x)  # any order will do: compare on the same order
    order = np.lexsort((np.arange(len(x)), x @ (x.sum(0) / np.linalg.norm(x.sum(0)))))
    got = earlier_max_similarity(x[order], block=block)
    assert got[0] == -np.inf and np.isinf(reference[0])
    np.testing.assert_allclose(got[1:], reference[1:], atol=2e-6)


def test_semdedup_per_cluster_equals_the_reference_and_drops_the_planted_twins():
    ids, x, labels = clustered()
    dropped = 0
    for c in np.unique(labels):
        scores = score_cluster(ids[labels == c], x[labels == c])
        ref_ids, ref_m = semdedup_reference(ids[labels == c], x[labels == c])
        assert scores.sequence_ids.tolist() == ref_ids.tolist()
        assert np.all(np.diff(scores.centroid_similarity) >= 0)  # least prototypical first
        np.testing.assert_allclose(scores.duplicate_score[1:], ref_m[1:], atol=2e-6)
        for t in (0.5, 0.9, 0.95, 0.999):
            assert semdedup_keep(scores.duplicate_score, t).tolist() == (ref_m <= t).tolist()
        dropped += int((~semdedup_keep(scores.duplicate_score, 0.99)).sum())
    assert dropped == 40  # exactly one of each planted pair goes (no natural pair is that close)


def test_semdedup_keeps_the_twin_least_similar_to_the_centroid():
    x = normalize_embeddings(np.array([[1.0, 0.0], [1.0, 0.3], [1.0, 0.301], [1.0, -0.2]], np.float32))
    ids = np.array([10, 11, 12, 13])
    scores = score_cluster(ids, x)
    kept = scores.sequence_ids[semdedup_keep(scores.duplicate_score, 0.99999)]
    # 11 and 12 are twins; 12 is the farther from the centroid, so SemDeDup keeps 12 and drops 11.
    assert 12 in kept and 11 not in kept and len(kept) == 3


def test_semdedup_budget():
    kept = np.array([9, 3, 7, 1, 5], np.int64)
    assert semdedup_subset(kept, 10, seed=0).tolist() == [1, 3, 5, 7, 9]  # fewer than the budget: all
    a, b = semdedup_subset(kept, 3, seed=4), semdedup_subset(kept[::-1], 3, seed=4)
    assert a.tolist() == b.tolist() and len(a) == 3 and set(a) <= set(kept)  # seeded, order-free
    assert np.all(np.diff(a) > 0)


def test_dedup_to_ratio_and_prune_prototypical():
    ids = np.array([5, 1, 4, 2, 3])
    scores = np.array([0.9, -np.inf, 0.5, 0.5, 0.99], np.float32)
    kept, threshold = dedup_to_ratio(ids, scores, 3)
    assert kept.tolist() == [1, 2, 4] and threshold == 0.5  # the tie at 0.5 broken by id
    sims = np.array([0.1, 0.3, 0.1, 0.9, 0.2], np.float32)
    assert ids[prune_prototypical(ids, sims, 3)].tolist() == [4, 5, 3]
    with pytest.raises(ValueError, match="cannot keep 6 of 5"):
        prune_prototypical(ids, sims, 6)


def test_d4_from_the_pieces_equals_the_reference():
    ids, x, labels = clustered(seed=3)
    keep_ratio, budget, k, seed = 0.75, 50, 5, 7
    scored = [score_cluster(ids[labels == c], x[labels == c]) for c in np.unique(labels)]
    all_ids = np.concatenate([s.sequence_ids for s in scored])
    kept, _ = dedup_to_ratio(all_ids, np.concatenate([s.duplicate_score for s in scored]), round(0.75 * len(ids)))
    kept = np.sort(kept)
    kx = x[[np.flatnonzero(ids == i)[0] for i in kept]]
    centroids = spherical_kmeans(kx, k, seed=seed)
    sims = (kx @ centroids.T)[np.arange(len(kept)), nearest_centroid(kx, centroids)]
    got = kept[prune_prototypical(kept, sims, budget)]
    assert got.tolist() == d4_reference(ids, x, labels, keep_ratio, budget, k, seed).tolist()


def test_bad_threshold():
    for t in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"select.dedup_threshold must be in \(0, 1\]"):
            semdedup_keep(np.zeros(3, np.float32), t)
    with pytest.raises(ValueError, match="as many ids as rows"):
        score_cluster(np.arange(3), np.ones((2, 4), np.float32))


# Configuration and the train side of the fixed subsets.


@pytest.mark.parametrize(
    "change, message",
    [
        ({"dedup_threshold": 0.0}, r"select.dedup_threshold must be in \(0, 1\], got 0.0"),
        ({"dedup_threshold": 1.01}, r"select.dedup_threshold must be in \(0, 1\], got 1.01"),
        ({"d4_dedup_keep": 0.0}, r"select.d4_dedup_keep must be in \(0, 1\], got 0.0"),
        ({"d4_clusters": 0}, r"select.d4_clusters must be >= 1 or null, got 0"),
        ({"whiten_eps": 0.0}, r"select.whiten_eps must be > 0, got 0.0"),
        ({"also": ["best"]}, r"select.also entries must be among"),
    ],
)
def test_select_config_rejects_bad_values(change, message):
    from jobs.config import SelectConfig

    with pytest.raises(ValueError, match=message):
        SelectConfig(**change)


def test_pipeline_config_cross_checks():
    from jobs.config import PipelineConfig, SelectConfig
    from training.loop import TrainConfig

    with pytest.raises(ValueError, match=r"semdedup and d4 .* set select.partition: cluster"):
        PipelineConfig(select=SelectConfig(strategy="semdedup", also=["d4"], partition="random"))
    with pytest.raises(ValueError, match=r"d4 .* set select.partition: cluster"):
        PipelineConfig(select=SelectConfig(partition="random"), train=TrainConfig(subset="d4"))
    with pytest.raises(ValueError, match=r"select.d4_dedup_keep=0.2 keeps less than the budget"):
        PipelineConfig(select=SelectConfig(fraction=0.25, d4_dedup_keep=0.2, also=["d4"]))
    PipelineConfig(select=SelectConfig(fraction=0.25, d4_dedup_keep=0.2))  # D4 unused: no check
    cfg = PipelineConfig(select=SelectConfig(strategy="semdedup", also=["greedi"]), train=TrainConfig(subset="d4"))
    assert cfg.fixed_subsets() == {"semdedup", "d4", "greedi"} and cfg.dedup_subsets() == ["semdedup", "d4"]
    assert cfg.runs_greedi_merge()
    assert PipelineConfig().fixed_subsets() == set() and not PipelineConfig().runs_greedi_merge()
    with pytest.raises(ValueError, match="subset_file is for subset 'file' and it needs one"):
        TrainConfig(subset="file")
    with pytest.raises(ValueError, match="subset_file is for subset 'file' and it needs one"):
        TrainConfig(subset="d4", subset_file="x.parquet")


def test_load_config_reads_the_new_keys(tmp_path):
    from jobs.config import load_config

    (tmp_path / "ids.parquet").write_bytes(b"")
    path = tmp_path / "c.yaml"
    path.write_text(
        "select: {strategy: d4, also: [semdedup], center: true, dedup_threshold: 0.9}\n"
        "train: {subset: file, subset_file: ids.parquet}\n"
    )
    cfg = load_config(path, base=tmp_path)
    assert (
        cfg.select.also == ["semdedup"] and cfg.select.center and cfg.train.subset_file == str(tmp_path / "ids.parquet")
    )
    path.write_text("select: {also: [perplexty]}\n")
    with pytest.raises(ValueError, match=r"'select.also' must be one of greedi, semdedup, d4, perplexity"):
        load_config(path)


@pytest.mark.parametrize("mode", ["greedi", "semdedup", "d4", "perplexity", "file"])
def test_every_fixed_subset_trains_on_its_ids(mode, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from training.selection_io import fixed_subset_ids
    from training.subsets import draw_function

    pool = np.array([40, 10, 30, 20], np.int64)
    path = tmp_path / (f"subset_{mode}.parquet" if mode != "file" else "mine.parquet")
    pq.write_table(pa.table({"sequence_id": pa.array([30, 40], pa.int64())}), path)
    fixed = fixed_subset_ids(mode, tmp_path, str(path) if mode == "file" else None)
    draws = draw_function(mode, pool, budget=1, seed=0, fixed_ids=fixed)
    assert draws(0).tolist() == draws(5).tolist() == [2, 0]  # the pool rows of 30 and 40, every draw
    assert fixed_subset_ids("ingenious", tmp_path) is None and fixed_subset_ids("random", tmp_path) is None


def test_fixed_subset_errors(tmp_path):
    from training.selection_io import fixed_subset_ids
    from training.subsets import draw_function

    pool = np.array([1, 2, 3], np.int64)
    assert fixed_subset_ids("d4", tmp_path) is None  # not written: the draw function says who writes it
    with pytest.raises(ValueError, match=r"subset 'd4' needs its fixed subset \(select/subset_d4.parquet\)"):
        draw_function("d4", pool, budget=1, seed=0, fixed_ids=None)
    with pytest.raises(ValueError, match=r"train.subset_file '.*nothing.parquet' does not exist"):
        fixed_subset_ids("file", tmp_path, str(tmp_path / "nothing.parquet"))
    with pytest.raises(ValueError, match=r"1 sequence ids are not in the training pool \(train.subset_file\)"):
        draw_function("file", pool, budget=1, seed=0, fixed_ids=np.array([2, 99]))
    with pytest.raises(ValueError, match=r"train.subset_file lists a sequence id more than once"):
        draw_function("file", pool, budget=1, seed=0, fixed_ids=np.array([2, 2]))
