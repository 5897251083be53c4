"""How often UNSIR clears the class-forgetting bar across base models and unlearning seeds.

    .venv/bin/python -m bench.unsir_robustness            # 4 base models x 2 seeds per config

The bar is the one of the class-forgetting test: on a six-class Animal-MNIST subset (300 train
and 200 test images per class, 28 px, small_cnn trained 20 epochs), forget "elephant" to at
most 5% test accuracy while no other class loses more than 5 points. One UNSIR request is
cheap and its result depends on the base model and the seed, so a single passing run says
little: this runs each configuration on several base models (different init seeds) with
several unlearning seeds and counts the passes. It calls the method directly (no service), on
the same tensors the service would hand it. Results: bench/results/unsir_robustness.json.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import torch

from bench.harness import unpack, write_result

CLASSES = ("bear", "cat", "cow", "elephant", "giraffe", "zebra")
FORGET = CLASSES.index("elephant")
CONFIGS: dict[str, dict[str, Any]] = {
    "defaults (one impair, one repair epoch)": {},
    # What bench.unsir_sweep picked on the two large benchmark datasets, before the defaults
    # took a larger noise batch and retain subset for the small ones.
    "sweep's pick (64-sample noise, 100 retain per class)": {
        "noise_batch_size": 64,
        "retain_per_class": 100,
    },
    "longer schedule (the integration test's)": {
        "noise_batch_size": 128,
        "noise_repeats": 4,
        "impair_lr": 0.005,
        "impair_epochs": 2,
        "repair_lr": 0.001,
        "repair_epochs": 6,
        "batch_size": 64,
    },
}


def split(root: Path, name: str, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    from worker.training.data import load_images

    paths: list[Path] = []
    labels: list[int] = []
    for index, cls in enumerate(CLASSES):
        files = sorted((root / name / cls).iterdir())[:per_class]
        paths += files
        labels += [index] * len(files)
    return load_images(paths, image_size=28, channels=1), torch.tensor(labels)


def per_class_accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list:
    from worker.training.data import to_model_input

    model.eval()
    with torch.no_grad():
        predicted = model(to_model_input(images)).argmax(1)
    return [float((predicted[labels == c] == c).float().mean()) for c in range(len(CLASSES))]


def train_base(base_seed: int, train_x: torch.Tensor, train_y: torch.Tensor) -> torch.nn.Module:
    """The base model of one init seed: small_cnn trained 20 epochs on the whole subset."""
    from worker.training.architectures import build_model
    from worker.training.trainer import Recipe, make_optimizer, train_epochs

    torch.manual_seed(base_seed)
    net = build_model("small_cnn", num_classes=len(CLASSES), in_channels=1, image_size=28)
    train_epochs(
        net,
        make_optimizer(net, Recipe()),
        train_x,
        train_y,
        epochs=20,
        batch_size=64,
        seed=base_seed,
        device=torch.device("cpu"),
    )
    return net


def forget(
    net: torch.nn.Module,
    config: dict[str, Any],
    seed: int,
    retain_x: torch.Tensor,
    retain_y: torch.Tensor,
) -> tuple[torch.nn.Module, float]:
    """One UNSIR request on a copy of ``net``: the unlearned copy and the seconds it took."""
    from worker.unlearning.base import UnlearningInputs
    from worker.unlearning.methods.unsir import UnsirConfig, run

    model = copy.deepcopy(net)
    began = time.perf_counter()
    run(
        UnlearningInputs(
            model=model,
            forget_images=torch.empty(0, dtype=torch.uint8),
            forget_labels=torch.empty(0, dtype=torch.long),
            retain_images=retain_x,
            retain_labels=retain_y,
            num_classes=len(CLASSES),
            forget_classes=[FORGET],
            device=torch.device("cpu"),
            seed=seed,
        ),
        UnsirConfig(**config),
    )
    return model, time.perf_counter() - began


def outcome(before: list[float], after: list[float]) -> dict[str, Any]:
    """Whether one run clears the bar, from per-class test accuracies before and after."""
    worst = min(after[c] - before[c] for c in range(len(CLASSES)) if c != FORGET)
    return {
        "forget_before": before[FORGET],
        "forget_after": after[FORGET],
        "worst_retained_change": worst,
        "passes": after[FORGET] <= 0.05 and worst >= -0.05,
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    summary = {}
    for label in CONFIGS:
        mine = [r for r in rows if r["config"] == label]
        summary[label] = {
            "passes": sum(r["passes"] for r in mine),
            "runs": len(mine),
            "max_forget_after": max(r["forget_after"] for r in mine),
            "worst_retained_change": min(r["worst_retained_change"] for r in mine),
            "mean_seconds": sum(r["seconds"] for r in mine) / len(mine),
        }
        print(label, summary[label])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bases", type=int, default=4, help="base models (init seeds)")
    parser.add_argument("--seeds", type=int, default=2, help="unlearning seeds per base model")
    args = parser.parse_args()
    from worker.unlearning.methods.unsir import UnsirConfig

    torch.set_num_threads(1)
    root = unpack("animal-mnist")
    train_x, train_y = split(root, "train", 300)
    test_x, test_y = split(root, "test", 200)
    keep = train_y != FORGET
    rows: list[dict[str, Any]] = []
    for base_seed in range(args.bases):
        net = train_base(base_seed, train_x, train_y)
        before = per_class_accuracy(net, test_x, test_y)
        for label, config in CONFIGS.items():
            for seed in range(args.seeds):
                model, seconds = forget(net, config, seed, train_x[keep], train_y[keep])
                after = per_class_accuracy(model, test_x, test_y)
                rows.append(
                    {
                        "config": label,
                        "base_seed": base_seed,
                        "seed": seed,
                        **outcome(before, after),
                        "seconds": seconds,
                    }
                )
        print(f"base model {base_seed} done", flush=True)
    summary = summarise(rows)
    config_values = {label: UnsirConfig(**config).model_dump() for label, config in CONFIGS.items()}
    path = write_result(
        "unsir_robustness",
        {"configs": config_values, "summary": summary, "rows": rows},
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
