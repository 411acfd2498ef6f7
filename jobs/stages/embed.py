"""embed: every training sequence -> one vector, by a pool of Embedder actors, one shard per call.

Output shards mirror prepare's (embed/part-i.parquet for sequences/part-i.parquet), so a resumed
run embeds only the shards that have no output yet. An Embedder whose process dies mid-shard is
restarted and the shard retried (actors/embedder.py), so one lost actor does not fail the stage.
"""

from __future__ import annotations

import numpy as np

from actors.embedder import SHARDS_IN_FLIGHT, Embedder
from actors.lexical import shard_frequencies
from dataio import uri as U
from dataio.configfile import result_settings
from dataio.contracts import PrepareOutputs, TrainOutputs
from dataio.rundir import read_ids, shard_files
from jobs.config import RUN_SPACES, PipelineConfig
from jobs.executor import Executor, Task
from jobs.resources import Resources
from jobs.stages.base import Context, Stage
from selection.lexical import LexicalParams


def pooling_for(cfg: PipelineConfig, *, from_warmstart: bool) -> str:
    """auto: the last token of GPT-2 (a causal model's summary of the sequence), else the mean."""
    if cfg.embed.pooling != "auto":
        return cfg.embed.pooling
    return "last" if (from_warmstart and cfg.model.kind == "gpt2") else "mean"


def embed_resources(cfg: PipelineConfig) -> Resources:
    """Each Embedder actor's share (embed's RESOURCES): its CPUs, a GPU by `use_gpu`, and how many actors."""
    e = cfg.embed
    return Resources(cpus=e.cpus_per_actor, gpus=e.use_gpu, actors=e.num_actors)


def embed_files(
    cfg: PipelineConfig,
    *,
    encoder: str,
    from_warmstart: bool,
    tokenizer: str,
    todo: list[str],
    out: str,
    executor: Executor | None = None,
    lexical: dict | None = None,
    resources: Resources | None = None,
) -> list[dict]:
    """Embed each sequences shard in `todo` not embedded before into out/<same name>, with a pool of
    Embedder actors (one model load serves many shards); in the lexical space with `lexical`
    (lexical_frequencies). `resources`: each actor's (default: the embed section's)."""
    init = {
        "encoder_path": encoder,
        "pooling": pooling_for(cfg, from_warmstart=from_warmstart),
        "layer": cfg.embed.layer,
        "batch_size": cfg.embed.batch_size,
        "run_tokenizer": tokenizer,
        "kind": cfg.model.kind,
        "retokenize": not from_warmstart,
        "sequence_loss": cfg.embed.sequence_loss,
        "seed": cfg.embed.seed,
        **(lexical or {}),
    }
    target = {f: U.join(str(out), U.name(f)) for f in todo}
    tasks = [Task(Embedder, (f, target[f]), outputs=(target[f],)) for f in todo]
    resources = resources or embed_resources(cfg)
    return (executor or Executor()).map_actors(
        Embedder, init, resources, "embed_shard", tasks, "embed", "shards", calls_per_actor=SHARDS_IN_FLIGHT
    )


def lexical_frequencies(executor: Executor, files: list[str], tokenizer: str, kind: str) -> dict:
    """The lexical space's reduce step, as Embedder arguments: the pool's hashed n-gram document
    frequencies (one task per sequences shard, added in shard order) and its sequence count."""
    params = LexicalParams()
    counts = executor.run([Task(shard_frequencies, (f, tokenizer, kind, params)) for f in files])
    df = np.sum([c[0] for c in counts], axis=0)
    return {"lexical_df": executor.put(df), "lexical_documents": sum(c[1] for c in counts), "lexical_params": params}


class Embed(Stage):
    name = "embed"
    needs = ("warmstart",)

    def settings(self, cfg: PipelineConfig) -> dict:
        return {"embed": result_settings(cfg.embed)}

    def resources(self, cfg: PipelineConfig) -> Resources:
        return embed_resources(cfg)

    def run(self, ctx: Context, out: str) -> dict:
        cfg = ctx.cfg
        from_warmstart = cfg.embed.encoder in RUN_SPACES  # the lexical space's loss is the warm start's too
        encoder = U.join(ctx.stage("warmstart"), TrainOutputs.MODEL) if from_warmstart else cfg.embed.encoder
        inputs = shard_files(U.join(ctx.stage("prepare"), PrepareOutputs.SEQUENCES))
        tokenizer = U.join(ctx.stage("prepare"), PrepareOutputs.TOKENIZER)
        lexical = (
            lexical_frequencies(ctx.executor, inputs, tokenizer, cfg.model.kind)
            if cfg.embed.encoder == "lexical" and any(not U.exists(U.join(out, U.name(f))) for f in inputs)
            else None
        )
        results = embed_files(
            cfg,
            encoder=encoder,
            from_warmstart=from_warmstart,
            tokenizer=tokenizer,
            todo=inputs,
            out=out,
            executor=ctx.executor,
            lexical=lexical,
            resources=self.resources(cfg),
        )
        pooling = pooling_for(cfg, from_warmstart=from_warmstart)
        dims = {r["dim"] for r in results}
        return {
            "shards": len(inputs),
            "embedded_now": len(results),
            "sequences_embedded_now": sum(r["sequences"] for r in results),
            "dim": dims.pop() if len(dims) == 1 else None,
            "encoder": "lexical" if cfg.embed.encoder == "lexical" else encoder,
            "pooling": pooling,
            "layer": cfg.embed.layer,
            "gpu": ctx.executor.use_gpu(cfg.embed.use_gpu),
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
