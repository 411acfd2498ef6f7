"""Sparse kNN similarity graphs for facility location.

Similarity is cosine, computed as an inner product on L2-normalised vectors and floored at 0
(facility location needs non-negative similarities). Each query point keeps its k most similar
base points, so a dense n x n kernel is never built. Queries run in blocks to bound memory.

Methods: `exact` (FAISS flat index), `ivf` and `hnsw` (approximate FAISS indexes; check them
with `knn_recall`), and `torch` (blocked matmul + top-k, exact).

Device: `KnnParams.device` is where the caller may compute: the select stage's kNN tasks set it
from the GPU Ray granted them (actors/device.py), `cpu` without one (a visible GPU is not a reserved
one: see training/device.py). With `cuda`, `torch` runs on the GPU, and flat and IVF indexes go to
the GPU when the installed faiss has GPU support (the faiss-gpu wheel); otherwise they stay on the
CPU with the same results. IVF cells are trained on the CPU (seeded k-means on a sample: cheap), so
the cells are the same on either device. A GPU index cannot be serialised: `index_to_cpu` first.

The `torch` method sizes its query blocks from the device's free memory (a fixed budget on the
CPU), keeps each block's top-k on the device and copies the whole result to the host once. With
`precision` tf32 or bf16 it searches in that precision for 2k candidates and re-ranks them with
exact fp32 inner products, so the similarities returned are exact and the neighbours those of an
exact search unless a true neighbour fell outside the candidates (measure with `knn_recall`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:  # FAISS is imported where an index is built: a GPU box may have torch but no FAISS
    import faiss
    import torch

KnnMethod = Literal["exact", "ivf", "hnsw", "torch"]
METHODS: tuple[str, ...] = get_args(KnnMethod)
DEVICES = ("cpu", "cuda")
GPU_INDEXES = ("exact", "ivf", "torch")  # methods whose FAISS index has a GPU form (torch's merge index is flat)
KnnPrecision = Literal["fp32", "tf32", "bf16"]  # the torch method's search precision (re-ranked in fp32 when lower)
PRECISIONS: tuple[str, ...] = get_args(KnnPrecision)
CPU_BLOCK_BYTES = 2**28  # the torch method's block on the CPU: 256 MB of similarities, as it has always been
GPU_FREE_SHARE = 0.5  # of the free device memory for one block: the rest for the allocator and other kernels


def normalize_embeddings(x: np.ndarray, where: str = "embeddings") -> np.ndarray:
    """Return float32, L2-normalised rows; reject NaN/inf and zero vectors with a clear error."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{where}: expected a non-empty 2-D array, got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} rows contain NaN or inf (first at row {int(np.argmax(bad))})")
    norms = np.linalg.norm(x, axis=1)
    zero = norms == 0
    if zero.any():
        raise ValueError(f"{where}: {int(zero.sum())} rows have zero norm (first at row {int(np.argmax(zero))})")
    return x / norms[:, None]


@dataclass(frozen=True)
class KnnGraph:
    """Row i holds the k base points j nearest to point i, with similarity s_ij >= 0 (CSR).

    Square (n x n) for a shard's own graph; rectangular (points x candidates) for a merge."""

    matrix: sp.csr_matrix

    def reverse(self) -> sp.csc_matrix:
        """Column j lists the points i that have j among their neighbours: what adding j can cover."""
        return self.matrix.tocsc()


