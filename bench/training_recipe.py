"""Training-recipe benchmark: what the from-scratch recipe reaches on a CIFAR-10 subset.

    .venv/bin/python -m bench.training_recipe                      # every run below
    .venv/bin/python -m bench.training_recipe --only new_15_s0,legacy_15_s0

The training engine itself (worker.training: the same loop, checkpoints aside, that trains each
SISA constituent) on one constituent holding the whole subset: 500 train images per class,
100 test images per class, 32 px. Each run reports test accuracy and accuracy on its own
(un-augmented) training images, so memorisation is visible next to generalisation.

Runs are merged into bench/results/training_recipe.json (or ``--out NAME``) one by one, so a
long run can be done in pieces; each run records its recipe, epochs, seed and wall time.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from app.core.recipe import RECOMMENDED
from bench.harness import CACHE, RESULTS, unpack, write_result
from worker.training.architectures import build_model
from worker.training.data import load_images
from worker.training.evaluate import predict_proba
from worker.training.trainer import Recipe, make_optimizer, seed_everything, train_epochs

CPU = torch.device("cpu")
LEGACY: dict[str, Any] = {}  # Recipe() defaults: constant lr 0.05, no norm, no augmentation


def _new(arch: str, **over: Any) -> dict[str, Any]:
    return {**RECOMMENDED[arch], **over}


# The "new_*" runs are the recommended recipe with crop + flip, as first adopted; small_cnn's
# default became flip alone ("flip_*") once its three seeds were measured. Both are pinned so a
# run's name keeps its meaning whatever the default.
CROP_FLIP = _new("small_cnn", augment="crop_flip")
FLIP = _new("small_cnn", augment="flip")

# name -> (architecture, recipe fields, epochs, seed, train images per class)
RUNS: dict[str, tuple[str, dict[str, Any], int, int, int]] = {
    "legacy_15_s0": ("small_cnn", LEGACY, 15, 0, 500),
    "new_15_s0": ("small_cnn", CROP_FLIP, 15, 0, 500),
    "new_15_s1": ("small_cnn", CROP_FLIP, 15, 1, 500),
    "new_15_s2": ("small_cnn", CROP_FLIP, 15, 2, 500),
    "new_30_s0": ("small_cnn", CROP_FLIP, 30, 0, 500),
    "noaug_15_s0": ("small_cnn", _new("small_cnn", augment="none"), 15, 0, 500),
    "flip_15_s0": ("small_cnn", FLIP, 15, 0, 500),
    "flip_15_s1": ("small_cnn", FLIP, 15, 1, 500),
    "flip_15_s2": ("small_cnn", FLIP, 15, 2, 500),
    "flip_30_s0": ("small_cnn", FLIP, 30, 0, 500),
    "lr02_15_s0": ("small_cnn", {**CROP_FLIP, "lr": 0.2}, 15, 0, 500),
    "resnet18_new_10_s0": ("resnet18", _new("resnet18"), 10, 0, 50),
    "resnet18_memorise_10_s0": ("resnet18", _new("resnet18", augment="none"), 10, 0, 50),
}


def cifar_subset(
    train_per_class: int, test_per_class: int = 100, seed: int = 0
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Seeded per-class subset of the CIFAR-10 JPEG export, decoded once into a .npy cache."""
    root = unpack("cifar10")
    rng = random.Random(seed)
    out = {}
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        paths: list[Path] = []
        labels: list[int] = []
        for label, class_dir in enumerate(sorted((root / split).iterdir())):
            files = sorted(class_dir.iterdir())
            chosen = rng.sample(files, count)
            paths += chosen
            labels += [label] * count
        images = load_images(
            paths,
            image_size=32,
            channels=3,
            cache_dir=CACHE / "npy",
            cache_key=f"cifar10-{split}-{count}-seed{seed}",
        )
        out[split] = (images, torch.tensor(labels))
    return out


