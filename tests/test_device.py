"""GPU paths right by construction, checked where no GPU is: a task computes on a GPU only when it
reserved one, kNN takes the device its caller names, FAISS indexes reach the GPU only where faiss
has GPU support and come back to the CPU for serialising. The GPU-only checks run where one is."""

import numpy as np
import pytest
import torch

from selection.knn import (
    KnnParams,
    build_index,
    faiss_has_gpu,
    index_device,
    index_to_cpu,
    knn_graph,
    knn_search,
    normalize_embeddings,
    search_index,
)
from training.device import device_name, task_device

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


@pytest.mark.skipif(faiss_has_gpu(), reason="this faiss sees a GPU: the GPU test below covers it")
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
