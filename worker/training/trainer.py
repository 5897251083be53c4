"""SGD training loop with reproducible, resumable batch order and byte-level checkpoints.

Everything random in a run (batch order, augmentation) is drawn from private generators seeded
by (seed, epoch), and the learning rate is a pure function of the step within the cycle, so a run
resumed from a checkpoint repeats a straight-through run bit for bit on the CPU.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worker.training import augment as aug
from worker.training.augment import Augment
from worker.training.data import to_model_input
from worker.training.schedule import Schedule, lr_at


@dataclass(frozen=True)
class Recipe:
    """The optimisation recipe; the defaults are the historical behaviour (constant lr, no
    augmentation, plain cross-entropy), which a stored recipe without these fields keeps."""

    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    schedule: Schedule = "constant"
    warmup: float = 0.25
    augment: Augment = "none"
    label_smoothing: float = 0.0


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
    )


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and, when present, CUDA), numpy and random."""
    torch.manual_seed(seed)  # also seeds every CUDA device when CUDA is initialised/available
    np.random.seed(seed % 2**32)
    random.seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """Stable 63-bit seed for one epoch's batch order (independent of PYTHONHASHSEED)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


def epoch_permutation(n: int, *, seed: int, epoch: int) -> torch.Tensor:
    """Sample order for ``epoch``; drawn from a private generator, not the global RNG."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(n, generator=generator)


def train_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images_u8: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    on_batch: Callable[[int, int], None] | None = None,
    first_epoch: int = 0,
    recipe: Recipe | None = None,
    cycle_epochs: int | None = None,
) -> list[float]:
    """Train ``model`` in place for epochs ``first_epoch .. first_epoch + epochs - 1``.

    Returns the mean training loss of each epoch run. Batch order and augmentation depend only
    on (seed, epoch index), and the learning rate on the step within a schedule cycle of
    ``cycle_epochs`` epochs starting at epoch 0 (default: ``first_epoch + epochs``), so resuming
    at ``first_epoch=k`` from a checkpoint taken after epoch k-1 reproduces a straight-through run
    exactly on the CPU. ``recipe`` None is the historical recipe (its lr is the optimizer's).
    ``on_batch(done, total)`` counts batches of this call only.
    """
    n = _validate(images_u8, labels, epochs=epochs, batch_size=batch_size)
    recipe = recipe or Recipe()
    # Move once: per-batch host->device copies would dominate small-image training on GPU.
    images_dev = images_u8.to(device)
    labels_dev = labels.to(device=device, dtype=torch.long)
    batches_per_epoch = -(-n // batch_size)
    cycle_steps = (cycle_epochs or first_epoch + epochs) * batches_per_epoch
    total = epochs * batches_per_epoch
    done = 0
    losses: list[float] = []
    model.train()
    for epoch in range(first_epoch, first_epoch + epochs):
        order = epoch_permutation(n, seed=seed, epoch=epoch).to(device)
        draws = aug.epoch_draws(recipe.augment, n, seed=seed, epoch=epoch)
        # Accumulate on-device; a .item() per batch would force a GPU sync every step.
        loss_sum = torch.zeros((), device=device)
        for b, idx in enumerate(order.split(batch_size)):
            if recipe.schedule != "constant":
                step = epoch * batches_per_epoch + b
                _set_lr(optimizer, recipe, step=step, total=cycle_steps)
            x = _augmented(images_dev[idx], draws, b * batch_size, device)
            loss = _train_step(model, optimizer, x, labels_dev[idx], recipe.label_smoothing)
            loss_sum += loss.detach() * idx.numel()
            done += 1
            if on_batch is not None:
                on_batch(done, total)
        losses.append(float(loss_sum.item()) / n)
    return losses


def _set_lr(optimizer: torch.optim.Optimizer, recipe: Recipe, *, step: int, total: int) -> None:
    lr = lr_at(recipe.schedule, recipe.lr, step=step, total=total, warmup=recipe.warmup)
    for group in optimizer.param_groups:
        group["lr"] = lr


def _augmented(
    x_u8: torch.Tensor, draws: aug.EpochDraws, start: int, device: torch.device
) -> torch.Tensor:
    """The batch at positions ``start..`` of the epoch order, augmented by those positions' draws."""
    if draws.offsets is None and draws.flips is None:
        return x_u8
    end = start + x_u8.shape[0]
    offsets = draws.offsets[start:end].to(device) if draws.offsets is not None else None
    flips = draws.flips[start:end].to(device) if draws.flips is not None else None
    return aug.apply(x_u8, offsets, flips)


def _train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x_u8: torch.Tensor,
    y: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(to_model_input(x_u8)), y, label_smoothing=label_smoothing)
    loss.backward()
    optimizer.step()
    return loss


def _validate(
    images_u8: torch.Tensor, labels: torch.Tensor, *, epochs: int, batch_size: int
) -> int:
    if images_u8.dtype != torch.uint8 or images_u8.ndim != 4:
        raise ValueError(
            f"images must be uint8 [N, C, H, W], got {images_u8.dtype} {tuple(images_u8.shape)}"
        )
    n = images_u8.shape[0]
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must be [N={n}], got {tuple(labels.shape)}")
    if n == 0:
        raise ValueError("cannot train on an empty dataset")
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"need epochs >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
    return n


def checkpoint_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> bytes:
    """Serialise model (and optimizer, for exact resumption) state into bytes."""
    buffer = io.BytesIO()
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
    }
    torch.save(state, buffer)
    return buffer.getvalue()


def load_checkpoint(
    blob: bytes,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: torch.device | str = "cpu",
) -> None:
    """Restore state written by ``checkpoint_bytes``; weights_only=True so blobs cannot run code."""
    state = torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)
    model.load_state_dict(state["model"])
    if optimizer is None:
        return
    if state.get("optimizer") is None:
        # Silently starting with fresh momentum would break bit-exact resumption.
        raise ValueError("checkpoint has no optimizer state but an optimizer was given")
    optimizer.load_state_dict(state["optimizer"])