def accuracy(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    proba = predict_proba(net, images, device=CPU)
    return float((proba.argmax(1) == labels).float().mean())


def run_one(name: str) -> dict[str, Any]:
    arch, fields, epochs, seed, per_class = RUNS[name]
    data = cifar_subset(per_class)
    norm = fields.get("norm")
    recipe = Recipe(**{k: v for k, v in fields.items() if k != "norm"})
    seed_everything(seed)
    net = build_model(arch, num_classes=10, in_channels=3, image_size=32, norm=norm)
    optimizer = make_optimizer(net, recipe)
    images, labels = data["train"]
    began = time.perf_counter()
    losses = train_epochs(
        net,
        optimizer,
        images,
        labels,
        epochs=epochs,
        batch_size=recipe.batch_size,
        seed=seed,
        device=CPU,
        recipe=recipe,
    )
    seconds = time.perf_counter() - began
    return {
        "architecture": arch,
        "recipe": {**asdict(recipe), "norm": norm},
        "epochs": epochs,
        "seed": seed,
        "train_images": int(labels.numel()),
        "test_images": int(data["test"][1].numel()),
        "train_accuracy": accuracy(net, images, labels),
        "test_accuracy": accuracy(net, *data["test"]),
        "final_loss": losses[-1],
        "train_seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
    }


# name -> recipe fields of a SISA ensemble (S=5, R=4, small_cnn, 6 epochs per slice: the same
# 75,000 sample passes as a 15-epoch monolithic model on the 5,000 images).
SISA_RUNS: dict[str, dict[str, Any]] = {
    "sisa_legacy": LEGACY,
    "sisa_new": CROP_FLIP,
}
SISA_SHARDS, SISA_SLICES, SISA_EPOCHS = 5, 4, 6


def run_sisa(name: str) -> dict[str, Any]:
    """SISA's ensemble against the monolithic runs: each shard trained slice by slice on its
    cumulative slices, one schedule cycle per slice, as the worker does."""
    fields = SISA_RUNS[name]
    data = cifar_subset(500)
    images, labels = data["train"]
    norm = fields.get("norm")
    recipe = Recipe(**{k: v for k, v in fields.items() if k != "norm"})
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    began = time.perf_counter()
    nets, passes = [], 0
    for shard in range(SISA_SHARDS):
        mine = order[shard::SISA_SHARDS]
        seed_everything(1000 + shard)
        net = build_model("small_cnn", num_classes=10, in_channels=3, image_size=32, norm=norm)
        optimizer = make_optimizer(net, recipe)
        for slice_ in range(SISA_SLICES):
            end = len(mine) * (slice_ + 1) // SISA_SLICES
            train_epochs(
                net, optimizer, images[mine[:end]], labels[mine[:end]], epochs=SISA_EPOCHS,
                batch_size=recipe.batch_size, seed=100 * shard + slice_, device=CPU,
                recipe=recipe,
            )  # fmt: skip
            passes += end * SISA_EPOCHS
        nets.append(net)
    test_images, test_labels = data["test"]
    probas = [predict_proba(net, test_images, device=CPU) for net in nets]
    ensemble = torch.stack(probas).mean(0)
    train_ensemble = torch.stack([predict_proba(n, images, device=CPU) for n in nets]).mean(0)
    return {
        "architecture": "small_cnn",
        "recipe": {**asdict(recipe), "norm": norm},
        "shards": SISA_SHARDS,
        "slices": SISA_SLICES,
        "epochs_per_slice": SISA_EPOCHS,
        "sample_passes": passes,
        "ensemble_test_accuracy": float((ensemble.argmax(1) == test_labels).float().mean()),
        "ensemble_train_accuracy": float((train_ensemble.argmax(1) == labels).float().mean()),
        "constituent_test_accuracy": [
            float((p.argmax(1) == test_labels).float().mean()) for p in probas
        ],
        "train_seconds": round(time.perf_counter() - began, 1),
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated run names (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="training_recipe")
    parser.add_argument(
        "--merge-parts",
        action="store_true",
        help="merge bench/results/training_recipe_part_*.json (runs done as separate processes) "
        "into training_recipe.json, each run keeping its own command",
    )
    args = parser.parse_args(argv)
    if args.merge_parts:
        print(f"wrote {merge_parts()}")
        return
    torch.set_num_threads(args.threads)
    names = args.only.split(",") if args.only else [*RUNS, *SISA_RUNS]
    unknown = [n for n in names if n not in RUNS and n not in SISA_RUNS]
    if unknown:
        raise SystemExit(f"unknown runs {unknown}; known: {', '.join([*RUNS, *SISA_RUNS])}")
    for name in names:
        result = run_sisa(name) if name in SISA_RUNS else run_one(name)
        print(name, json.dumps(result))
        path = RESULTS / f"{args.out}.json"
        runs = json.loads(path.read_text()).get("runs", {}) if path.is_file() else {}
        runs[name] = result
        write_result(args.out, {"runs": runs, "summary": summarise(runs)})


def merge_parts() -> Path:
    runs: dict[str, dict[str, Any]] = {}
    for part in sorted(RESULTS.glob("training_recipe_part_*.json")):
        body = json.loads(part.read_text())
        for name, result in body["runs"].items():
            runs[name] = {**result, "command": body["command"], "finished_at": body["finished_at"]}
    return write_result("training_recipe", {"runs": runs, "summary": summarise(runs)})


def summarise(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def test(name: str) -> float | None:
        run = runs.get(name, {})
        return run.get("test_accuracy", run.get("ensemble_test_accuracy"))

    def seeds(prefix: str) -> dict[str, Any]:
        found = [t for s in range(3) if (t := test(f"{prefix}_15_s{s}")) is not None]
        spread = round(100 * (max(found) - min(found)), 2) if len(found) > 1 else None
        return {
            "test_15_seeds": found,
            "seed_spread_points": spread,
            "test_30": test(f"{prefix}_30_s0"),
        }

    return {
        "small_cnn_legacy_15_test": test("legacy_15_s0"),
        "small_cnn_crop_flip": seeds("new"),
        "small_cnn_flip": seeds("flip"),
        "small_cnn_default_augment": RECOMMENDED["small_cnn"]["augment"],
        "sisa_ensemble_test": {"legacy": test("sisa_legacy"), "crop_flip": test("sisa_new")},
        "targets": {"test_15": 0.59, "test_30": 0.65, "seed_spread_points": 2.0},
    }


if __name__ == "__main__":
    main()
