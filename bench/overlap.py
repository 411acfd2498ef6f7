"""What re-selection beside training costs in wall-clock: the same T steps with K re-selections, three ways.

    python -m bench.overlap [--steps 240] [--every 60] [--documents 300]

1. none: INGENIOUS draws every R steps from the probabilities selected once (no re-embedding);
2. sync: the pool re-embedded and re-selected from the model at each switch (lead 0: the trainers wait);
3. concurrent: the same, from the snapshot R steps ahead (lead R), on the re-selection's own resources.

Ray gets 2 CPUs in every arm: the trainer 1, re-selection the other (idle in `none`). Each arm trains a
copy of one run directory prepared up to select, and is timed over its whole train stage (Ray Train's
start included, the same in every arm). Results: bench/results/overlap/overlap.json and overlap.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import date
from itertools import islice
from pathlib import Path

import ray

from dataio.corpus import BUILTIN_WIKI, read_documents
from jobs.config import PipelineConfig, load_config
from jobs.pipeline import run_pipeline
from training.reselect import ReselectConfig

RESULTS = Path(__file__).resolve().parent / "results" / "overlap"
CONFIG = """
name: overlap
model: {{kind: bert, hidden_size: 128, num_layers: 4, num_heads: 4, intermediate_size: 256, seq_len: 128}}
corpus: {{source: {corpus}}}
prepare: {{vocab_size: 2000, documents_per_shard: 200, heldout_fraction: 0.05}}
warmstart: {{steps: 10, global_batch_size: 16, warmup_steps: 2, checkpoint_every: 10}}
embed: {{layer: -1, batch_size: 32, num_actors: 1, use_gpu: false}}
select: {{fraction: 0.25, num_partitions: 2, knn_k: 10}}
train: {{steps: {steps}, global_batch_size: 16, warmup_steps: 2, redraw_every: {every}, checkpoint_every: {steps},
        use_gpu: false}}
"""


def arms(cfg: PipelineConfig, every: int) -> dict[str, PipelineConfig]:
    def reselect(lead: int) -> PipelineConfig:
        rc = ReselectConfig(lead=lead, num_actors=1, cpus_per_actor=1, use_gpu=False)
        return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, reselect=rc))

    return {"none": cfg, "sync": reselect(0), "concurrent": reselect(every)}


def timed_train(cfg: PipelineConfig, selected: Path, to: Path) -> float:
    shutil.copytree(selected, to)
    start = time.perf_counter()
    run_pipeline(cfg, to, only=["train"])
    return time.perf_counter() - start


def write_results(result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "overlap.json").write_text(json.dumps(result, indent=2) + "\n")
    s = result["seconds"]
    (RESULTS / "overlap.md").write_text(
        f"# bench.overlap, {result['date']}, {result['machine']}\n\n"
        f"{result['steps']} steps, a draw every {result['every']} ({result['reselections']} re-selections), "
        f"pool of {result['documents']} documents; trainer 1 CPU, re-selection 1 CPU.\n\n"
        "| arm | wall-clock s | / none |\n|---|---:|---:|\n"
        + "".join(f"| {arm} | {s[arm]:.1f} | {s[arm] / s['none']:.2f} |\n" for arm in s)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--every", type=int, default=60)
    parser.add_argument("--documents", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus = root / "corpus.jsonl"
        corpus.write_text(
            "".join(
                json.dumps({"id": d.doc_id, "text": d.text}) + "\n"
                for d in islice(read_documents(BUILTIN_WIKI), args.documents)
            )
        )
        (root / "overlap.yaml").write_text(CONFIG.format(corpus=corpus, steps=args.steps, every=args.every))
        cfg = load_config(root / "overlap.yaml")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        run_pipeline(cfg, root / "selected", only=["prepare", "warmstart", "embed", "select"])
        seconds = {arm: timed_train(c, root / "selected", root / arm) for arm, c in arms(cfg, args.every).items()}
        ray.shutdown()
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU",
        "steps": args.steps,
        "every": args.every,
        "reselections": -(-args.steps // args.every) - 1,
        "documents": args.documents,
        "seconds": seconds,
        "ratio": seconds["concurrent"] / seconds["none"],
    }
    write_results(result)
    print(
        f"overlap: none_s={seconds['none']:.1f} sync_s={seconds['sync']:.1f} "
        f"concurrent_s={seconds['concurrent']:.1f} ratio={result['ratio']:.3f}"
    )


if __name__ == "__main__":
    main()
