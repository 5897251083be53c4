"""Random labels (Golatkar et al. 2020; the "RL" baseline of Jia et al. 2023): relabel the
forget samples with random *wrong* labels and train on them mixed with the retain data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.core.methods.random_label import SPEC, RandomLabelConfig
from worker.unlearning.base import MethodResult
from worker.unlearning.registry import register_runner

if TYPE_CHECKING:
    import torch

    from worker.unlearning.base import UnlearningInputs


def random_wrong_labels(
    labels: torch.Tensor, num_classes: int, forget_classes: list[int], gen: torch.Generator
) -> torch.Tensor:
    """A uniformly drawn label != the true one for every sample, taken from the retained classes
    (so a forgotten class is never relabelled as another forgotten class) when possible."""
    import torch

    n = labels.shape[0]
    allowed = torch.ones(num_classes, dtype=torch.bool)
    allowed[[c for c in forget_classes if 0 <= c < num_classes]] = False
    if int(allowed.sum()) == 0:
        allowed[:] = True
    weights = allowed.repeat(n, 1)
    weights[torch.arange(n), labels.long()] = False
    # a sample whose only allowed class is its own: fall back to any other class
    empty = ~weights.any(1)
    if bool(empty.any()):
        weights[empty] = True
        weights[empty.nonzero().squeeze(1), labels.long()[empty]] = False
    return torch.multinomial(weights.float(), 1, generator=gen).squeeze(1)


def run(inputs: UnlearningInputs, config: RandomLabelConfig) -> MethodResult:
    import torch

    from worker.unlearning import _ops

    _ops.require(inputs.forget_images, inputs.forget_labels, "forget", "random_label")
    _ops.check_pair(inputs.retain_images, inputs.retain_labels, "retain")
    if inputs.num_classes < 2:
        raise ValueError("random_label needs at least two classes")
    gen = _ops.seed_all(inputs.seed)
    model = inputs.model
    nf = inputs.forget_images.shape[0]
    images = torch.cat([inputs.forget_images, inputs.retain_images])
    retain_labels = inputs.retain_labels.long()
    n = images.shape[0]
    per_epoch = _ops.steps_per_epoch(n, config.batch_size)
    total = config.epochs * per_epoch
    progress = _ops.Progress(inputs.progress, total)
    progress.start("random_label")
    opt = _ops.make_optimizer(
        config.optimizer,
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    sched = _ops.cosine_schedule(opt, total)
    steps, final_loss = 0, None
    with _ops.keep_mode(model):
        rounds = config.epochs if config.relabel_each_epoch else 1
        for _ in range(rounds):
            wrong = random_wrong_labels(
                inputs.forget_labels, inputs.num_classes, inputs.forget_classes, gen
            )
            labels = torch.cat([wrong, retain_labels])
            stats = _ops.train_supervised(
                model,
                images,
                labels,
                epochs=1 if config.relabel_each_epoch else config.epochs,
                batch_size=config.batch_size,
                optimizer=opt,
                scheduler=sched,
                device=inputs.device,
                generator=gen,
                progress=progress,
                phase="random_label",
            )
            steps += int(stats["steps"] or 0)
            final_loss = stats["final_loss"]
    progress.finish()
    return MethodResult(
        details={
            "steps": steps,
            "final_loss": final_loss,
            "forget_samples": nf,
            "retain_samples": n - nf,
        }
    )


register_runner(SPEC.name, run)
