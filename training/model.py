"""BERT masked-LM and GPT-2 causal-LM models from a size config, randomly initialised or loaded.

The model knows nothing of parallelism: DDP and devices are the launcher's business.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
)

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

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"model.kind must be one of {KINDS}, got {self.kind!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"model.hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.seq_len < 8:
            raise ValueError(f"model.seq_len must be >= 8, got {self.seq_len}")


def build_model(cfg: ModelConfig, *, vocab_size: int, pad_id: int) -> PreTrainedModel:
    if cfg.init_from:
        auto = AutoModelForMaskedLM if cfg.kind == "bert" else AutoModelForCausalLM
        return auto.from_pretrained(cfg.init_from)
    if cfg.kind == "bert":
        config = BertConfig(
            vocab_size=vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
            max_position_embeddings=max(512, cfg.seq_len), hidden_dropout_prob=cfg.dropout,
            attention_probs_dropout_prob=cfg.dropout, pad_token_id=pad_id,
        )
        return BertForMaskedLM(config)
    config = GPT2Config(
        vocab_size=vocab_size, n_embd=cfg.hidden_size, n_layer=cfg.num_layers, n_head=cfg.num_heads,
        n_inner=cfg.intermediate_size, n_positions=max(1024, cfg.seq_len), resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, pad_token_id=pad_id,
    )
    return GPT2LMHeadModel(config)


def lm_inputs(
    kind: str, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, mask_id: int | None, vocab_size: int,
    special_ids: list[int], generator: torch.Generator, mlm_probability: float = 0.15,
) -> dict[str, torch.Tensor]:
    """Model inputs with labels. BERT: BERT's 80/10/10 masking drawn from `generator` (so a step's
    masks depend only on its seed, which makes resume exact); GPT-2: next-token labels, pads ignored."""
    labels = input_ids.clone()
    if kind == "gpt2":
        labels[attention_mask == 0] = -100
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    maskable = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(special_ids))
    chosen = (torch.rand(input_ids.shape, generator=generator) < mlm_probability) & maskable
    labels[~chosen] = -100
    roll = torch.rand(input_ids.shape, generator=generator)
    masked = input_ids.clone()
    masked[chosen & (roll < 0.8)] = mask_id
    randomised = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[randomised] = torch.randint(vocab_size, input_ids.shape, generator=generator)[randomised]
    return {"input_ids": masked, "attention_mask": attention_mask, "labels": labels}
