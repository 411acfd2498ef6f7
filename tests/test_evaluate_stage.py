"""The evaluate stage on a run directory it finds only by its URI string: models, tokenizer and
held-out shards read where they are, metrics and downstream results written there, each task on
the device it reserved (here: none, so the CPU)."""

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from dataio import uri as U
from dataio.rundir import RunDir, write_parquet
from jobs.config import load_config
from jobs.stages.base import Context
from jobs.stages.evaluate import Evaluate
from tests.conftest import write_sst2
from training.model import build_model
from training.tokenizer import train_tokenizer

pytestmark = pytest.mark.integration
CONFIG = """
name: eval
model: {{kind: bert, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, seq_len: 32}}
embed: {{layer: -1}}
evaluate: {{max_sequences: 10, external: ["{external}"],
           downstream: {{tasks: [sst2], data_dir: "{glue}", seeds: [0], epochs: 1, max_train_examples: 32}}}}
"""


def test_evaluate_stage_reads_and_writes_the_run_directory_by_uri(ray_cluster, tmp_path):
    external = tmp_path / "wiki.valid.txt"
    external.write_text("The history of Rome begins in the eighth century BC. " * 20)
    (tmp_path / "eval.yaml").write_text(CONFIG.format(external=external, glue=write_sst2(tmp_path / "glue")))
    cfg = load_config(tmp_path / "eval.yaml")
    run = RunDir(str(tmp_path / "run"))
    words = ["the", "history", "of", "rome", "begins", "in", "eighth", "century", "bc"]
    tok = train_tokenizer(words * 10, kind="bert", vocab_size=120, out_dir=U.join(run.root, "prepare", "tokenizer"))
    for stage in ("warmstart", "train"):
        folder = U.join(run.root, stage, "model")
        torch.manual_seed(len(stage))
        build_model(cfg.model, vocab_size=len(tok), pad_id=tok.pad_token_id).save_pretrained(folder)
        tok.save_pretrained(folder)
    rng = np.random.default_rng(0)
    seqs = [[tok.cls_token_id, *rng.integers(5, len(tok), 20).tolist(), tok.sep_token_id] for _ in range(15)]
    write_parquet(
        pa.table({"sequence_id": pa.array(np.arange(15, 0, -1), pa.int64()), "input_ids": seqs}),
        U.join(run.root, "prepare", "heldout", "part-00000.parquet"),
    )

    summary = Evaluate().run(Context(cfg, run), U.join(run.root, "evaluate"))

    metrics = json.loads(U.read_text(U.join(run.root, "evaluate", "metrics.json")))
    assert metrics == summary["results"]
    assert sorted(metrics) == ["train/heldout", "train/wiki.valid", "warmstart/heldout", "warmstart/wiki.valid"]
    assert all(m["device"] == "cpu" and m["loss"] > 0 for m in metrics.values())
    assert metrics["train/heldout"]["sequences"] == 10  # evaluate.max_sequences of the 15
    rows = [json.loads(line) for line in U.read_text(U.join(run.root, "evaluate", "downstream.jsonl")).splitlines()]
    assert [(r["model"], r["task"], r["device"]) for r in rows] == [
        ("warmstart", "sst2", "cpu"),
        ("train", "sst2", "cpu"),
    ]
    assert U.read_text(U.join(run.root, "evaluate", "downstream.md")) == summary["downstream"] + "\n"
