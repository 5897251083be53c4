"""Weight masks shared by the pruning and saliency methods: a global top-k threshold over a set
of tensors, and keeping a model's updates (or values) inside a mask.

This module imports torch: method modules import it lazily, inside their run functions only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

Mask = dict[str, Tensor]
"""Parameter name -> bool tensor of the parameter's shape (True: kept / trainable)."""


def global_top_mask(scores: dict[str, Tensor], keep_fraction: float) -> Mask:
    """Keep the ``keep_fraction`` of entries with the largest score, one threshold across all
    tensors (ties at the threshold are kept)."""
    if not scores:
        return {}
    flat = torch.cat([s.detach().reshape(-1).float().cpu() for s in scores.values()])
    k = round(keep_fraction * flat.numel())
    if k >= flat.numel():
        return {n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()}
    if k <= 0:
        return {n: torch.zeros_like(s, dtype=torch.bool) for n, s in scores.items()}
    threshold = torch.topk(flat, k, sorted=True).values[-1]
    return {n: s.detach().float() >= threshold.to(s.device) for n, s in scores.items()}


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weight tensors of every conv and linear layer (biases and norms are not pruned)."""
    out: dict[str, nn.Parameter] = {}
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and isinstance(
            module.weight, nn.Parameter
        ):
            prefix = f"{module_name}." if module_name else ""
            out[f"{prefix}weight"] = module.weight
    return out


def mask_gradients(model: nn.Module, mask: Mask) -> None:
    """Zero the gradient of every masked-out entry (parameters absent from ``mask`` are
    frozen entirely)."""
    for name, param in model.named_parameters():
        if param.grad is None:
            continue
        keep = mask.get(name)
        if keep is None:
            param.grad.zero_()
        else:
            param.grad.mul_(keep.to(param.grad.dtype))


@torch.no_grad()
def apply_mask(params: dict[str, nn.Parameter], mask: Mask) -> None:
    """Zero the masked-out values (pruned weights stay pruned after an optimizer step, which
    weight decay and momentum would otherwise move)."""
    for name, param in params.items():
        param.mul_(mask[name].to(param.dtype))


@torch.no_grad()
def restore_outside(
    model: nn.Module, mask: Mask, initial: dict[str, Tensor], optimizer: torch.optim.Optimizer
) -> None:
    """Put every masked-out entry back to its ``initial`` value after a step (weight decay,
    added inside the step, would otherwise move it) and clear its momentum, so a later step
    cannot move it either."""
    for name, param in model.named_parameters():
        keep = mask.get(name)
        if keep is None or name not in initial:
            continue
        kept = keep.to(param.dtype)
        param.mul_(kept).add_(initial[name] * (1 - kept))
        buffer = optimizer.state.get(param, {}).get("momentum_buffer")
        if buffer is not None:
            buffer.mul_(kept)


def kept_fraction(mask: Mask) -> float:
    total = sum(m.numel() for m in mask.values())
    return sum(int(m.sum()) for m in mask.values()) / max(1, total)