@dataclass(kw_only=True, frozen=True)
class KnnParams:
    method: str = "exact"
    nlist: int | None = None  # IVF cells; default 2 * sqrt(n)
    nprobe: int = 16  # IVF cells visited per query
    hnsw_m: int = 32
    ef_search: int = 128
    query_block: int = 16384
    device: str = "cpu"  # cpu, or cuda when the caller reserved a GPU
    precision: KnnPrecision = "fp32"  # torch method only: tf32/bf16 search a candidate set, re-ranked in fp32

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"knn method must be one of {METHODS}, got {self.method!r}")
        if self.device not in DEVICES:
            raise ValueError(f"knn device must be one of {DEVICES}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"knn precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.precision != "fp32" and self.method != "torch":
            raise ValueError(f"knn precision {self.precision!r} is the torch method's; method is {self.method!r}")
        if self.query_block < 1:
            raise ValueError(f"knn query_block must be >= 1, got {self.query_block}")


def knn_search(
    queries: np.ndarray, base: np.ndarray, k: int, params: KnnParams = KnnParams()
) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices), each (len(queries), k): the k most similar base rows per query.

    Both inputs must already be L2-normalised float32. Missing neighbours (approximate indexes
    can return fewer than k) come back with index -1 and similarity 0.
    """
    if queries.shape[1] != base.shape[1]:
        raise ValueError(f"dimension mismatch: queries have {queries.shape[1]}, base has {base.shape[1]}")
    if not 1 <= k <= len(base):
        raise ValueError(f"knn k={k} must be in [1, {len(base)}] (the number of base points)")
    if params.method == "torch":
        return _torch_search(queries, base, k, params)
    return search_index(build_index(base, params), queries, k, params.query_block)


def search_index(
    index: faiss.Index, queries: np.ndarray, k: int, query_block: int = 16384
) -> tuple[np.ndarray, np.ndarray]:
    """Search a built FAISS index in blocks of queries (bounded memory)."""
    if queries.shape[1] != index.d:
        raise ValueError(f"dimension mismatch: queries have {queries.shape[1]}, the index has {index.d}")
    sims = np.empty((len(queries), k), dtype=np.float32)
    nbrs = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), query_block):
        d, i = index.search(queries[start : start + query_block], k)
        sims[start : start + query_block], nbrs[start : start + query_block] = d, i
    sims[nbrs < 0] = 0.0
    return sims, nbrs


def faiss_has_gpu() -> bool:
    """Whether the installed faiss can put an index on a GPU (a GPU build on a node with a GPU)."""
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def index_device(params: KnnParams) -> str:
    """Where build_index puts the index for these params: `cuda` or `cpu`."""
    on_gpu = params.device == "cuda" and params.method in GPU_INDEXES and faiss_has_gpu()
    return "cuda" if on_gpu else "cpu"


@lru_cache(maxsize=1)
def _gpu_resources() -> faiss.StandardGpuResources:
    import faiss

    return faiss.StandardGpuResources()  # one per process: it holds the GPU's scratch memory


def index_to_gpu(index: faiss.Index) -> faiss.Index:
    """A GPU copy of a CPU flat or IVF index, on the first GPU this process sees (Ray narrows the
    visible GPUs to the reserved ones)."""
    import faiss

    return faiss.index_cpu_to_gpu(_gpu_resources(), 0, index)


def index_on(index: faiss.Index, device: str) -> faiss.Index:
    """A CPU index moved to the GPU when `device` is cuda, faiss has GPU support and the index has a
    GPU form (flat, IVF flat); otherwise the index as it is."""
    import faiss

    movable = isinstance(index, (faiss.IndexFlat, faiss.IndexIVFFlat))
    return index_to_gpu(index) if device == "cuda" and movable and faiss_has_gpu() else index


def index_to_cpu(index: faiss.Index) -> faiss.Index:
    """A CPU copy of a GPU index (what faiss.serialize_index needs); a CPU index as it is."""
    import faiss

    if hasattr(faiss, "GpuIndex") and isinstance(index, faiss.GpuIndex):
        return faiss.index_gpu_to_cpu(index)
    return index


def build_index(base: np.ndarray, params: KnnParams) -> faiss.Index:
    """A FAISS index over normalised base vectors (`torch` gets an exact flat index here), on the
    device `index_device(params)` names."""
    import faiss

    d = base.shape[1]
    on_gpu = index_device(params) == "cuda"
    if params.method in ("exact", "torch"):
        index = faiss.IndexFlatIP(d)
    elif params.method == "hnsw":
        index = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = params.ef_search
    else:
        nlist = params.nlist or max(1, min(len(base) // 39, int(2 * math.sqrt(len(base)))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = 1234  # FAISS k-means is seeded: the same data gives the same cells
        index.cp.max_points_per_centroid = 39  # train on a sample (FAISS warns below 39): cells need not be perfect
        index.train(base)
        index.nprobe = min(params.nprobe, nlist)  # copied to the GPU index with the trained cells
    if on_gpu:
        index = index_to_gpu(index)
    index.add(base)
    return index


def block_rows(row_bytes: int, budget_bytes: int, cap: int) -> int:
    """Queries per block of the torch search: as many as keep a block's working memory (`row_bytes` a
    query) within `budget_bytes`, at most `cap`, at least 1."""
    return max(1, min(cap, budget_bytes // row_bytes))


def _block_budget(device: torch.device, base_bytes: int) -> int:
    """Bytes one block may use: a share of the device's free memory beyond the base, or the CPU's fixed budget."""
    import torch

    if device.type != "cuda":
        return CPU_BLOCK_BYTES
    free, _ = torch.cuda.mem_get_info(device)
    return int(GPU_FREE_SHARE * max(0, free - base_bytes))


def _torch_search(queries: np.ndarray, base: np.ndarray, k: int, params: KnnParams) -> tuple[np.ndarray, np.ndarray]:
    import torch

    if params.device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"knn device 'cuda' was asked for, but torch {torch.__version__} sees no CUDA device")
    device = torch.device(params.device)
    b = torch.from_numpy(base).to(device)
    rerank = params.precision != "fp32"
    candidates = min(len(base), 2 * k) if rerank else k
    b_low = b.to(torch.bfloat16) if params.precision == "bf16" else b
    # A query's float32 similarities to every base row, and with re-ranking its candidates' vectors.
    row_bytes = 4 * len(base) + (4 * candidates * base.shape[1] if rerank else 0)
    base_bytes = b.nbytes + (b_low.nbytes if b_low is not b else 0)
    block = block_rows(row_bytes, _block_budget(device, base_bytes), params.query_block)
    sims = torch.empty((len(queries), k), dtype=torch.float32, device=device)
    nbrs = torch.empty((len(queries), k), dtype=torch.int64, device=device)
    search = "high" if params.precision == "tf32" else "highest"  # torch's name for TF32 matmuls is `high`
    for start in range(0, len(queries), block):
        q = torch.from_numpy(queries[start : start + block]).to(device)
        with _matmul_precision(search):
            top = torch.topk(q.to(b_low.dtype) @ b_low.T, candidates, dim=1)
        s, i = _rerank(q, b, top.indices, k) if rerank else (top.values, top.indices)
        sims[start : start + len(q)], nbrs[start : start + len(q)] = s, i
    return sims.cpu().numpy(), nbrs.cpu().numpy()  # one copy to the host


def _rerank(q: torch.Tensor, base: torch.Tensor, candidates: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k of each query's candidates with the highest exact (fp32) inner products, in order."""
    import torch

    with _matmul_precision("highest"):
        exact = torch.einsum("qd,qcd->qc", q, base[candidates])
    top = torch.topk(exact, k, dim=1)
    return top.values, torch.gather(candidates, 1, top.indices)


