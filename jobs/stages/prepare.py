"""prepare: corpus -> tokenizer -> packed sequences with stable ids, in Parquet shards.

Ray tasks tokenize and pack one shard of documents each; a shard whose file exists is not redone.
A corpus on object storage is read by the tasks themselves (each its own segments of the files,
counted first by one task per file); a local one (the driver's disk, the embedded default, a hub
dataset) is read by the driver and shipped. Either way the shards are the same: documents in
corpus order, `documents_per_shard` a shard. Exact duplicate sequences are dropped (first
occurrence kept, train before held-out, so no held-out sequence is also trained on).
"""

from __future__ import annotations

import dataclasses
import tempfile
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa

from actors.prepare import count_file_documents, prepare_shard
from dataio import uri as U
from dataio.configfile import result_settings
from dataio.contracts import PrepareOutputs, shard_name
from dataio.corpus import corpus_files, corpus_snapshot, plan_segments, read_documents
from dataio.rundir import read_ids, read_table, shard_files, write_parquet
from jobs.config import CorpusConfig, PipelineConfig
from jobs.executor import Task
from jobs.resources import Resources
from jobs.stages.base import Context, Stage
from training.embed import local_model
from training.tokenizer import load_tokenizer, train_tokenizer


def corpus_fields(ccfg: CorpusConfig) -> dict:
    return {"text_field": ccfg.text_field, "id_field": ccfg.id_field, "line_documents": ccfg.line_documents}


