"""Torch helpers shared by the unlearning methods.

This module imports torch: method modules import it lazily, inside their run functions only.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from worker.unlearning.base import ProgressFn

# A training loss from (outputs, labels, the batch's indices into the training set).
BatchLoss = Callable[[Tensor, Tensor, Tensor], Tensor]


def to_input(x: Tensor) -> Tensor:
    """uint8 images ``[N, C, H, W]`` -> float model input in ``[-1, 1]``."""
    return (x.float() / 255.0 - 0.5) / 0.5


def seed_all(seed: int) -> torch.Generator:
    """Seed torch's global RNG and return a CPU generator (for batch order and sampling)."""
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def check_pair(images: Tensor, labels: Tensor, what: str) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(
            f"{what} images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
        )
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{what} labels must be 1-D with one label per image, got {tuple(labels.shape)} "
            f"for {images.shape[0]} images"
        )


def require(images: Tensor, labels: Tensor, what: str, method: str) -> None:
    """Validate an (images, labels) pair and refuse an empty one."""
    check_pair(images, labels, what)
    if images.shape[0] == 0:
        raise ValueError(f"{method} needs at least one {what} image")


def retained_classes(num_classes: int, forget_classes: Sequence[int]) -> list[int]:
    forget = set(forget_classes)
    return [c for c in range(num_classes) if c not in forget]


def batch_indices(
    n: int, batch_size: int, generator: torch.Generator | None, shuffle: bool = True
) -> list[Tensor]:
    """Index batches over ``range(n)``; a trailing batch of one is merged into the previous one
    (BatchNorm cannot train on a single sample)."""
    if n <= 0:
        return []
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    chunks = list(order.split(batch_size))
    if len(chunks) > 1 and chunks[-1].numel() == 1:
        chunks[-2] = torch.cat([chunks[-2], chunks.pop()])
    return chunks


