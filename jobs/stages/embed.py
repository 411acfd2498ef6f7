"""embed: every training sequence -> one vector, by a pool of Embedder actors, one shard per call.

Output shards mirror prepare's (embed/part-i.parquet for sequences/part-i.parquet), so a resumed
run embeds only the shards that have no output yet. An Embedder whose process dies mid-shard is
restarted and the shard retried (actors/embedder.py), so one lost actor does not fail the stage.
"""

from __future__ import annotations

import numpy as np
from ray.util import ActorPool

from actors.embedder import Embedder
from actors.monitor import track
from dataio import uri as U
from dataio.configfile import result_settings
from dataio.contracts import PrepareOutputs, TrainOutputs
from dataio.rundir import read_ids, shard_files
from jobs.config import PipelineConfig
from jobs.stages.base import Context, Stage


def pooling_for(cfg: PipelineConfig, *, from_warmstart: bool) -> str:
    """auto: the last token of GPT-2 (a causal model's summary of the sequence), else the mean."""
    if cfg.embed.pooling != "auto":
        return cfg.embed.pooling
    return "last" if (from_warmstart and cfg.model.kind == "gpt2") else "mean"


def embed_files(
    cfg: PipelineConfig, *, encoder: str, from_warmstart: bool, tokenizer: str, todo: list[str], out: str, gpu: bool
) -> list[dict]:
    """Embed each sequences shard in `todo` into out/<same name>, with a pool of Embedder actors."""
    pooling = pooling_for(cfg, from_warmstart=from_warmstart)
    if not todo:
        return []
    actors = [
        Embedder.options(num_cpus=cfg.embed.cpus_per_actor, num_gpus=1 if gpu else 0).remote(
            encoder,
            pooling=pooling,
            layer=cfg.embed.layer,
            batch_size=cfg.embed.batch_size,
            run_tokenizer=tokenizer,
            kind=cfg.model.kind,
            retokenize=not from_warmstart,
            sequence_loss=cfg.embed.sequence_loss,
            seed=cfg.embed.seed,
        )
        for _ in range(min(cfg.embed.num_actors, len(todo)))
    ]
    pool = ActorPool(actors)
    results = pool.map_unordered(lambda a, f: a.embed_shard.remote(f, U.join(out, U.name(f))), todo)
    return list(track(results, len(todo), "embed", "shards"))


class Embed(Stage):
    name = "embed"
    needs = ("warmstart",)

    def settings(self, cfg: PipelineConfig) -> dict:
        return {"embed": result_settings(cfg.embed)}

    def run(self, ctx: Context, out: str) -> dict:
        cfg = ctx.cfg
        from_warmstart = cfg.embed.encoder == "warmstart"
        encoder = U.join(ctx.stage("warmstart"), TrainOutputs.MODEL) if from_warmstart else cfg.embed.encoder
        inputs = shard_files(U.join(ctx.stage("prepare"), PrepareOutputs.SEQUENCES))
        todo = [f for f in inputs if not U.exists(U.join(out, U.name(f)))]
        gpu = ctx.use_gpu(cfg.embed.use_gpu)
        results = embed_files(
            cfg,
            encoder=encoder,
            from_warmstart=from_warmstart,
            tokenizer=U.join(ctx.stage("prepare"), PrepareOutputs.TOKENIZER),
            todo=todo,
            out=out,
            gpu=gpu,
        )
        pooling = pooling_for(cfg, from_warmstart=from_warmstart)
        dims = {r["dim"] for r in results}
        return {
            "shards": len(inputs),
            "embedded_now": len(todo),
            "sequences_embedded_now": sum(r["sequences"] for r in results),
            "dim": dims.pop() if len(dims) == 1 else None,
            "encoder": encoder,
            "pooling": pooling,
            "layer": cfg.embed.layer,
            "gpu": gpu,
            "sequence_loss": cfg.embed.sequence_loss,
            "written": f"part-*.parquet (sequence_id, embedding{', loss' if cfg.embed.sequence_loss else ''})",
        }

    def verify(self, ctx: Context, out: str, summary: dict) -> None:
        """Every sequences shard has its embedding shard, with the same sequence ids."""
        for f in shard_files(U.join(ctx.stage("prepare"), PrepareOutputs.SEQUENCES)):
            target = U.join(out, U.name(f))
            if not U.exists(target):
                raise ValueError(f"{target} is missing: {f} was not embedded")
            want = read_ids(f)
            got = read_ids(target)
            if not np.array_equal(want, got):
                raise ValueError(f"{target} holds {len(got)} embeddings for the {len(want)} sequences of {f}")
