"""SCRUB: max passes (away from the teacher) on the forget data, min passes (CE + KL to the
teacher) on the retained data, as in the official ``train_distill`` loops. Spec and defaults:
:mod:`app.core.methods.scrub`."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from app.core.methods.scrub import SPEC, ScrubConfig
from worker.unlearning.base import MethodResult
from worker.unlearning.registry import register_runner

if TYPE_CHECKING:
    import torch

    from worker.unlearning.base import UnlearningInputs


def run(inputs: UnlearningInputs, config: ScrubConfig) -> MethodResult:
    import torch
    import torch.nn.functional as F

    from worker.unlearning import _ops

    _ops.require(inputs.forget_images, inputs.forget_labels, "forget", "scrub")
    _ops.check_pair(inputs.retain_images, inputs.retain_labels, "retain")
    gen = _ops.seed_all(inputs.seed)
    student, device, t = inputs.model, inputs.device, config.temperature
    teacher = copy.deepcopy(student).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    nf, nr = inputs.forget_images.shape[0], inputs.retain_images.shape[0]
    max_epochs = min(config.max_steps, config.epochs)
    total = max_epochs * _ops.steps_per_epoch(nf, config.forget_batch_size)
    total += config.epochs * _ops.steps_per_epoch(nr, config.batch_size)
    progress = _ops.Progress(inputs.progress, total)
    progress.start("scrub")
    opt = _ops.make_optimizer(
        "sgd",
        student.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )

    def step(loss: torch.Tensor, phase: str) -> float:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        progress.advance(phase)
        return float(loss.detach())

    last_max, last_min = float("nan"), float("nan")
    with _ops.keep_mode(student):
        student.train()
        for epoch in range(config.epochs):
            if epoch < max_epochs:
                for idx in _ops.batch_indices(nf, config.forget_batch_size, gen):
                    x, _ = _ops.load_batch(inputs.forget_images, inputs.forget_labels, idx, device)
                    with torch.no_grad():
                        target = teacher(x)
                    last_max = step(-_ops.distill_kl(student(x), target, t), "scrub max")
            for idx in _ops.batch_indices(nr, config.batch_size, gen):
                x, y = _ops.load_batch(inputs.retain_images, inputs.retain_labels, idx, device)
                with torch.no_grad():
                    target = teacher(x)
                out = student(x)
                loss = config.gamma * F.cross_entropy(out, y)
                loss = loss + config.alpha * _ops.distill_kl(out, target, t)
                last_min = step(loss, "scrub min")
    progress.finish()
    return MethodResult(
        details={
            "steps": total,
            "final_max_loss": _ops.finite_or_none(last_max),
            "final_min_loss": _ops.finite_or_none(last_min),
            "forget_samples": nf,
            "retain_samples": nr,
        }
    )


register_runner(SPEC.name, run)
