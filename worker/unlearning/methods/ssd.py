"""Selective Synaptic Dampening (Foster et al. 2023, "Fast Machine Unlearning Without
Retraining Through Selective Synaptic Dampening").

Diagonal Fisher importances (the mean over batches of the squared gradient of the
cross-entropy, model in eval mode, as in the paper's code) are computed on the forget data
(``[]_F``) and on the full training data (``[]_D``, retain + forget; or the retain data only).
Every parameter with ``[]_F > alpha * []_D`` is multiplied by
``beta = min((lambda * []_D / []_F) ** exponent, 1)``. No training, no learning rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from app.core.methods.ssd import SPEC, SSDConfig
from worker.unlearning.base import MethodResult
from worker.unlearning.registry import register_runner

if TYPE_CHECKING:
    import torch
    from torch import nn

    from worker.unlearning._ops import Progress
    from worker.unlearning.base import UnlearningInputs


def _importances(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    n_batches: int,
    progress: Progress,
    phase: str,
) -> dict[str, torch.Tensor]:
    import torch
    import torch.nn.functional as F

    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    imps = {n: torch.zeros_like(p) for n, p in params}
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        for n, p in params:
            if p.grad is not None:
                imps[n] += p.grad.detach().pow(2)
        progress.advance(phase)
    model.zero_grad(set_to_none=True)
    for v in imps.values():
        v /= max(1, n_batches)
    return imps


def run(inputs: UnlearningInputs, config: SSDConfig) -> MethodResult:
    import torch

    from worker.unlearning import _ops

    _ops.require(inputs.forget_images, inputs.forget_labels, "forget", "ssd")
    _ops.check_pair(inputs.retain_images, inputs.retain_labels, "retain")
    gen = _ops.seed_all(inputs.seed)
    model, device = inputs.model, inputs.device
    nf, nr = inputs.forget_images.shape[0], inputs.retain_images.shape[0]

    # reference set: indices < nr are retain samples, the rest forget samples
    n_ref = nr + nf if config.reference == "full" else nr
    if n_ref == 0:
        raise ValueError("ssd needs retain data when reference='retain'")
    ref_idx = torch.randperm(n_ref, generator=gen)
    if config.max_reference_samples is not None:
        ref_idx = ref_idx[: config.max_reference_samples]
    ref_batches_idx = [
        ref_idx[b]
        for b in _ops.batch_indices(ref_idx.numel(), config.batch_size, None, shuffle=False)
    ]
    forget_batches_idx = _ops.batch_indices(nf, config.batch_size, gen)

    def ref_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in ref_batches_idx:
            r, f = idx[idx < nr], idx[idx >= nr] - nr
            x = torch.cat([inputs.retain_images[r], inputs.forget_images[f]])
            y = torch.cat([inputs.retain_labels[r].long(), inputs.forget_labels[f].long()])
            yield _ops.to_input(x.to(device)), y.to(device)

    def forget_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in forget_batches_idx:
            yield _ops.load_batch(inputs.forget_images, inputs.forget_labels, idx, device)

    progress = _ops.Progress(inputs.progress, len(ref_batches_idx) + len(forget_batches_idx))
    progress.start("importance_reference")
    with _ops.eval_mode(model):
        ref_imp = _importances(
            model, ref_batches(), len(ref_batches_idx), progress, "importance_reference"
        )
        forget_imp = _importances(
            model, forget_batches(), len(forget_batches_idx), progress, "importance_forget"
        )
        dampened, total, factor_sum = 0, 0, 0.0
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name not in ref_imp:
                    continue
                d_imp, f_imp = ref_imp[name], forget_imp[name]
                total += p.numel()
                loc = f_imp > config.alpha * d_imp
                if not bool(loc.any()):
                    continue
                beta = (config.lambda_ * d_imp[loc] / f_imp[loc]).pow(config.exponent)
                beta = beta.clamp(max=1.0)
                p[loc] = p[loc] * beta
                dampened += int(loc.sum())
                factor_sum += float(beta.sum())
    progress.finish()
    return MethodResult(
        details={
            "dampened_parameters": dampened,
            "total_parameters": total,
            "dampened_fraction": dampened / max(1, total),
            "mean_dampening_factor": factor_sum / dampened if dampened else None,
            "reference": config.reference,
            "reference_samples": int(ref_idx.numel()),
            "forget_samples": nf,
        }
    )


register_runner(SPEC.name, run)
