"""l1-sparse unlearning (Jia et al. 2023, "Model Sparsity Can Simplify Machine Unlearning"):
fine-tune on the retain data with an l1 penalty ``gamma_t * ||theta||_1`` (all trainable
parameters) whose weight decays linearly over the epochs, as in the paper's code:
``gamma_t = gamma * (1 - t / (T - no_l1_epochs))`` for epoch ``t``, 0 for the last
``no_l1_epochs`` epochs. The paper's runs use gamma = 1e-4, lr 0.01, 10 epochs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.core.methods.l1_sparse import SPEC, L1SparseConfig
from worker.unlearning.base import MethodResult
from worker.unlearning.registry import register_runner

if TYPE_CHECKING:
    from worker.unlearning.base import UnlearningInputs


def run(inputs: UnlearningInputs, config: L1SparseConfig) -> MethodResult:
    import torch

    from worker.unlearning import _ops

    _ops.require(inputs.retain_images, inputs.retain_labels, "retain", "l1_sparse")
    gen = _ops.seed_all(inputs.seed)
    model = inputs.model
    n = inputs.retain_images.shape[0]
    params = [p for p in model.parameters() if p.requires_grad]

    l1_epochs = config.epochs - config.no_l1_epochs

    def gamma(epoch: int) -> float:  # as in the paper's code (unlearn/FT.py)
        if epoch >= l1_epochs:
            return 0.0
        if config.decay == "constant":
            return config.l1_weight
        return config.l1_weight * (1.0 - epoch / l1_epochs)

    def penalty(epoch: int) -> torch.Tensor | None:
        g = gamma(epoch)
        if g == 0:
            return None
        return g * torch.stack([p.abs().sum() for p in params]).sum()

    stats = _ops.fine_tune(
        model,
        inputs.retain_images,
        inputs.retain_labels,
        config,
        device=inputs.device,
        generator=gen,
        progress=inputs.progress,
        phase="l1_sparse",
        params=params,
        penalty=penalty,
    )
    with torch.no_grad():
        numel = sum(p.numel() for p in params)
        near_zero = sum(int((p.abs() < 1e-3).sum()) for p in params)
        l1 = float(sum(float(p.abs().sum()) for p in params))
    return MethodResult(
        details={
            **stats,
            "final_l1_norm": _ops.finite_or_none(l1),
            "fraction_weights_below_1e-3": near_zero / max(1, numel),
            "retain_samples": n,
        }
    )


register_runner(SPEC.name, run)
