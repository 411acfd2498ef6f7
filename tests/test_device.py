"""GPU paths right by construction, checked where no GPU is: a task computes on a GPU only when it
reserved one, kNN takes the device its caller names, FAISS indexes reach the GPU only where faiss
has GPU support and come back to the CPU for serialising. The GPU-only checks run where one is."""

import numpy as np
import pytest
import torch

from selection.knn import (
    CPU_BLOCK_BYTES,
    KnnParams,
    block_rows,
    build_index,
    faiss_has_gpu,
    index_device,
    index_to_cpu,
    knn_graph,
    knn_search,
    normalize_embeddings,
    search_index,
)
from training.device import choose_device, device_name, task_device

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def test_a_task_without_a_reserved_gpu_computes_on_the_cpu_even_where_cuda_is_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert task_device([]) == torch.device("cpu")
    assert task_device([3]) == torch.device("cuda", 0)  # Ray maps the reserved GPU to index 0
    assert task_device(["GPU-5d1c"]) == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"GPUs \[0\] were reserved on .* sees no CUDA device"):
        task_device([0])
    assert device_name("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'gpu'"):
        device_name("gpu")


def test_the_device_is_the_grant_whatever_is_visible():
    for visible in (True, False):
        assert choose_device([], cuda_available=visible) == "cpu"
    assert choose_device([2], cuda_available=True) == choose_device(["GPU-5d1c", 3], cuda_available=True) == "cuda"
    with pytest.raises(RuntimeError, match=r"GPUs \[1\] were reserved on node-7, but torch .* sees no CUDA device"):
        choose_device([1], cuda_available=False, where="node-7")


def granted(monkeypatch, gpu_ids: list[int]) -> None:
    """This process as a Ray task granted `gpu_ids` would be, on a node where CUDA is usable (nothing
    here runs on it: FAISS without GPU support keeps the index on the CPU)."""
    import ray

    monkeypatch.setattr(ray, "get_gpu_ids", lambda: gpu_ids)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.mark.skipif(faiss_has_gpu(), reason="this faiss has GPU support: the tasks would compute on the GPU")
def test_select_tasks_compute_their_knn_on_the_device_ray_granted(monkeypatch, tmp_path):
    """The partition and merge-index tasks, run in this process as Ray runs them, with and without a grant."""
    from actors.device import granted_device
    from actors.selector import candidate_index, order_partition, scatter_shard
    from dataio.rundir import embedding_table, write_parquet

    ids = np.arange(40, dtype=np.int64) * 3
    emb = np.random.default_rng(4).normal(size=(40, 8)).astype(np.float32)
    write_parquet(embedding_table(ids, emb), str(tmp_path / "embed.parquet"))
    scatter_shard._function(str(tmp_path / "embed.parquet"), np.zeros(40, np.int64), str(tmp_path / "scatter"))
    args = (0, str(tmp_path / "scatter"), 5, KnnParams(), "lazy", 0.01, 0)
    chosen = {}
    for grant in ([], [0]):
        granted(monkeypatch, grant)
        assert granted_device() == (torch.device("cuda", 0) if grant else torch.device("cpu"))
        stats = order_partition._function(*args, str(tmp_path / f"order{len(grant)}.parquet"))
        chosen[len(grant)] = stats["knn_device"]
        assert candidate_index._function([str(tmp_path / "embed.parquet")], ids[:10], KnnParams()).nbytes > 0
    assert chosen == {0: "cpu", 1: "cuda"}
    assert (tmp_path / "order0.parquet").read_bytes() == (tmp_path / "order1.parquet").read_bytes()


@pytest.mark.integration
def test_ray_tasks_get_the_device_of_what_they_reserved(ray_cluster, tmp_path):
    from actors.evaluator import evaluate_checkpoint
    from training.model import ModelConfig, build_model
    from training.tokenizer import train_tokenizer

    @ray_cluster.remote(num_gpus=0)
    def device_of_a_task() -> str:
        return str(task_device(ray_cluster.get_gpu_ids()))

    assert ray_cluster.get(device_of_a_task.remote()) == "cpu"
    words = ["alpha", "beta", "gamma", "delta"]
    tok = train_tokenizer(words * 5, kind="gpt2", vocab_size=80, out_dir=tmp_path / "model")
    cfg = ModelConfig(kind="gpt2", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seq_len=16)
    build_model(cfg, vocab_size=len(tok), pad_id=tok.pad_token_id, eos_id=tok.eos_token_id).save_pretrained(
        tmp_path / "model"
    )
    seqs = [np.asarray(tok("alpha beta gamma delta")["input_ids"][: cfg.seq_len])] * 4
    result = ray_cluster.get(
        evaluate_checkpoint.options(num_gpus=0).remote(
            str(tmp_path / "model"), seqs, model_cfg=cfg, batch_size=2, seed=0
        )
    )
    assert result["device"] == "cpu" and result["sequences"] == 4 and result["loss"] > 0


