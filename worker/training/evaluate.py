"""Inference, ensemble aggregation and accuracy summaries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from worker.training.data import to_model_input

_LOSS_EPS = 1e-12


@torch.no_grad()
def predict_proba(
    model: nn.Module, images_u8: torch.Tensor, *, device: torch.device, batch_size: int = 512
) -> torch.Tensor:
    """Softmax probabilities [N, K] as float32 on the CPU (model is put in eval mode)."""
    model.eval()
    if images_u8.shape[0] == 0:
        return torch.empty((0, _num_outputs(model)), dtype=torch.float32)
    chunks = []
    for batch in images_u8.split(batch_size):
        logits = model(to_model_input(batch.to(device, non_blocking=True)))
        chunks.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(chunks)


def _num_outputs(model: nn.Module) -> int:
    # Only needed for empty input, where no forward pass can tell us K.
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else 0


def aggregate(probas: Sequence[torch.Tensor], how: Literal["vote", "mean_softmax"]) -> torch.Tensor:
    """Combine constituent predictions [N, K] into one [N, K] score.

    "vote": fraction of constituents voting for each class (argmax), plus 1e-6 * mean softmax so
    ties go to the more confident class. "mean_softmax": plain average of the probabilities.
    """
    if not probas:
        raise ValueError("aggregate needs at least one constituent prediction")
    stacked = torch.stack([p.float() for p in probas])  # [M, N, K]; raises on shape mismatch
    mean = stacked.mean(dim=0)
    if how == "mean_softmax":
        return mean
    if how == "vote":
        num_classes = stacked.shape[-1]
        votes = nn.functional.one_hot(stacked.argmax(dim=-1), num_classes).float().mean(dim=0)
        return votes + 1e-6 * mean
    raise ValueError(f"unknown aggregation {how!r}; use 'vote' or 'mean_softmax'")


def per_sample_loss(proba: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy -log p[label] per sample, with p clamped away from 0 to stay finite."""
    picked = proba.gather(1, labels.long().view(-1, 1)).squeeze(1)
    return -picked.clamp(min=_LOSS_EPS, max=1.0).log()


def accuracy_summary(
    pred: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]
) -> dict[str, Any]:
    """Overall and per-class accuracy. ``pred`` is class indices [N] or scores [N, K].

    Per-class value is None for classes without samples; overall accuracy of an empty set is 0.0.
    """
    predicted = pred.argmax(dim=1) if pred.ndim == 2 else pred
    predicted, truth = predicted.long().cpu(), labels.long().cpu()
    if predicted.shape != truth.shape:
        raise ValueError(f"pred {tuple(predicted.shape)} and labels {tuple(truth.shape)} differ")
    correct = predicted == truth
    count = int(truth.numel())
    per_class: dict[str, float | None] = {}
    for index, name in enumerate(class_names):
        mask = truth == index
        n_class = int(mask.sum())
        per_class[name] = float(correct[mask].float().mean()) if n_class else None
    return {
        "accuracy": float(correct.float().mean()) if count else 0.0,
        "count": count,
        "per_class": per_class,
    }
