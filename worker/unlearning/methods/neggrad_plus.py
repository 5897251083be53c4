"""NegGrad+ (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning", the SCRUB paper's
baseline): gradient descent on the retain data and ascent on the forget data,
``loss = alpha * CE(retain) - (1 - alpha) * CE(forget)``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.core.methods.neggrad_plus import SPEC, NegGradPlusConfig
from worker.unlearning.base import MethodResult
from worker.unlearning.registry import register_runner

if TYPE_CHECKING:
    from worker.unlearning.base import UnlearningInputs


def run(inputs: UnlearningInputs, config: NegGradPlusConfig) -> MethodResult:
    import torch
    import torch.nn.functional as F

    from worker.unlearning import _ops

    _ops.require(inputs.forget_images, inputs.forget_labels, "forget", "neggrad_plus")
    _ops.check_pair(inputs.retain_images, inputs.retain_labels, "retain")
    gen = _ops.seed_all(inputs.seed)
    model, device = inputs.model, inputs.device
    nr = inputs.retain_images.shape[0]
    nf = inputs.forget_images.shape[0]
    # an epoch is a pass over the retain data; with no retain data, over the forget data
    per_epoch = _ops.steps_per_epoch(nr if nr else nf, config.batch_size)
    total = config.epochs * per_epoch
    progress = _ops.Progress(inputs.progress, total)
    progress.start("neggrad_plus")
    opt = _ops.make_optimizer(
        config.optimizer,
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    sched = _ops.cosine_schedule(opt, total)
    forget_batches = _ops.cycle_indices(nf, config.batch_size, gen)
    retain_batches = _ops.cycle_indices(nr, config.batch_size, gen) if nr else None
    last_r, last_f = float("nan"), float("nan")
    with _ops.keep_mode(model):
        model.train()
        for _ in range(total):
            xf, yf = _ops.load_batch(
                inputs.forget_images, inputs.forget_labels, next(forget_batches), device
            )
            if retain_batches is not None:
                xr, yr = _ops.load_batch(
                    inputs.retain_images, inputs.retain_labels, next(retain_batches), device
                )
                loss_r = F.cross_entropy(model(xr), yr)
                loss_f = F.cross_entropy(model(xf), yf)
            else:
                loss_r = torch.zeros((), device=device)
                loss_f = F.cross_entropy(model(xf), yf)
            loss = config.alpha * loss_r - (1.0 - config.alpha) * loss_f
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            sched.step()
            last_r, last_f = float(loss_r.detach()), float(loss_f.detach())
            progress.advance("neggrad_plus")
    progress.finish()
    return MethodResult(
        details={
            "steps": total,
            "final_retain_loss": _ops.finite_or_none(last_r),
            "final_forget_loss": _ops.finite_or_none(last_f),
            "forget_samples": nf,
            "retain_samples": nr,
        }
    )


register_runner(SPEC.name, run)
