"""Dummy labels: relabel each forget sample with the original model's best wrong guess, then
fine-tune on them mixed with the retained data. Spec and defaults:
:mod:`app.core.methods.dummy_labels`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.core.methods.dummy_labels import SPEC, DummyLabelsConfig
from worker.unlearning.base import MethodResult
from worker.unlearning.registry import register_runner

if TYPE_CHECKING:
    import torch
    from torch import nn

    from worker.unlearning.base import UnlearningInputs


def best_wrong_labels(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """The highest-scoring class other than each sample's label (eval mode, CPU int64)."""
    import torch

    from worker.unlearning import _ops

    out = []
    with torch.no_grad(), _ops.eval_mode(model):
        for i in range(0, images.shape[0], 256):
            logits = model(_ops.to_input(images[i : i + 256].to(device))).float().cpu()
            rows = torch.arange(logits.shape[0])
            logits[rows, labels[i : i + 256].long()] = float("-inf")
            out.append(logits.argmax(1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def run(inputs: UnlearningInputs, config: DummyLabelsConfig) -> MethodResult:
    import torch

    from worker.unlearning import _ops

    _ops.require(inputs.forget_images, inputs.forget_labels, "forget", "dummy_labels")
    _ops.check_pair(inputs.retain_images, inputs.retain_labels, "retain")
    if inputs.num_classes < 2:
        raise ValueError("dummy_labels needs at least two classes")
    gen = _ops.seed_all(inputs.seed)
    model = inputs.model
    nf = inputs.forget_images.shape[0]
    dummy = best_wrong_labels(model, inputs.forget_images, inputs.forget_labels, inputs.device)
    images = torch.cat([inputs.forget_images, inputs.retain_images])
    labels = torch.cat([dummy, inputs.retain_labels.long()])
    stats = _ops.fine_tune(
        model,
        images,
        labels,
        config,
        device=inputs.device,
        generator=gen,
        progress=inputs.progress,
        phase="dummy_labels",
    )
    return MethodResult(
        details={
            **stats,
            "forget_samples": nf,
            "retain_samples": images.shape[0] - nf,
        }
    )


register_runner(SPEC.name, run)
