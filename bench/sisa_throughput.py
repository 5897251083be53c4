"""SISA's training throughput against a plain PyTorch loop (item 2 of :mod:`bench.sisa_deletion`),
and the plain loop itself: one tensor of all images, manual batches, the same SGD recipe and model.

    .venv/bin/python -m bench.sisa_deletion --throughput-only    # only this comparison
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import torch

from bench.harness import contention, wait_quiet
from bench.sisa_setup import IMAGE_SIZE, RECIPE, SHARDS, SLICES, Scale, bench_data, parameters


def decode_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of a split, classes in sorted order (as the service indexes them)."""
    from worker.training.data import load_images

    paths: list[Path] = []
    labels: list[int] = []
    classes = sorted(d.name for d in (root / split).iterdir() if d.is_dir())
    for index, name in enumerate(classes):
        for path in sorted((root / split / name).iterdir()):
            paths.append(path)
            labels.append(index)
    images = load_images(paths, image_size=IMAGE_SIZE, channels=3)
    return images, torch.tensor(labels, dtype=torch.int64)


class PlainLoop:
    """A plain PyTorch loop: all images in one float tensor, shuffled manual batches, SGD.

    `run(passes)` trains until that many samples went through the model (the last epoch
    partial), so it can match exactly the work of the SISA training it is compared with; the
    model and optimizer carry over between calls.
    """

    def __init__(self, images_u8: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
        from worker.training.architectures import build_model

        torch.manual_seed(0)
        self.net = build_model(
            "small_cnn", num_classes=num_classes, in_channels=3, image_size=IMAGE_SIZE
        )
        self.optimizer = torch.optim.SGD(
            self.net.parameters(),
            lr=RECIPE["lr"],
            momentum=RECIPE["momentum"],
            weight_decay=RECIPE["weight_decay"],
        )
        # Normalised once, outside the timed loop: the most favourable plain baseline.
        self.inputs = images_u8.float().div(127.5).sub(1.0)
        self.targets = labels.long()

    def run(self, sample_passes: int) -> float:
        n, batch = self.inputs.shape[0], int(RECIPE["batch_size"])
        done = 0
        self.net.train()
        began = time.perf_counter()
        while done < sample_passes:
            order = torch.randperm(n)[: sample_passes - done]
            for idx in order.split(batch):
                self.optimizer.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(
                    self.net(self.inputs[idx]), self.targets[idx]
                )
                loss.backward()
                self.optimizer.step()
            done += order.numel()
        return time.perf_counter() - began


def _slice_training(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images_u8: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    seed: int,
) -> float:
    """One SISA slice-training as `train_shard` runs it, minus the store and the database."""
    from worker.training.trainer import checkpoint_bytes, train_epochs

    began = time.perf_counter()
    train_epochs(
        net,
        optimizer,
        images_u8,
        labels,
        epochs=epochs,
        batch_size=int(RECIPE["batch_size"]),
        seed=seed,
        device=torch.device("cpu"),
    )
    checkpoint_bytes(net, optimizer)
    return time.perf_counter() - began


def interleaved_throughput(
    images_u8: torch.Tensor, labels: torch.Tensor, *, epochs_per_slice: int, num_classes: int
) -> dict[str, Any]:
    """SISA's training work against the plain loop, alternated slice by slice.

    The service-level comparison trains SISA and the plain loop minutes apart; on a machine
    shared with other jobs the load differs between the two and swamps the difference being
    measured. Here each SISA slice-training (the service's own `train_epochs` on the shard's
    cumulative slices, then serialising the checkpoint as `train_shard` does) is followed or
    preceded (alternately, to cancel drift) by the plain loop running the same sample passes,
    so both sides see the same load. It leaves out what only the service does (decoding, the
    store, the database), which the service-level figures include.
    """
    from worker.training.architectures import build_model
    from worker.training.trainer import Recipe, make_optimizer

    recipe = Recipe(**RECIPE)  # type: ignore[arg-type]
    plain = PlainLoop(images_u8, labels, num_classes)
    order = torch.randperm(images_u8.shape[0], generator=torch.Generator().manual_seed(0))
    sisa_s = plain_s = 0.0
    passes = 0
    record: dict[str, Any] = {}
    with contention(record):
        for shard, members in enumerate(order.chunk(SHARDS)):
            torch.manual_seed(shard)
            net = build_model(
                "small_cnn", num_classes=num_classes, in_channels=3, image_size=IMAGE_SIZE
            )
            optimizer = make_optimizer(net, recipe)
            x, y = images_u8[members], labels[members]
            for slice_ in range(SLICES):
                end = len(members) * (slice_ + 1) // SLICES  # cumulative slices
                work = end * epochs_per_slice

                step = functools.partial(
                    _slice_training,
                    net,
                    optimizer,
                    x[:end],
                    y[:end],
                    epochs=epochs_per_slice,
                    seed=shard * SLICES + slice_,
                )
                if (shard * SLICES + slice_) % 2 == 0:
                    sisa_s += step()
                    plain_s += plain.run(work)
                else:
                    plain_s += plain.run(work)
                    sisa_s += step()
                passes += work
    return {
        "sample_passes_each": passes,
        "epochs_per_slice": epochs_per_slice,
        "sisa_s": sisa_s,
        "plain_s": plain_s,
        "sisa_passes_per_s": passes / sisa_s,
        "plain_passes_per_s": passes / plain_s,
        "ratio": plain_s / sisa_s,
        **record,
    }


@torch.no_grad()
def accuracy(net: torch.nn.Module, images_u8: torch.Tensor, labels: torch.Tensor) -> float:
    net.eval()
    correct = 0
    for x, y in zip(images_u8.split(512), labels.split(512), strict=True):
        correct += int((net(x.float().div(127.5).sub(1.0)).argmax(1) == y).sum())
    return correct / labels.numel()


def warm_up() -> None:
    """A few steps first, so one-time kernel set-up is charged to neither side."""
    from worker.training.architectures import build_model

    net = build_model("small_cnn", num_classes=10, in_channels=3, image_size=IMAGE_SIZE)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(64, 3, IMAGE_SIZE, IMAGE_SIZE), torch.randint(0, 10, (64,))
    for _ in range(10):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()


def run_throughput(scale: Scale, seed: int, quiet_s: float) -> dict[str, Any]:
    """Only item 2, alternated slice by slice (a few minutes instead of the full run)."""
    train_images, train_labels = decode_split(bench_data(scale, seed), "train")
    warm_up()
    waited = wait_quiet(quiet_s)
    result = interleaved_throughput(
        train_images,
        train_labels,
        epochs_per_slice=scale.epochs_per_slice,
        num_classes=int(train_labels.max()) + 1,
    )
    return {
        "parameters": parameters(
            scale, seed, n_train=int(train_images.shape[0]), torch_threads=torch.get_num_threads()
        ),
        "targets": {"throughput_ratio_min": 0.9},
        "waited_for_quiet_s": round(waited, 1),
        "interleaved": result,
    }