@contextmanager
def _matmul_precision(level: str) -> Iterator[None]:
    """torch's float32 matmul precision for a block of code, restored after (a process-wide setting)."""
    import torch

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(level)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def to_graph(sims: np.ndarray, nbrs: np.ndarray, num_base: int) -> KnnGraph:
    """A CSR graph from search results, similarities floored at 0, missing neighbours dropped."""
    n, k = sims.shape
    sims = np.clip(sims, 0.0, 1.0)
    valid = nbrs >= 0
    indptr = np.concatenate([[0], np.cumsum(valid.sum(axis=1))])
    matrix = sp.csr_matrix((sims[valid], nbrs[valid], indptr), shape=(n, num_base))
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    return KnnGraph(matrix)


def knn_graph(x: np.ndarray, k: int, params: KnnParams = KnnParams()) -> KnnGraph:
    """A shard's own kNN graph (every point among its own neighbours, s_ii = 1)."""
    if k > len(x):
        raise ValueError(f"knn k={k} is larger than the shard ({len(x)} points)")
    xn = normalize_embeddings(x)
    sims, nbrs = knn_search(xn, xn, k, params)
    # A point is always its own best facility; a search can miss it among exact duplicates.
    rows = np.arange(len(x))
    has_self = (nbrs == rows[:, None]).any(axis=1)
    nbrs[~has_self, -1] = rows[~has_self]
    sims[~has_self, -1] = 1.0
    return to_graph(sims, nbrs, len(x))


def knn_recall(x: np.ndarray, graph: KnnGraph, k: int, *, sample: int = 1000, seed: int = 0) -> float:
    """Share of the exact k nearest neighbours that an (approximate) graph found, on a sample of rows."""
    xn = normalize_embeddings(x)
    rows = np.random.default_rng(seed).choice(len(xn), size=min(sample, len(xn)), replace=False)
    _, exact = knn_search(xn[rows], xn, k)
    found = 0
    for r, truth in zip(rows, exact):
        found += len(
            set(truth.tolist())
            & set(graph.matrix.indices[graph.matrix.indptr[r] : graph.matrix.indptr[r + 1]].tolist())
        )
    return found / (len(rows) * k)


def dense_graph(x: np.ndarray) -> KnnGraph:
    """Every pair (k = n): the reference kernel for small inputs and cross-checks."""
    xn = normalize_embeddings(x)
    return KnnGraph(sp.csr_matrix(np.clip(xn @ xn.T, 0.0, None)))
