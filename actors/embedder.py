"""Ray actor pool that embeds sequence shards with an encoder, on a GPU when the cluster has one.

The warm-started model reads the run's token ids directly. Any other local encoder has its own
vocabulary, so its sequences are decoded with the run's tokenizer and re-encoded with the encoder's.
The lexical space (selection/lexical.py) needs no model: the decoded text is hashed into n-gram
TF-IDF and projected, given the pool's document frequencies; with sequence_loss the warm-started
model is still loaded, for the loss column only.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import ray
import torch
from transformers import AutoTokenizer

from actors.device import granted_cpus, granted_device
from actors.lexical import decoded_texts
from dataio.rundir import embedding_table, read_sequence_file, write_parquet, write_shard_log
from selection.lexical import LexicalParams, embed_texts
from training.embed import embed_batch, embed_with_loss, load_encoder, local_model
from training.model import ModelConfig, Objective
from training.packing import pad_batch
from training.tokenizer import load_tokenizer

# An actor whose process dies (OOM killer, a lost node, a preempted spot instance) is restarted and
# its unfinished shard retried, instead of failing the whole stage. A retry is safe: a shard is a
# pure function of its input, and write_parquet renames a finished file into place, so a half-written
# shard is never taken for done. Exceptions raised by the code itself are not retried: they would
# fail again.
RESTARTS = 3
# The longest input given to another encoder: BERT-family position tables hold 512 tokens, and a
# tokenizer saved without a limit reports model_max_length = 1e30.
ENCODER_MAX_TOKENS = 512


# Shards an actor holds at once: while one computes on the device, the next is read and the last written
# (each call still reads, computes and writes its own shard, so per-shard resume is as before).
SHARDS_IN_FLIGHT = 2


@ray.remote(max_restarts=RESTARTS, max_task_retries=RESTARTS, max_concurrency=SHARDS_IN_FLIGHT)
class Embedder:
    def __init__(
        self,
        encoder_path: str,
        *,
        pooling: str,
        layer: int,
        batch_size: int,
        run_tokenizer: str,
        kind: str,
        retokenize: bool,
        sequence_loss: bool = False,
        seed: int = 0,
        lexical_df: np.ndarray | None = None,
        lexical_documents: int = 0,
        lexical_params: LexicalParams | None = None,
    ):
        """sequence_loss: the model is loaded with its LM head and each sequence's loss is a `loss`
        column beside its embedding (training/embed.py; seeded by `seed`). Only for the run's own model.
        lexical_*: embed in the lexical space instead (the pool's document frequencies and count); the
        model (encoder_path) is then loaded only for sequence_loss."""
        if sequence_loss and retokenize:
            raise ValueError("sequence_loss is the run's own model's loss; another encoder retokenizes the text")
        self.lexical = None if lexical_df is None else (lexical_df, lexical_documents, lexical_params)
        # CUDA only when Ray gave this actor a GPU: a visible GPU may be reserved by another task.
        self.device = granted_device()
        if self.device.type == "cpu":
            torch.set_num_threads(granted_cpus())
        needs_model = self.lexical is None or sequence_loss
        self.model = (
            load_encoder(encoder_path, self.device, lm_head=kind if sequence_loss else None) if needs_model else None
        )
        # In the lexical space the model gives the loss only: any layer's pooling is discarded, so the last.
        self.pooling, self.layer, self.batch_size = pooling, -1 if self.lexical else layer, batch_size
        self.run_tok = load_tokenizer(local_model(run_tokenizer), kind=kind)
        # The evaluation protocol's objective: token-level masking at 15%, no NSP.
        self.objective = (
            Objective.for_model(self.run_tok, ModelConfig(kind=kind), training=False) if sequence_loss else None
        )
        self.seed = seed
        self.compute = threading.Lock()  # one shard on the device at a time: the other reads or writes
        self.enc_tok = AutoTokenizer.from_pretrained(local_model(encoder_path)) if retokenize else None
        self.pad_id = (self.enc_tok or self.run_tok).pad_token_id

    def _encoder_ids(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        if self.enc_tok is None:
            return seqs
        texts = self.run_tok.batch_decode(seqs, skip_special_tokens=True)
        limit = min(ENCODER_MAX_TOKENS, self.enc_tok.model_max_length)
        return [np.asarray(s) for s in self.enc_tok(texts, truncation=True, max_length=limit)["input_ids"]]

    def _table(self, ids: np.ndarray, embeddings: np.ndarray, loss: np.ndarray | None) -> pa.Table:
        table = embedding_table(ids, embeddings)
        return table if self.objective is None else table.append_column("loss", pa.array(loss, pa.float32()))

    def embed_shard(self, sequences_path: str, out_path: str) -> dict:
        start = time.perf_counter()
        ids, seqs = read_sequence_file(sequences_path)  # while another shard computes
        if not len(ids):  # a shard whose documents were all held out or too short
            # every pooling returns a hidden state; the lexical space its projection's width
            dim = self.lexical[2].dim if self.lexical else self.model.config.hidden_size
            write_parquet(self._table(ids, np.empty((0, dim), np.float32), np.empty(0, np.float32)), out_path)
            return {"sequences": 0, "dim": dim, "device": self.device.type}
        queued = time.perf_counter()
        with self.compute:
            start += time.perf_counter() - queued  # the shard's own time, not its wait for the device
            if self.lexical is not None:
                emb = embed_texts(decoded_texts(self.run_tok, seqs), *self.lexical)
                loss = self._model_embeddings(ids, seqs)[1] if self.objective is not None else None
            else:
                emb, loss = self._model_embeddings(ids, self._encoder_ids(seqs))
        write_parquet(self._table(ids, emb, loss), out_path)  # while the next shard computes
        result = {"sequences": len(ids), "dim": int(emb.shape[1]), "device": self.device.type}
        seconds = time.perf_counter() - start
        node = ray.get_runtime_context().get_node_id()  # which node did the work (a lost node's shows)
        write_shard_log(out_path, {**result, "node": node, "seconds": seconds, "sequences_per_s": len(ids) / seconds})
        return result

    def _model_embeddings(self, ids: np.ndarray, seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """(pooled hidden states, each sequence's loss or None) of the model, in the order of `ids`."""
        # Length-sorted batches pad little; the output is keyed by sequence_id, so order is free.
        order = np.argsort([len(s) for s in seqs], kind="stable")
        out, losses = [], []
        for first in range(0, len(order), self.batch_size):
            rows = order[first : first + self.batch_size]
            batch = [seqs[r] for r in rows]
            if self.objective is not None:
                emb, loss = embed_with_loss(
                    self.model,
                    batch,
                    ids[rows],
                    objective=self.objective,
                    pooling=self.pooling,
                    layer=self.layer,
                    seed=self.seed,
                )
                out.append(emb)
                losses.append(loss)
                continue
            input_ids, mask = pad_batch(batch, self.pad_id, max(len(s) for s in batch))
            out.append(embed_batch(self.model, input_ids, mask, pooling=self.pooling, layer=self.layer))
        emb = np.concatenate(out)
        restored = np.empty_like(emb)
        restored[order] = emb
        loss = None
        if losses:
            loss = np.empty(len(ids), np.float32)
            loss[order] = np.concatenate(losses)
        return restored, loss