def cycle_indices(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless index batches over ``range(n)``, reshuffled every pass."""
    if n <= 0:
        raise ValueError("cannot cycle over an empty set")
    while True:
        yield from batch_indices(n, batch_size, generator)


def load_batch(
    images: Tensor, labels: Tensor, idx: Tensor, device: torch.device
) -> tuple[Tensor, Tensor]:
    x = to_input(images[idx].to(device, non_blocking=True))
    y = labels[idx].to(device, dtype=torch.long, non_blocking=True)
    return x, y


@torch.no_grad()
def predict(
    model: nn.Module, images: Tensor, device: torch.device, batch_size: int = 256
) -> Tensor:
    """Predicted labels (CPU int64) in eval mode; the model's mode is restored."""
    with eval_mode(model):
        out = [
            model(to_input(images[i : i + batch_size].to(device))).argmax(1).cpu()
            for i in range(0, images.shape[0], batch_size)
        ]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy(
    model: nn.Module, images: Tensor, labels: Tensor, device: torch.device, batch_size: int = 256
) -> float | None:
    if images.shape[0] == 0:
        return None
    pred = predict(model, images, device, batch_size)
    return float((pred == labels.cpu().long()).float().mean())


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def keep_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Restore the model's train/eval mode on exit."""
    was_training = model.training
    try:
        yield model
    finally:
        model.train(was_training)


def make_optimizer(
    name: str,
    params: Iterable[nn.Parameter],
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


class Progress:
    """Turns step counts into a few ``progress(fraction, phase)`` calls (about ``reports`` in all,
    plus one at the start and one at the end)."""

    def __init__(self, fn: ProgressFn, total_steps: int, reports: int = 20) -> None:
        self._fn = fn
        self._total = max(1, total_steps)
        self._every = max(1, self._total // max(1, reports))
        self._done = 0
        self._last = -1.0

    def _emit(self, fraction: float, phase: str) -> None:
        fraction = min(1.0, max(0.0, fraction))
        self._last = fraction
        self._fn(fraction, phase)

    def start(self, phase: str) -> None:
        self._emit(0.0, phase)

    def advance(self, phase: str, steps: int = 1) -> None:
        before = self._done // self._every
        self._done = min(self._total, self._done + steps)
        if self._done // self._every != before and self._done < self._total:
            self._emit(self._done / self._total, phase)

    def finish(self, phase: str = "done") -> None:
        self._done = self._total
        self._emit(1.0, phase)


def train_supervised(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    device: torch.device,
    generator: torch.Generator,
    progress: Progress,
    phase: str,
    penalty: Callable[[int], Tensor | None] | None = None,
    loss_fn: BatchLoss | None = None,
) -> dict[str, float | int | None]:
    """Cross-entropy training (train mode), or ``loss_fn(outputs, labels, batch_indices)``
    instead. ``penalty(epoch)`` adds a regulariser to every step's loss. Returns the step count
    and the last epoch's mean loss."""
    criterion = nn.CrossEntropyLoss()
    model.train()
    steps = 0
    last_loss = float("nan")
    for epoch in range(epochs):
        total, count = 0.0, 0
        for idx in batch_indices(images.shape[0], batch_size, generator):
            x, y = load_batch(images, labels, idx, device)
            out = model(x)
            loss = criterion(out, y) if loss_fn is None else loss_fn(out, y, idx)
            if penalty is not None:
                extra = penalty(epoch)
                if extra is not None:
                    loss = loss + extra
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += float(loss.detach()) * idx.numel()
            count += idx.numel()
            steps += 1
            progress.advance(phase)
        last_loss = total / max(1, count)
    return {"steps": steps, "final_loss": finite_or_none(last_loss)}


class FineTuneRecipe(Protocol):
    """The fields every fine-tuning method's configuration has."""

    @property
    def epochs(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def lr(self) -> float: ...
    @property
    def momentum(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def optimizer(self) -> str: ...


def fine_tune(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    recipe: FineTuneRecipe,
    *,
    device: torch.device,
    generator: torch.Generator,
    progress: ProgressFn,
    phase: str,
    params: Iterable[nn.Parameter] | None = None,
    penalty: Callable[[int], Tensor | None] | None = None,
    after_step: Callable[[], None] | None = None,
) -> dict[str, float | int | None]:
    """Supervised training for ``recipe.epochs`` with a cosine schedule, the model's mode
    restored after, progress reported as ``phase``. ``params``: what the optimizer moves (all
    parameters by default); ``after_step`` runs after every optimizer step (e.g. to re-apply
    a mask)."""
    total = recipe.epochs * steps_per_epoch(images.shape[0], recipe.batch_size)
    report = Progress(progress, total)
    report.start(phase)
    optimizer = make_optimizer(
        recipe.optimizer,
        model.parameters() if params is None else params,
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
    )
    hook = (
        None if after_step is None else optimizer.register_step_post_hook(lambda *_: after_step())
    )
    try:
        with keep_mode(model):
            stats = train_supervised(
                model,
                images,
                labels,
                epochs=recipe.epochs,
                batch_size=recipe.batch_size,
                optimizer=optimizer,
                scheduler=cosine_schedule(optimizer, total),
                device=device,
                generator=generator,
                progress=report,
                phase=phase,
                penalty=penalty,
            )
    finally:
        if hook is not None:
            hook.remove()
    report.finish()
    return stats


def distill_kl(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """SCRUB's official DistillKL: KL(teacher_T || student_T) * T^2, summed and divided by the
    batch. A teacher logit of ``-inf`` is a class the student must give no probability."""
    log_p_s = nn.functional.log_softmax(student / temperature, dim=1)
    p_t = nn.functional.softmax(teacher / temperature, dim=1)
    kl = nn.functional.kl_div(log_p_s, p_t, reduction="sum")
    return kl * temperature**2 / student.shape[0]


@torch.no_grad()
def logits_without(
    model: nn.Module,
    images: Tensor,
    removed: Sequence[int],
    device: torch.device,
    batch_size: int = 256,
) -> Tensor:
    """The model's logits (eval mode, on ``device``) with the ``removed`` classes at ``-inf``:
    what it predicts once those classes no longer exist, the next class taking their share."""
    with eval_mode(model):
        out = torch.cat(
            [
                model(to_input(images[i : i + batch_size].to(device)))
                for i in range(0, images.shape[0], batch_size)
            ]
        )
    out[:, list(removed)] = float("-inf")
    return out


def distilled_loss(teacher_logits: Tensor, weight: float, temperature: float) -> BatchLoss:
    """``(1 - weight) * CE(labels) + weight * distill_kl(teacher_logits)``, for
    :func:`train_supervised`; ``teacher_logits[i]`` belongs to training image ``i``."""
    criterion = nn.CrossEntropyLoss()

    def loss(out: Tensor, y: Tensor, idx: Tensor) -> Tensor:
        value = weight * distill_kl(out, teacher_logits[idx.to(out.device)], temperature)
        return value if weight >= 1 else value + (1 - weight) * criterion(out, y)

    return loss


def steps_per_epoch(n: int, batch_size: int) -> int:
    if n <= 0:
        return 0
    k = math.ceil(n / batch_size)
    if k > 1 and n % batch_size == 1:
        k -= 1
    return k


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, images: Tensor, device: torch.device, batch_size: int = 64
) -> int:
    """Recompute every BatchNorm layer's running mean and variance from ``images`` (a forward
    pass in train mode, no gradient, the exact average over all batches); returns how many
    layers were reset. Methods that train on synthetic inputs (UNSIR's noise) leave running
    statistics fitted to those inputs, which damages every class at evaluation."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers or images.shape[0] == 0:
        return 0
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch weighs the same
    with keep_mode(model):
        model.train()
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size]
            if batch.shape[0] > 1 or start == 0:  # BatchNorm1d refuses a batch of one
                model(to_input(batch.to(device)))
    for m, momentum in zip(layers, momenta, strict=True):
        m.momentum = momentum
    return len(layers)
