"""Model FLOPs utilisation: the fraction of the accelerator's peak that the training step achieves.

Per trained token a transformer costs 6 N FLOPs for its N weights used in matmuls (forward 2N,
backward 4N) plus 12 L H S for attention scores and values (L layers, width H, sequence length S);
the PaLM paper's convention (Chowdhery et al. 2022, appendix B). N leaves out the embedding lookups
but keeps the output projection onto the vocabulary (tied to the input embedding in BERT and GPT-2,
so counted once as V x H). Only real tokens count, not padding.
"""

from __future__ import annotations

import torch

# Dense bf16 peak FLOP/s by device name (datasheets, without sparsity); first match wins.
PEAK_BF16 = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
    ("L4", 121e12),
)


def flops_per_token(model: torch.nn.Module, *, seq_len: int) -> float:
    model = getattr(model, "module", model)
    cfg = model.config
    layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    hidden = getattr(cfg, "hidden_size", None) or cfg.n_embd
    embedding = sum(
        p.numel() for n, p in model.named_parameters() if "embeddings" in n or n.startswith("transformer.w")
    )
    weights = sum(p.numel() for p in model.parameters()) - embedding + cfg.vocab_size * hidden
    return 6.0 * weights + 12.0 * layers * hidden * seq_len


def peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak, or None where unknown (CPUs: no MFU is reported)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16 if key in name), None)
