"""prepare: corpus -> tokenizer -> packed sequences with stable ids, in Parquet shards.

Ray tasks tokenize and pack one shard of documents each; a shard whose file exists is not redone.
Exact duplicate sequences are dropped (first occurrence kept, train before held-out, so no
held-out sequence is also trained on).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa

from actors.prepare import prepare_shard
from dataio.corpus import corpus_snapshot, read_documents
from dataio.rundir import read_table, shard_files, write_parquet
from jobs.config import PipelineConfig
from jobs.monitor import gather
from jobs.stages.base import Context, Stage
from training.tokenizer import load_tokenizer, train_tokenizer


class Prepare(Stage):
    name = "prepare"

    def settings(self, cfg: PipelineConfig) -> dict:
        # The content, not only the names: a corpus or tokenizer rewritten in place must rerun prepare.
        tokenizer = cfg.prepare.tokenizer
        return {"corpus": dataclasses.asdict(cfg.corpus), "prepare": dataclasses.asdict(cfg.prepare),
                "kind": cfg.model.kind, "seq_len": cfg.model.seq_len, "corpus_content": corpus_snapshot(cfg.corpus.source),
                "tokenizer_content": corpus_snapshot(tokenizer) if tokenizer and Path(tokenizer).expanduser().exists() else None}

    def run(self, ctx: Context, out: Path) -> dict:
        cfg, pcfg = ctx.cfg, ctx.cfg.prepare
        docs = list(islice(read_documents(cfg.corpus.source, text_field=cfg.corpus.text_field,
                                          id_field=cfg.corpus.id_field, line_documents=cfg.corpus.line_documents),
                            cfg.corpus.max_documents))
        if not docs:
            raise ValueError(f"corpus {cfg.corpus.source!r} has no non-empty documents")
        tokenizer_dir = self._tokenizer(cfg, [d.text for d in docs], out / "tokenizer")
        pairs = [(d.doc_id, d.text) for d in docs]
        shards = [pairs[i : i + pcfg.documents_per_shard] for i in range(0, len(pairs), pcfg.documents_per_shard)]
        refs = []
        for i, shard in enumerate(shards):
            train_path, heldout_path = out / "sequences" / f"part-{i:05d}.parquet", out / "heldout" / f"part-{i:05d}.parquet"
            if train_path.exists() and heldout_path.exists():
                continue  # finished before an interruption
            refs.append(prepare_shard.options(num_cpus=pcfg.num_cpus_per_task).remote(
                shard, tokenizer_path=str(tokenizer_dir), kind=cfg.model.kind, seq_len=cfg.model.seq_len,
                min_tokens=pcfg.min_tokens, heldout_fraction=pcfg.heldout_fraction,
                train_path=str(train_path), heldout_path=str(heldout_path)))
        gather(refs, "prepare", "shards")
        dropped = drop_duplicates(shard_files(out / "sequences") + shard_files(out / "heldout"))
        train_n = sum(read_table(f, ["sequence_id"]).num_rows for f in shard_files(out / "sequences"))
        heldout_n = sum(read_table(f, ["sequence_id"]).num_rows for f in shard_files(out / "heldout"))
        if train_n == 0:
            raise ValueError(f"corpus {cfg.corpus.source!r} gave no training sequences (min_tokens={pcfg.min_tokens})")
        return {"documents": len(docs), "shards": len(shards), "shards_prepared_now": len(refs), "sequences": train_n, "heldout_sequences": heldout_n,
                "duplicates_dropped": dropped, "vocab_size": len(load_tokenizer(str(tokenizer_dir), kind=cfg.model.kind)),
                "written": "tokenizer/, sequences/, heldout/"}

    @staticmethod
    def _tokenizer(cfg: PipelineConfig, texts: list[str], target: Path) -> Path:
        """The run's own copy of the tokenizer (trained or loaded), written atomically."""
        if target.exists():
            return target
        tmp = target.with_name(".tokenizer.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        if cfg.prepare.tokenizer:
            load_tokenizer(cfg.prepare.tokenizer, kind=cfg.model.kind).save_pretrained(str(tmp))
        else:
            train_tokenizer(texts[: cfg.prepare.tokenizer_train_documents], kind=cfg.model.kind,
                            vocab_size=cfg.prepare.vocab_size, out_dir=tmp)
        os.replace(tmp, target)
        return target


def drop_duplicates(files: list[Path]) -> int:
    """Keep each sequence id's first occurrence across `files` (in order); rewrite files that lose rows."""
    seen: set[int] = set()
    dropped = 0
    for file in files:
        ids = read_table(file, ["sequence_id"]).column("sequence_id").to_numpy()
        keep = np.ones(len(ids), dtype=bool)
        for r, sid in enumerate(ids.tolist()):
            keep[r] = sid not in seen
            seen.add(sid)
        if not keep.all():
            dropped += int((~keep).sum())
            write_parquet(read_table(file).filter(pa.array(keep)), file)
    return dropped
