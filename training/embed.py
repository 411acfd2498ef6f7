"""Sequence embeddings from a checkpoint or any local encoder.

BERT-style encoders: mean of hidden_states[layer] over the attention mask (the paper: layer 9 of
BERT-base). GPT-2: hidden_states[layer] at the last non-pad token. hidden_states[0] is the
embedding layer output, so hidden_states[i] is the output of block i; layer -1 is the last.
The encoder is a folder (a local path, or a URI on object storage fetched once per process) or a
hub name; the caller picks the device (training/device.py), never this module.

Only the blocks up to the pooled layer run (a hook ends the forward pass there): layer 9 of 12 costs
9 blocks, and no other layer's hidden states are kept.

With the LM head kept (embed.sequence_loss), embed_with_loss also gives each sequence's mean token
cross-entropy. GPT-2: next-token loss over the non-pad tokens, from the very forward pass whose hidden
states are pooled. BERT: masked-LM loss over 15% of the non-special tokens with BERT's 80/10/10
corruption (training.model.lm_inputs, evaluation's token-level protocol), drawn from a generator
seeded by (seed, sequence_id) alone, so a sequence's loss does not depend on its batch; the masked
copy takes a second forward pass, as the embedding must see the sequence unmasked. The masks stay
drawn one sequence at a time from that generator: they define the loss column of existing runs under
an unchanged stage hash, and a vectorised hash of (seed, id, position) would draw others. The LM head
is applied only where there is a label (BERT's masked positions), in chunks of LOGITS_BYTES of fp32
logits, so no batch's full-vocabulary logits are ever held (at bert-base's batch of 1,024 they would
be 16 GB in fp32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, PreTrainedModel

from dataio.uri import is_uri, local_dir
from training.loop import step_seed
from training.model import Objective, lm_inputs
from training.packing import pad_batch

MLM_PROBABILITY = 0.15  # the sequence loss's masking rate, BERT's (and evaluation's)
IGNORE = -100  # a label no loss is taken on (transformers' convention)
LOGITS_BYTES = 2**28  # fp32 logits of one chunk of labelled positions: 256 MB whatever the batch
BLOCK_LISTS = ("encoder.layer", "h")  # where an encoder keeps its blocks: BERT-family, GPT-2


def local_model(location: str) -> str:
    """A local folder for a model or tokenizer folder given by path or URI (an error naming the node
    if it is not there); a hub name (relative, no scheme) as it is."""
    return str(local_dir(location)) if is_uri(location) or Path(location).is_absolute() else location


def load_encoder(location: str, device: torch.device, *, lm_head: str | None = None) -> PreTrainedModel:
    """The encoder without its LM head (only hidden states are needed), or with the head of model kind
    `lm_head` (bert: masked LM, gpt2: causal LM) for embed_with_loss."""
    auto = {None: AutoModel, "gpt2": AutoModelForCausalLM, "bert": AutoModelForMaskedLM}[lm_head]
    return auto.from_pretrained(local_model(location)).to(device).eval()


def _check_layer(model: PreTrainedModel, layer: int) -> None:
    n_layers = int(model.config.num_hidden_layers)
    if not -n_layers - 1 <= layer <= n_layers:
        raise ValueError(f"embedding layer {layer} out of range for a model with {n_layers} layers")


@torch.inference_mode()
def embed_batch(
    model: PreTrainedModel, input_ids: np.ndarray, attention_mask: np.ndarray, *, pooling: str, layer: int
) -> np.ndarray:
    _check_layer(model, layer)
    device = next(model.parameters()).device
    ids = torch.as_tensor(input_ids, device=device)
    mask = torch.as_tensor(attention_mask, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        hidden, _ = layer_output(model, ids, mask, layer)
    return _pool(hidden, mask, pooling)


class _Stop(Exception):
    """Ends a forward pass at the block whose input is the pooled layer: the later blocks are not needed."""


def _blocks(encoder: PreTrainedModel) -> torch.nn.ModuleList | None:
    """The encoder's list of blocks, None for a layout not known here (every layer is then computed)."""
    for path in BLOCK_LISTS:
        blocks = encoder.base_model
        for name in path.split("."):
            blocks = getattr(blocks, name, None)
        if isinstance(blocks, torch.nn.ModuleList):
            return blocks
    return None


