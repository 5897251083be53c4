"""UNSIR configurations called directly (no service) on the robustness benchmark's base models:
how often each clears the class-forgetting bar, and what it costs in CPU seconds.

    OMP_NUM_THREADS=1 python -m bench.unsir_variants      # every variant, 4 bases x 2 seeds

Same six-class Animal-MNIST subset, base models and bar as ``bench.unsir_robustness`` (it
trains any base model that is missing): "elephant" at most 5% on the test split, no other class
losing more than 5 points. The figures are read on the test split less the validation split,
and on the validation split too, so one can see how well the service's check (validation)
predicts the bar (test). Used to pick UNSIR's defaults and escalation steps; there is no
verification or escalation here. Results: bench/results/unsir_variants.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench import class_forgetting as cf
from bench import unsir_robustness as ur
from bench.harness import PROJECT_ROOT, split_files, write_result

# (label, overrides on top of today's defaults)
VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "earlier defaults (BatchNorm trained on the noise, not recalibrated; 1 repair epoch; "
        "impair lr 0.002)",
        {
            "impair_batchnorm": "train",
            "recalibrate_bn": False,
            "repair_epochs": 1,
            "impair_lr": 0.002,
        },
    ),
    (
        "earlier defaults + recalibration",
        {"impair_batchnorm": "train", "repair_epochs": 1, "impair_lr": 0.002},
    ),
    (
        "BatchNorm trained on the noise, recalibrated; 2 repair epochs; impair lr 0.003",
        {"impair_batchnorm": "train", "impair_lr": 0.003},
    ),
    ("defaults (BatchNorm frozen, recalibrated; 2 repair epochs; impair lr 0.004)", {}),
    ("escalation step 1", {"repair_epochs": 4}),
    ("escalation step 2", {"impair_lr": 0.006, "repair_epochs": 4}),
)


def _split(data: Path, classes: list[str], part: str) -> tuple[list[Path], Any]:
    import torch

    paths, labels = split_files(data, classes, part)
    return paths, torch.tensor(labels)


def _per_class(net: Any, images: Any, labels: Any, n: int) -> list[float]:
    import torch

    from worker.training.data import to_model_input

    net.eval()
    with torch.no_grad():
        pred = torch.cat(
            [net(to_model_input(images[i : i + 512])).argmax(1) for i in range(0, len(images), 512)]
        )
    return [float((pred[labels == c] == c).float().mean()) for c in range(n)]


def _changes(after: list[float], before: list[float]) -> list[float]:
    return [round(100 * (a - b), 1) for a, b in zip(after, before, strict=True)]


def run_base(base_seed: int, seeds: int) -> list[dict[str, Any]]:
    import torch

    from app.core.methods.unsir import UnsirConfig
    from app.repositories.samples import is_validation
    from worker.training.architectures import build_model
    from worker.training.data import load_images
    from worker.unlearning.base import UnlearningInputs
    from worker.unlearning.registry import get_method

    cf.WORK = PROJECT_ROOT / ".cache" / "bench" / "unsir_robustness" / f"base-{base_seed}"
    s = ur.scenario(base_seed)
    data = cf.subset_copy(s)  # a fresh copy: a service run may have erased the class from it
    base = cf.train_base(s, data, cf.WORK / "homes" / f"base-{base_seed}", 0.0)
    classes = base["classes"]
    n, forget = len(classes), classes.index(ur.FORGET)
    train_paths, train_labels = _split(data, classes, "train")
    test_paths, test_labels = _split(data, classes, "test")
    validation = torch.tensor(
        [is_validation(hashlib.sha256(p.read_bytes()).hexdigest()) for p in test_paths]
    )
    train = load_images(train_paths, image_size=s.image_size, channels=1)
    test = load_images(test_paths, image_size=s.image_size, channels=1)
    keep = train_labels != forget
    run = get_method("unsir").run
    assert run is not None
    rows = []
    for label, overrides in VARIANTS:
        for seed in range(seeds):
            net = build_model(
                "small_cnn", num_classes=n, in_channels=1, image_size=s.image_size, norm="batch"
            )
            net.load_state_dict(torch.load(base["state_dict"], weights_only=True))
            before_test = _per_class(net, test[~validation], test_labels[~validation], n)
            before_val = _per_class(net, test[validation], test_labels[validation], n)
            cpu = time.process_time()
            run(
                UnlearningInputs(
                    model=net,
                    forget_images=torch.empty(0),
                    forget_labels=torch.empty(0),
                    retain_images=train[keep],
                    retain_labels=train_labels[keep],
                    num_classes=n,
                    forget_classes=[forget],
                    device=torch.device("cpu"),
                    seed=seed,
                ),
                UnsirConfig(**overrides),
            )
            seconds = time.process_time() - cpu
            after_test = _per_class(net, test[~validation], test_labels[~validation], n)
            after_val = _per_class(net, test[validation], test_labels[validation], n)
            test_change = _changes(after_test, before_test)
            val_change = _changes(after_val, before_val)
            after_forget = round(after_test[forget], 3)
            worst = min(c for i, c in enumerate(test_change) if i != forget)
            rows.append(
                {
                    "variant": label,
                    "config": overrides,
                    "base_seed": base_seed,
                    "seed": seed,
                    "forget_after": after_forget,
                    "worst_retained_change_points": worst,
                    "passes": after_forget <= 0.05 and worst >= -5.0,
                    "test_change_points": dict(zip(classes, test_change, strict=True)),
                    "validation_change_points": dict(zip(classes, val_change, strict=True)),
                    "method_cpu_seconds": round(seconds, 2),
                    "base_train_cpu_seconds": base.get("cpu_s"),
                }
            )
            print(json.dumps({k: rows[-1][k] for k in ("variant", "base_seed", "seed", "passes")}))
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for label, overrides in VARIANTS:
        mine = [r for r in rows if r["variant"] == label]
        out.append(
            {
                "variant": label,
                "config": overrides,
                "passes": sum(r["passes"] for r in mine),
                "runs": len(mine),
                "max_forget_after": max(r["forget_after"] for r in mine),
                "worst_retained_change_points": min(
                    r["worst_retained_change_points"] for r in mine
                ),
                "mean_method_cpu_seconds": round(
                    statistics.mean(r["method_cpu_seconds"] for r in mine), 2
                ),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bases", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    rows = [row for b in range(args.bases) for row in run_base(b, args.seeds)]
    summary = summarise(rows)
    for line in summary:
        print(line)
    path = write_result("unsir_variants", {"summary": summary, "rows": rows})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
