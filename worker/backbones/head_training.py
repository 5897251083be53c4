"""Training the per-shard part of a heads model on cached features.

The same reproducible loop as the image trainer (batch order from (seed, epoch), the learning
rate a function of the step within the slice's cycle), so a shard resumed from a slice
checkpoint trains bit for bit like one trained from scratch on the CPU; no augmentation, since
the features are those of the stored images.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from worker.training.schedule import lr_at
from worker.training.trainer import Recipe, epoch_permutation


def train_on_features(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    on_batch: Callable[[int, int], None] | None = None,
    recipe: Recipe | None = None,
) -> list[float]:
    """Train ``model`` (the trainable part) in place; returns each epoch's mean loss."""
    n = features.shape[0]
    if n == 0 or labels.shape[0] != n:
        raise ValueError(f"need as many labels as features, got {n} and {labels.shape[0]}")
    recipe = recipe or Recipe()
    x_all = features.to(device)
    y_all = labels.to(device=device, dtype=torch.long)
    per_epoch = -(-n // batch_size)
    total = epochs * per_epoch
    done = 0
    losses: list[float] = []
    model.train()
    for epoch in range(epochs):
        order = epoch_permutation(n, seed=seed, epoch=epoch).to(device)
        loss_sum = torch.zeros((), device=device)
        for b, idx in enumerate(order.split(batch_size)):
            if recipe.schedule != "constant":
                lr = lr_at(
                    recipe.schedule,
                    recipe.lr,
                    step=epoch * per_epoch + b,
                    total=total,
                    warmup=recipe.warmup,
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(
                model(x_all[idx]), y_all[idx], label_smoothing=recipe.label_smoothing
            )
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * idx.numel()
            done += 1
            if on_batch is not None:
                on_batch(done, total)
        losses.append(float(loss_sum.item()) / n)
    return losses