def layer_output(
    encoder: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, layer: int, *, run_all: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(hidden_states[layer], the last hidden state) of a base encoder. hidden_states[i] below the last
    is the input of block i, taken by a hook that ends the pass there, so the last hidden state is None,
    unless `run_all` (the LM head needs it); the last is the encoder's output."""
    n = int(encoder.config.num_hidden_layers)
    index = layer if layer >= 0 else n + 1 + layer
    if index == n:
        last = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return last, last
    blocks = _blocks(encoder)
    if blocks is None:
        out = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        return out.hidden_states[index], out.last_hidden_state
    captured = []

    def take(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        captured.append(args[0] if args else kwargs["hidden_states"])
        if not run_all:
            raise _Stop

    handle = blocks[index].register_forward_pre_hook(take, with_kwargs=True)
    last = None
    try:
        last = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured[0], last


def _pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> np.ndarray:
    device = hidden.device
    hidden = hidden.float()
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    elif pooling == "last":
        last = mask.sum(1) - 1
        pooled = hidden[torch.arange(hidden.shape[0], device=device), last]
    else:
        raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
    return pooled.cpu().numpy().astype(np.float32)


def masked_copy(
    sequence: np.ndarray, sequence_id: int, *, seed: int, objective: Objective
) -> tuple[np.ndarray, np.ndarray]:
    """BERT's masked input and labels for one sequence, a function of (seed, sequence_id) and its tokens."""
    generator = torch.Generator().manual_seed(
        step_seed(seed, sequence_id & 0xFFFFFFFF, (sequence_id >> 32) & 0xFFFFFFFF)
    )
    ids = torch.as_tensor(np.asarray(sequence, dtype=np.int64))[None]
    batch = lm_inputs(
        "bert",
        ids,
        torch.ones_like(ids),
        mask_id=objective.mask_id,
        vocab_size=objective.vocab_size,
        special_ids=objective.special_ids,
        generator=generator,
        mlm_probability=MLM_PROBABILITY,
    )
    return batch["input_ids"][0].numpy(), batch["labels"][0].numpy()


def sequence_losses(head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Each row's mean cross-entropy over its labelled positions (NaN for a row with none): the LM head
    applied to the labelled positions' hidden states only, LOGITS_BYTES of fp32 logits at a time."""
    labelled = labels != IGNORE
    row_of = labelled.nonzero()[:, 0]
    states, targets = hidden[labelled], labels[labelled]
    chunk = max(1, LOGITS_BYTES // (4 * vocab_size))
    per_token = [
        F.cross_entropy(head(states[i : i + chunk]).float(), targets[i : i + chunk], reduction="none")
        for i in range(0, len(targets), chunk)
    ]
    sums = torch.zeros(len(labels), dtype=torch.float32, device=labels.device)
    if per_token:
        sums.index_add_(0, row_of, torch.cat(per_token))
    return sums / labelled.sum(1)


@torch.inference_mode()
def embed_with_loss(
    model: PreTrainedModel,
    sequences: list[np.ndarray],
    sequence_ids: np.ndarray,
    *,
    objective: Objective,
    pooling: str,
    layer: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings as embed_batch gives them, float32 per-sequence losses) of a batch of sequences, with
    a model loaded with its LM head (load_encoder(lm_head=kind))."""
    _check_layer(model, layer)
    device = next(model.parameters()).device
    length = max(len(s) for s in sequences)
    input_ids, attention_mask = pad_batch(sequences, objective.pad_id, length)
    ids = torch.as_tensor(input_ids, device=device)
    mask = torch.as_tensor(attention_mask, device=device)
    encoder, vocab = model.base_model, int(model.config.vocab_size)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        if objective.kind == "gpt2":
            hidden, last = layer_output(encoder, ids, mask, layer, run_all=True)
            labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE)
            losses = sequence_losses(model.lm_head, last[:, :-1], labels, vocab)
        else:
            hidden, _ = layer_output(encoder, ids, mask, layer)  # the embedding sees the unmasked sequence
            copies = [masked_copy(s, int(i), seed=seed, objective=objective) for s, i in zip(sequences, sequence_ids)]
            masked = torch.as_tensor(pad_batch([c[0] for c in copies], objective.pad_id, length)[0], device=device)
            labels = torch.as_tensor(pad_batch([c[1] for c in copies], IGNORE, length)[0], device=device)
            last = encoder(input_ids=masked, attention_mask=mask).last_hidden_state
            losses = sequence_losses(model.cls, last, labels, vocab)
    return _pool(hidden, mask, pooling), losses.cpu().numpy().astype(np.float32)
