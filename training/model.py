"""BERT masked-LM and GPT-2 causal-LM models from a size config, randomly initialised or loaded.

The model knows nothing of parallelism: DDP and devices are the launcher's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from training.packing import pad_batch

KINDS = ("bert", "gpt2")


@dataclass(kw_only=True)
class ModelConfig:
    kind: str = "bert"  # bert (masked LM) or gpt2 (causal LM)
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    seq_len: int = 128
    dropout: float = 0.1
    init_from: str | None = None  # a local checkpoint folder or hub name; None = random init
    # BERT's objective. Whole-word masking masks every WordPiece of a chosen word (BERT's later
    # release); next-sentence prediction is off by default, as RoBERTa found it does not help.
    mlm_probability: float = 0.15
    whole_word_masking: bool = False
    nsp: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"model.kind must be one of {KINDS}, got {self.kind!r}")
        if min(self.hidden_size, self.num_layers, self.num_heads, self.intermediate_size) < 1:
            raise ValueError(
                "model.hidden_size, num_layers, num_heads and intermediate_size must be >= 1, got "
                f"{self.hidden_size}, {self.num_layers}, {self.num_heads}, {self.intermediate_size}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"model.hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.seq_len < 8:
            raise ValueError(f"model.seq_len must be >= 8, got {self.seq_len}")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"model.mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.kind == "gpt2" and (self.nsp or self.whole_word_masking):
            raise ValueError("model.nsp and model.whole_word_masking are BERT options; model.kind is gpt2")


# Position tables as long as the published models' (BERT 512, GPT-2 1024) unless seq_len needs more,
# so a checkpoint saved here loads where those models' shapes are expected.
BERT_POSITIONS = 512
GPT2_POSITIONS = 1024


def build_model(cfg: ModelConfig, *, vocab_size: int, pad_id: int, eos_id: int | None = None) -> PreTrainedModel:
    """A randomly initialised model (or `cfg.init_from`). `eos_id` is GPT-2's <|endoftext|>, its bos and eos
    alike; left unset, GPT2Config would keep id 50256, outside any vocabulary trained here."""
    if cfg.init_from:
        auto = (
            AutoModelForCausalLM if cfg.kind == "gpt2" else AutoModelForPreTraining if cfg.nsp else AutoModelForMaskedLM
        )
        return auto.from_pretrained(cfg.init_from)
    if cfg.kind == "bert":
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            intermediate_size=cfg.intermediate_size,
            max_position_embeddings=max(BERT_POSITIONS, cfg.seq_len),
            hidden_dropout_prob=cfg.dropout,
            attention_probs_dropout_prob=cfg.dropout,
            pad_token_id=pad_id,
        )
        return BertForPreTraining(config) if cfg.nsp else BertForMaskedLM(config)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_embd=cfg.hidden_size,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        n_inner=cfg.intermediate_size,
        n_positions=max(GPT2_POSITIONS, cfg.seq_len),
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        pad_token_id=pad_id,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )
    return GPT2LMHeadModel(config)


def lm_inputs(
    kind: str,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    mask_id: int | None,
    vocab_size: int,
    special_ids: list[int],
    generator: torch.Generator,
    mlm_probability: float = 0.15,
    continues_word: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Model inputs with labels. BERT: BERT's 80/10/10 masking drawn from `generator` (so a step's
    masks depend only on its seed, which makes resume exact); with `continues_word` (a bool per
    vocabulary id: is this a '##' piece) whole words are chosen. GPT-2: next-token labels, pads ignored."""
    labels = input_ids.clone()
    if kind == "gpt2":
        labels[attention_mask == 0] = -100
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    maskable = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(special_ids))
    draw = torch.rand(input_ids.shape, generator=generator) < mlm_probability
    if continues_word is not None:
        # Every piece takes the draw of its word's first piece: the last non-continuation position.
        positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        starts = torch.where(continues_word[input_ids] & maskable, 0, positions)
        draw = torch.gather(draw, 1, torch.cummax(starts, dim=1).values)
    chosen = draw & maskable
    if not chosen.any() and maskable.any():  # a batch with no target has an undefined (NaN) loss
        chosen.view(-1)[int(maskable.view(-1).nonzero()[0])] = True
    labels[~chosen] = -100
    roll = torch.rand(input_ids.shape, generator=generator)
    masked = input_ids.clone()
    masked[chosen & (roll < 0.8)] = mask_id
    randomised = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[randomised] = torch.randint(vocab_size, input_ids.shape, generator=generator)[randomised]
    return {"input_ids": masked, "attention_mask": attention_mask, "labels": labels}


