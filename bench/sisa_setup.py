"""The set-up of the SISA benchmark on CIFAR-10 (:mod:`bench.sisa_deletion`): the shards,
slices, model and recipe every run uses, the scale of a run, and its seeded data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import PROJECT_ROOT, subset

WORK = PROJECT_ROOT / ".cache" / "bench" / "sisa_deletion"
SHARDS = 5
SLICES = 4
IMAGE_SIZE = 32  # CIFAR-10's own size: no resampling in the timed paths
RECIPE = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64}


@dataclass(frozen=True)
class Scale:
    train_per_class: int
    test_per_class: int
    epochs_per_slice: int


FULL = Scale(train_per_class=800, test_per_class=200, epochs_per_slice=4)
QUICK = Scale(train_per_class=100, test_per_class=40, epochs_per_slice=2)


def bench_data(scale: Scale, seed: int) -> Path:
    """The seeded CIFAR-10 subset, a private copy the service may erase files from."""
    return subset(
        "cifar10",
        WORK / "data",
        train_per_class=scale.train_per_class,
        test_per_class=scale.test_per_class,
        seed=seed,
    )


def parameters(scale: Scale, seed: int, **extra: Any) -> dict[str, Any]:
    """The recorded set-up of a run: what every result file of this benchmark names."""
    return {
        "dataset": "cifar10",
        "train_per_class": scale.train_per_class,
        "shards": SHARDS,
        "slices": SLICES,
        "epochs_per_slice": scale.epochs_per_slice,
        "architecture": "small_cnn",
        "image_size": IMAGE_SIZE,
        "recipe": RECIPE,
        "seed": seed,
        **extra,
    }
