"""Scheduled corpus refresh: reselect on a new corpus snapshot, embedding only what changed.

    python -m jobs.refresh --previous runs/default --corpus /data/corpus-2026-12.jsonl [--out DIR]

The previous run's tokenizer and warm-started encoder are kept, so an unchanged document gives the
same sequences with the same ids, and their embeddings are copied instead of recomputed; new
sequences are embedded, deleted ones drop out, selection runs again. Each snapshot gets its own
folder, named by hashes of its content and of the settings (`<out>/<snapshot>-<config>/`, default
out: `<previous>/refresh`), holding prepare/, embed/, select/ and diff.json / diff.md: pool and
subset kept/added/dropped, and
the coverage (mean cosine similarity of each pool sequence to its nearest selected one: the
facility-location objective per sequence) before and after. Running it again on the same snapshot
changes nothing. The embedding settings are checked against the previous run's manifest; if they
differ (another encoder, layer or pooling), every sequence is re-embedded, with a message saying so.
The refresh holds the new version folder's lease (dataio/lease.py) for its whole run: a second refresh
of the same snapshot and settings at the same time stops at once, naming the first.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from dataio import uri as U
from dataio.configfile import result_settings
from dataio.contracts import RUN_CONFIG, PrepareOutputs, SelectOutputs, TrainOutputs
from dataio.corpus import corpus_snapshot
from dataio.lease import Lease
from dataio.log import configure, get_logger
from dataio.redact import redact, report_failure
from dataio.rundir import (
    RunDir,
    config_hash,
    embedding_table,
    read_embeddings,
    read_ids,
    read_table,
    shard_files,
    write_parquet,
)
from jobs.config import PipelineConfig, load_config, local_path
from jobs.pipeline import base_dir, connect_ray, run_pipeline, stage_hashes
from jobs.stages import Context
from jobs.stages.embed import embed_files
from selection.facility_location import coverage
from selection.ids import rows_of
from selection.knn import normalize_embeddings

log = get_logger(__name__)


def snapshot_id(cfg: PipelineConfig) -> str:
    """A hash of the corpus content (prepare's fingerprint of its files) and of how it is read: a new
    file at the same path is a new snapshot. Nothing is streamed through the driver for it."""
    return config_hash({"content": corpus_snapshot(cfg.corpus.source), "corpus": dataclasses.asdict(cfg.corpus)})


def subset_ids(select_dir: str) -> np.ndarray:
    """The subset the train stage uses (the configured strategy's, subset.parquet)."""
    return read_ids(U.join(select_dir, SelectOutputs.SUBSET))


def reuse_embeddings(ctx: Context, previous: RunDir, *, reuse: bool) -> dict:
    """version/embed/part-i for each new sequences shard: previous vectors by id, new ones computed."""
    cfg, out = ctx.cfg, ctx.stage("embed")
    old_ids, old_emb = read_embeddings(shard_files(previous.stage("embed"))) if reuse else (np.empty(0, np.int64), None)
    todo_dir, fresh_dir = U.join(out, "todo"), U.join(out, "fresh")
    todo = []
    for shard in shard_files(U.join(ctx.stage("prepare"), PrepareOutputs.SEQUENCES)):
        table = read_table(shard)
        ids = table.column("sequence_id").to_numpy()
        missing = rows_of(ids, old_ids, where="the previous embeddings", missing_ok=True) < 0
        if missing.any() and not U.exists(U.join(fresh_dir, U.name(shard))):
            write_parquet(table.filter(missing), U.join(todo_dir, U.name(shard)))
            todo.append(U.join(todo_dir, U.name(shard)))
    from_warmstart = cfg.embed.encoder == "warmstart"
    encoder = U.join(previous.stage("warmstart"), TrainOutputs.MODEL) if from_warmstart else cfg.embed.encoder
    embed_files(
        cfg,
        encoder=encoder,
        from_warmstart=from_warmstart,
        tokenizer=U.join(ctx.stage("prepare"), PrepareOutputs.TOKENIZER),
        todo=todo,
        out=fresh_dir,
        executor=ctx.executor,
    )
    reused = embedded = 0
    for shard in shard_files(U.join(ctx.stage("prepare"), PrepareOutputs.SEQUENCES)):
        ids = read_ids(shard)
        old_rows = rows_of(ids, old_ids, where="the previous embeddings", missing_ok=True)
        known = old_rows >= 0
        new_ids, new_emb = read_embeddings([U.join(fresh_dir, U.name(shard))]) if not known.all() else (ids[:0], None)
        like = old_emb if old_emb is not None else new_emb
        if like is None:
            continue  # an empty shard, and nothing to reuse: no vectors to write
        vectors = np.empty((len(ids), like.shape[1]), np.float32)
        if known.any():
            vectors[known] = old_emb[old_rows[known]]
        if not known.all():
            vectors[~known] = new_emb[rows_of(ids[~known], new_ids, where=f"the fresh embeddings of {U.name(shard)}")]
        reused, embedded = reused + int(known.sum()), embedded + len(new_ids)
        write_parquet(embedding_table(ids, vectors), U.join(out, U.name(shard)))
    U.delete_tree(todo_dir)  # scratch: the composed shards hold every vector now
    U.delete_tree(fresh_dir)
    return {"reused": reused, "embedded_now": embedded, "written": "part-*.parquet (sequence_id, embedding)"}


def refresh(
    previous_dir: str | Path, corpus: str, *, out: str | Path | None = None, config: str | Path | None = None
) -> dict:
    """`config` (default: the previous run's config.yaml) sets how to embed and select this time.
    Every folder may be local or on object storage. The previous run's lease is held while it is read, so
    no pipeline run rewrites the stages this refresh reuses."""
    previous = RunDir(previous_dir)
    with Lease(previous.root, redact(previous.root)):
        return _refresh_from(previous, corpus, out=out, config=config)


def _refresh_from(previous: RunDir, corpus: str, *, out: str | Path | None, config: str | Path | None) -> dict:
    for stage in ("prepare", "warmstart", "embed", "select"):
        if not previous.has_marker(stage):
            raise ValueError(f"previous run {redact(previous.root)}: stage {stage!r} is not finished")
    old_cfg = load_config(config or previous.path(RUN_CONFIG))
    if old_cfg.embed.encoder == "lexical":  # each vector's idf weights are the whole pool's: none can be reused
        raise ValueError(
            "refresh with embed.encoder: lexical: the lexical space weighs n-grams by the whole pool's document "
            "frequencies, so a new snapshot re-embeds everything; run the pipeline on the snapshot instead"
        )
    cfg = dataclasses.replace(
        old_cfg,
        corpus=dataclasses.replace(old_cfg.corpus, source=local_path(corpus, base_dir())),
        prepare=dataclasses.replace(
            old_cfg.prepare, tokenizer=U.join(previous.stage("prepare"), PrepareOutputs.TOKENIZER)
        ),
    )
    # One folder per (snapshot content, settings): the same pair again finds its diff and stops.
    version = RunDir(
        U.join(
            U.normalize(out) if out else previous.path("refresh"),
            f"{snapshot_id(cfg)}-{stage_hashes(cfg)['select'][:8]}",
        )
    )
    diff = U.read_json(version.path("diff.json"))
    if diff is not None:
        log.info(f"refresh: snapshot already selected in {redact(version.root)}; nothing to do")
        return diff
    with Lease(version.root) as lease:
        version.lease = lease
        done = U.read_json(version.path("diff.json"))  # another refresh finished it meanwhile
        return done if done is not None else _refresh(cfg, previous, version)


def _refresh(cfg: PipelineConfig, previous: RunDir, version: RunDir) -> dict:
    """The refresh of `version`, whose lease the caller holds: prepare, embed (reusing), select, diff."""
    connect_ray(cfg)
    run_pipeline(cfg, version.root, only=["prepare"], lease=version.lease)

    # The embed step, with the pipeline's marker so `select` accepts it and a rerun skips it.
    embed_settings = previous.read_manifest("embed")["config"]["embed"]
    reuse = embed_settings == result_settings(cfg.embed)
    if not reuse:
        log.info(
            f"refresh: embedding settings differ from {previous.stage('embed')} "
            f"({embed_settings} vs {result_settings(cfg.embed)}): re-embedding every sequence"
        )
    digest = stage_hashes(cfg)["embed"]
    if not version.is_done("embed", digest):
        version.begin("embed", digest, {"embed": result_settings(cfg.embed), "reused_from": redact(previous.root)})
        summary = reuse_embeddings(Context(cfg, version), previous, reuse=reuse)
        version.finish("embed", {"summary": summary})
    run_pipeline(cfg, version.root, only=["select"], lease=version.lease)

    diff = diff_report(previous, version)
    version.fence()
    U.write_text(version.path("diff.md"), diff_markdown(diff))
    version.fence()
    U.write_json(version.path("diff.json"), diff)  # written last: it marks the refresh done
    print(diff_markdown(diff), flush=True)
    return diff


def diff_report(previous: RunDir, version: RunDir) -> dict:
    old_ids, old_emb = read_embeddings(shard_files(previous.stage("embed")))
    new_ids, new_emb = read_embeddings(shard_files(version.stage("embed")))
    old_emb, new_emb = normalize_embeddings(old_emb), normalize_embeddings(new_emb)
    old_subset, new_subset = subset_ids(previous.stage("select")), subset_ids(version.stage("select"))
    surviving = old_subset[np.isin(old_subset, new_ids)]
    before, after = "the previous embeddings", "the new embeddings"

    def counts(before: np.ndarray, after: np.ndarray) -> dict:
        kept = int(np.isin(after, before).sum())
        return {
            "before": len(before),
            "after": len(after),
            "kept": kept,
            "added": len(after) - kept,
            "dropped": len(before) - kept,
        }

    draw0 = read_table(U.join(version.stage("select"), SelectOutputs.subset("ingenious")))
    draw0 = draw0.filter(pc.equal(draw0.column("draw"), 0)).column("sequence_id").to_numpy()
    return {
        "previous": redact(previous.root),
        "snapshot": U.name(version.root),
        "embedding": version.read_manifest("embed")["summary"],
        "pool": counts(old_ids, new_ids),
        "subset": counts(old_subset, new_subset),
        "subset_ingenious_draw0": {"size": len(draw0)},
        "coverage": {
            "previous_subset_on_previous_pool": coverage(old_emb, old_emb[rows_of(old_subset, old_ids, where=before)]),
            "previous_subset_on_new_pool": coverage(new_emb, new_emb[rows_of(surviving, new_ids, where=after)]),
            "new_subset_on_new_pool": coverage(new_emb, new_emb[rows_of(new_subset, new_ids, where=after)]),
        },
    }


def diff_markdown(diff: dict) -> str:
    lines = [
        f"# Refresh {diff['snapshot']} (from {diff['previous']})",
        "",
        f"Embeddings: {diff['embedding']['reused']} reused, {diff['embedding']['embedded_now']} computed.",
        "",
        "| | before | after | kept | added | dropped |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("pool", "subset"):
        c = diff[name]
        lines.append(f"| {name} | {c['before']} | {c['after']} | {c['kept']} | {c['added']} | {c['dropped']} |")
    cov = diff["coverage"]
    lines += [
        "",
        "Coverage (mean cosine similarity to the nearest selected sequence):",
        f"previous subset on the previous pool {cov['previous_subset_on_previous_pool']:.4f}; "
        f"what survives of it on the new pool {cov['previous_subset_on_new_pool']:.4f}; "
        f"the new subset on the new pool {cov['new_subset_on_new_pool']:.4f}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.refresh", description=__doc__.splitlines()[0])
    parser.add_argument("--previous", required=True, help="the run directory of the previous selection")
    parser.add_argument("--corpus", required=True, help="the new corpus snapshot (any corpus.source form)")
    parser.add_argument("--out", default=None, help="folder for snapshot versions (default: <previous>/refresh)")
    parser.add_argument(
        "--config", default=None, help="embed/select settings (default: the previous run's config.yaml)"
    )
    args = parser.parse_args(argv)
    configure()
    base = base_dir()
    try:
        refresh(
            local_path(args.previous, base),
            args.corpus,
            out=local_path(args.out, base),
            config=local_path(args.config, base),
        )
    except ValueError as e:
        log.debug("refresh failed", exc_info=True)
        raise SystemExit(f"error: {redact(str(e))}") from None
    except Exception as e:  # a failure inside Ray or a bug: its traceback and last line, redacted
        raise SystemExit(report_failure(e)) from None


if __name__ == "__main__":
    main()