def nsp_pairs(
    sequences: list[np.ndarray], *, cls_id: int, sep_id: int, generator: torch.Generator
) -> tuple[list[np.ndarray], list[np.ndarray], torch.Tensor]:
    """Next-sentence-prediction pairs from packed [CLS] body [SEP] sequences.

    Each body is cut at a random point into A | B. Half the time B is replaced by the start of the
    next sequence in the batch (label 1, "random"); otherwise it stays (label 0, "is next"). One
    body token is dropped to make room for the middle [SEP], so pairs fit the same length.
    Returns (input ids, token type ids, labels).
    """
    ids, types, labels = [], [], []
    for i, seq in enumerate(sequences):
        body = seq[1:-1]
        cut = 1 + int(torch.randint(max(1, len(body) - 1), (1,), generator=generator))
        first = body[:cut]
        is_random = bool(torch.rand(1, generator=generator) < 0.5) and len(sequences) > 1
        second = sequences[(i + 1) % len(sequences)][1:-1] if is_random else body[cut:]
        second = second[: max(0, len(body) - cut - 1)]
        ids.append(np.concatenate([[cls_id], first, [sep_id], second, [sep_id]]).astype(np.int32))
        types.append(np.concatenate([np.zeros(len(first) + 2), np.ones(len(second) + 1)]).astype(np.int32))
        labels.append(int(is_random))
    return ids, types, torch.tensor(labels)


@dataclass(kw_only=True)
class Objective:
    """How a micro-batch of packed sequences becomes model inputs with labels (the tokenizer's ids
    and the model's pretraining objective, gathered once instead of passed around one by one)."""

    kind: str
    seq_len: int
    vocab_size: int
    pad_id: int
    mask_id: int | None = None
    cls_id: int | None = None
    sep_id: int | None = None
    mlm_probability: float = 0.15
    continues_word: torch.Tensor | None = field(default=None, repr=False)  # set: whole-word masking
    nsp: bool = False

    @classmethod
    def for_model(cls, tok: PreTrainedTokenizerBase, cfg: ModelConfig, *, training: bool = True) -> Objective:
        """training=False gives evaluation's fixed protocol: token-level masking, no NSP."""
        continues_word = None
        if training and cfg.whole_word_masking:
            pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
            continues_word = torch.tensor([bool(p) and p.startswith("##") for p in pieces])
        return cls(
            kind=cfg.kind,
            seq_len=cfg.seq_len,
            vocab_size=len(tok),
            pad_id=tok.pad_token_id,
            mask_id=tok.mask_token_id,
            cls_id=tok.cls_token_id,
            sep_id=tok.sep_token_id,
            mlm_probability=cfg.mlm_probability if training else 0.15,
            continues_word=continues_word,
            nsp=training and cfg.nsp,
        )

    @property
    def special_ids(self) -> list[int]:
        return [i for i in (self.pad_id, self.cls_id, self.sep_id) if i is not None]

    def batch(self, sequences: list[np.ndarray], generator: torch.Generator) -> dict[str, torch.Tensor]:
        nsp_labels = None
        if self.nsp:
            sequences, types, nsp_labels = nsp_pairs(
                sequences, cls_id=self.cls_id, sep_id=self.sep_id, generator=generator
            )
        ids, mask = pad_batch(sequences, self.pad_id, self.seq_len)
        batch = lm_inputs(
            self.kind,
            torch.from_numpy(ids),
            torch.from_numpy(mask),
            mask_id=self.mask_id,
            vocab_size=self.vocab_size,
            special_ids=self.special_ids,
            generator=generator,
            mlm_probability=self.mlm_probability,
            continues_word=self.continues_word,
        )
        if nsp_labels is not None:
            batch["token_type_ids"] = torch.from_numpy(pad_batch(types, 0, self.seq_len)[0])
            batch["next_sentence_label"] = nsp_labels
        return batch


def adamw_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: weight decay on the weight matrices, none on biases and LayerNorm
    weights (the parameters with fewer than 2 dimensions), as BERT was trained."""
    params = list(model.parameters())
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