def test_knn_device_is_the_callers_choice():
    with pytest.raises(ValueError, match=r"knn device must be one of \('cpu', 'cuda'\), got 'auto'"):
        KnnParams(device="auto")
    assert KnnParams().device == "cpu"
    if not torch.cuda.is_available():
        x = normalize_embeddings(np.random.default_rng(0).normal(size=(50, 8)))
        with pytest.raises(ValueError, match="knn device 'cuda' was asked for, but torch .* sees no CUDA device"):
            knn_search(x, x, 3, KnnParams(method="torch", device="cuda"))


def test_torch_knn_blocks_are_sized_by_memory():
    assert block_rows(4 * 1_000_000, CPU_BLOCK_BYTES, 16384) == 67  # the CPU's 256 MB at 1M points
    assert block_rows(4 * 1_000_000, 10 * 2**30, 16384) == 2684  # half of a 24 GB card's free 20 GB
    assert block_rows(4 * 100, 2**40, 16384) == 16384 and block_rows(2**31, 2**20, 16384) == 1
    with pytest.raises(ValueError, match="knn precision 'bf16' is the torch method's; method is 'ivf'"):
        KnnParams(method="ivf", precision="bf16")


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
@pytest.mark.parametrize("query_block", [16384, 7])
def test_torch_knn_equals_the_exact_faiss_search(precision, query_block):
    """The torch path, in blocks and at each search precision (re-ranked exactly), finds the exact
    search's neighbours with its similarities, on the CPU through the code a GPU runs."""
    x = normalize_embeddings(np.random.default_rng(5).normal(size=(600, 24)))
    exact_sims, exact = knn_search(x, x, 8, KnnParams(method="exact"))
    sims, nbrs = knn_search(x, x, 8, KnnParams(method="torch", precision=precision, query_block=query_block))
    assert nbrs.dtype == np.int64 and sims.dtype == np.float32
    np.testing.assert_array_equal(nbrs, exact)
    np.testing.assert_allclose(sims, exact_sims, rtol=0, atol=1e-6)
    graph, reference = knn_graph(x, 8, KnnParams(method="torch", precision=precision)).matrix, knn_graph(x, 8).matrix
    np.testing.assert_array_equal(graph.indices, reference.indices)
    np.testing.assert_allclose(graph.data, reference.data, rtol=0, atol=1e-6)


@pytest.mark.skipif(faiss_has_gpu(), reason="this faiss has GPU support: the GPU test below covers it")
@pytest.mark.parametrize("method", ["exact", "ivf", "hnsw"])
def test_faiss_without_gpu_support_stays_on_the_cpu_with_the_same_graph(method):
    """faiss-cpu (the `cpu` extra), or faiss-gpu (the `gpu` extra) on a machine where it finds no GPU."""
    import faiss

    x = np.random.default_rng(1).normal(size=(3000, 16)).astype(np.float32)
    on_cpu = KnnParams(method=method, nprobe=8)
    asked_gpu = KnnParams(method=method, nprobe=8, device="cuda")
    assert index_device(asked_gpu) == index_device(on_cpu) == "cpu"
    assert (knn_graph(x, 10, asked_gpu).matrix != knn_graph(x, 10, on_cpu).matrix).nnz == 0
    index = build_index(normalize_embeddings(x), asked_gpu)
    assert index_to_cpu(index) is index
    again = faiss.deserialize_index(faiss.serialize_index(index_to_cpu(index)))  # the merge's candidate index
    xn = normalize_embeddings(x[:100])
    np.testing.assert_array_equal(search_index(again, xn, 10)[1], search_index(index, xn, 10)[1])


@gpu
@pytest.mark.skipif(not faiss_has_gpu(), reason="this faiss has no GPU support")
@pytest.mark.parametrize("method", ["exact", "ivf"])
def test_faiss_gpu_index_matches_the_cpu_and_serialises_from_the_cpu(method):
    import faiss

    x = normalize_embeddings(np.random.default_rng(2).normal(size=(5000, 32)))
    params = KnnParams(method=method, nprobe=8, device="cuda")
    assert index_device(params) == "cuda"
    index = build_index(x, params)
    assert isinstance(index, faiss.GpuIndex)
    cpu = index_to_cpu(index)
    assert not isinstance(cpu, faiss.GpuIndex) and cpu.ntotal == len(x)
    restored = faiss.deserialize_index(faiss.serialize_index(cpu))
    on_gpu, on_cpu = search_index(index, x[:500], 10)[1], search_index(restored, x[:500], 10)[1]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(on_gpu, on_cpu)]) > 0.99  # float sums differ in order


@gpu
def test_torch_knn_on_the_gpu_matches_the_cpu():
    x = np.random.default_rng(3).normal(size=(2000, 32)).astype(np.float32)
    on_gpu = knn_graph(x, 10, KnnParams(method="torch", device="cuda")).matrix
    on_cpu = knn_graph(x, 10, KnnParams(method="torch", device="cpu")).matrix
    assert np.mean(on_gpu.indices == on_cpu.indices) > 0.99


def test_gpu_check_script_runs_the_evaluation_and_finetuning_paths_on_the_cpu():
    from bench.gpu import device_paths

    result = device_paths(torch.device("cpu"))
    assert result["finetune_device"] == "cpu" and result["finetune_accuracy"] > 0.9 and result["heldout_loss"] > 0