class Prepare(Stage):
    name = "prepare"

    def settings(self, cfg: PipelineConfig) -> dict:
        # The content, not only the names: a corpus or tokenizer rewritten in place must rerun prepare.
        tokenizer = cfg.prepare.tokenizer
        return {
            "corpus": dataclasses.asdict(cfg.corpus),
            "prepare": result_settings(cfg.prepare),
            "kind": cfg.model.kind,
            "seq_len": cfg.model.seq_len,
            "corpus_content": corpus_snapshot(cfg.corpus.source),
            "tokenizer_content": corpus_snapshot(tokenizer) if tokenizer and U.exists(tokenizer) else None,
        }

    def resources(self, cfg: PipelineConfig) -> Resources:
        return Resources(cpus=cfg.prepare.num_cpus_per_task)

    def plan(self, ctx: Context) -> tuple[list, int, list[str]]:
        """The shards (documents, or corpus segments read by the tasks), the document count and the
        tokenizer's training texts. Reading the corpus here, before the stage's folder is cleared,
        means a bad corpus stops the run with the previous prepare/ intact."""
        pcfg, ccfg = ctx.cfg.prepare, ctx.cfg.corpus
        fields = corpus_fields(ccfg)
        if not U.is_local(ccfg.source):  # read on the nodes: the driver sees only counts and segments
            files = corpus_files(ccfg.source)
            counts = ctx.executor.run(
                [Task(count_file_documents, (f, fields)) for f in files], "prepare: counting", "files"
            )
            shards = plan_segments(
                files, counts, max_documents=ccfg.max_documents, documents_per_shard=pcfg.documents_per_shard
            )
            num_docs = sum(b - a for shard in shards for _, a, b in shard)
            sample = islice(read_documents(ccfg.source, **fields), pcfg.tokenizer_train_documents)
            texts = [d.text for d in sample]
        else:  # read by the driver (the nodes may not see its disk), one shard at a time into the object
            # store, so the driver never holds the corpus whole
            shards, num_docs, texts = [], 0, []
            docs = islice(read_documents(ccfg.source, **fields), ccfg.max_documents)
            while chunk := list(islice(docs, pcfg.documents_per_shard)):
                texts += [d.text for d in chunk[: pcfg.tokenizer_train_documents - len(texts)]]
                shards.append(ctx.executor.put([(d.doc_id, d.text) for d in chunk]))
                num_docs += len(chunk)
        if not num_docs:
            raise ValueError(f"corpus {ccfg.source!r} has no non-empty documents")
        return shards, num_docs, texts

    def run(self, ctx: Context, out: str) -> dict:
        cfg, pcfg, ccfg = ctx.cfg, ctx.cfg.prepare, ctx.cfg.corpus
        fields = corpus_fields(ccfg)
        shards, num_docs, texts = ctx.plan or self.plan(ctx)
        tokenizer_dir = self._tokenizer(cfg, texts, U.join(out, PrepareOutputs.TOKENIZER))
        shard_args = {
            "fields": fields,
            "tokenizer_path": tokenizer_dir,
            "kind": cfg.model.kind,
            "seq_len": cfg.model.seq_len,
            "min_tokens": pcfg.min_tokens,
            "heldout_fraction": pcfg.heldout_fraction,
        }
        tasks = [self._shard_task(shard, i, out, shard_args, self.resources(cfg)) for i, shard in enumerate(shards)]
        prepared_now = sum(r is not None for r in ctx.executor.run(tasks, "prepare", "shards"))
        dropped = drop_duplicates(
            shard_files(U.join(out, PrepareOutputs.SEQUENCES)) + shard_files(U.join(out, PrepareOutputs.HELDOUT))
        )
        train_n = sum(U.parquet_rows(f) for f in shard_files(U.join(out, PrepareOutputs.SEQUENCES)))
        heldout_n = sum(U.parquet_rows(f) for f in shard_files(U.join(out, PrepareOutputs.HELDOUT)))
        if train_n == 0:
            raise ValueError(f"corpus {ccfg.source!r} gave no training sequences (min_tokens={pcfg.min_tokens})")
        return {
            "documents": num_docs,
            "shards": len(shards),
            "shards_prepared_now": prepared_now,
            "sequences": train_n,
            "heldout_sequences": heldout_n,
            "duplicates_dropped": dropped,
            "vocab_size": len(load_tokenizer(str(U.local_dir(tokenizer_dir)), kind=cfg.model.kind)),
            "written": f"{PrepareOutputs.TOKENIZER}/, {PrepareOutputs.SEQUENCES}/, {PrepareOutputs.HELDOUT}/",
        }

    def verify(self, ctx: Context, out: str, summary: dict) -> None:
        for folder in (PrepareOutputs.SEQUENCES, PrepareOutputs.HELDOUT):
            names = {U.name(f) for f in shard_files(U.join(out, folder))}
            expected = {shard_name(i) for i in range(summary["shards"])}
            if names != expected:
                raise ValueError(
                    f"{U.join(out, folder)}: shards {sorted(expected - names)} are missing "
                    f"(and {sorted(names - expected)} unexpected)"
                )

    @staticmethod
    def _shard_task(shard: list, index: int, out: str, shard_args: dict, resources: Resources) -> Task:
        """Tokenize and pack one shard of documents into its training and held-out files."""
        train = U.join(out, PrepareOutputs.SEQUENCES, shard_name(index))
        heldout = U.join(out, PrepareOutputs.HELDOUT, shard_name(index))
        return Task(
            prepare_shard,
            (shard,),
            {**shard_args, "train_path": train, "heldout_path": heldout},
            resources,
            outputs=(train, heldout),
        )

    @staticmethod
    def _tokenizer(cfg: PipelineConfig, texts: list[str], target: str) -> str:
        """The run's own copy of the tokenizer (trained or loaded), written whole: every task loads it
        from the run directory."""
        if U.folder_complete(target):
            return target
        with tempfile.TemporaryDirectory() as tmp:
            if cfg.prepare.tokenizer:
                load_tokenizer(local_model(cfg.prepare.tokenizer), kind=cfg.model.kind).save_pretrained(tmp)
            else:
                train_tokenizer(texts, kind=cfg.model.kind, vocab_size=cfg.prepare.vocab_size, out_dir=Path(tmp))
            U.upload_dir(tmp, target)
        return target


def drop_duplicates(files: list[str]) -> int:
    """Keep each sequence id's first occurrence across `files` (in order); rewrite files that lose rows."""
    seen: set[int] = set()
    dropped = 0
    for file in files:
        ids = read_ids(file)
        keep = np.ones(len(ids), dtype=bool)
        for r, sid in enumerate(ids.tolist()):
            keep[r] = sid not in seen
            seen.add(sid)
        if not keep.all():
            dropped += int((~keep).sum())
            write_parquet(read_table(file).filter(pa.array(keep)), file)
    return dropped
