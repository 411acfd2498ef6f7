"""embed: every training sequence -> one vector, by a pool of Embedder actors, one shard per call.

Output shards mirror prepare's (embed/part-i.parquet for sequences/part-i.parquet), so a resumed
run embeds only the shards that have no output yet. An Embedder whose process dies mid-shard is
restarted and the shard retried (actors/embedder.py), so one lost actor does not fail the stage.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ray.util import ActorPool

from actors.embedder import Embedder
from dataio.rundir import shard_files
from jobs.config import PipelineConfig
from jobs.monitor import track
from jobs.stages.base import Context, Stage


def pooling_for(cfg: PipelineConfig, *, from_warmstart: bool) -> str:
    """auto: the last token of GPT-2 (a causal model's summary of the sequence), else the mean."""
    if cfg.embed.pooling != "auto":
        return cfg.embed.pooling
    return "last" if (from_warmstart and cfg.model.kind == "gpt2") else "mean"


def embed_files(cfg: PipelineConfig, *, encoder: str, from_warmstart: bool, tokenizer: Path, todo: list[Path],
                out: Path, gpu: bool) -> list[dict]:
    """Embed each sequences shard in `todo` into out/<same name>, with a pool of Embedder actors."""
    pooling = pooling_for(cfg, from_warmstart=from_warmstart)
    if not todo:
        return []
    actors = [
        Embedder.options(num_cpus=1, num_gpus=1 if gpu else 0).remote(
            encoder, pooling=pooling, layer=cfg.embed.layer, batch_size=cfg.embed.batch_size,
            run_tokenizer=str(tokenizer), kind=cfg.model.kind, retokenize=not from_warmstart)
        for _ in range(min(cfg.embed.num_actors, len(todo)))
    ]
    pool = ActorPool(actors)
    results = pool.map_unordered(lambda a, f: a.embed_shard.remote(str(f), str(out / f.name)), todo)
    return list(track(results, len(todo), "embed", "shards"))


class Embed(Stage):
    name = "embed"
    needs = ("warmstart",)

    def settings(self, cfg: PipelineConfig) -> dict:
        return {"embed": dataclasses.asdict(cfg.embed)}

    def run(self, ctx: Context, out: Path) -> dict:
        cfg = ctx.cfg
        from_warmstart = cfg.embed.encoder == "warmstart"
        encoder = str(ctx.stage("warmstart") / "model") if from_warmstart else cfg.embed.encoder
        inputs = shard_files(ctx.stage("prepare") / "sequences")
        todo = [f for f in inputs if not (out / f.name).exists()]
        gpu = ctx.use_gpu(cfg.embed.use_gpu)
        results = embed_files(cfg, encoder=encoder, from_warmstart=from_warmstart, tokenizer=ctx.stage("prepare") / "tokenizer",
                              todo=todo, out=out, gpu=gpu)
        pooling = pooling_for(cfg, from_warmstart=from_warmstart)
        dims = {r["dim"] for r in results}
        return {"shards": len(inputs), "embedded_now": len(todo), "sequences_embedded_now": sum(r["sequences"] for r in results),
                "dim": dims.pop() if len(dims) == 1 else None, "encoder": encoder, "pooling": pooling,
                "layer": cfg.embed.layer, "gpu": gpu, "written": "part-*.parquet (sequence_id, embedding)"}
