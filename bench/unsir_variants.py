"""UNSIR configurations called directly (no service) on the robustness benchmark's base models:
how often each clears the class-forgetting bar, and what it costs in CPU seconds.

    OMP_NUM_THREADS=1 python -m bench.unsir_variants      # every variant, 4 bases x 2 seeds
    OMP_NUM_THREADS=1 python -m bench.unsir_variants --scenario cifar10 --set repair
        # the repair variants on bench.class_forgetting's full-size CIFAR-10 base ("cat")

Same six-class Animal-MNIST subset, base models and bar as ``bench.unsir_robustness`` (it
trains any base model that is missing): "elephant" at most 5% on the test split, no other class
losing more than 5 points. The figures are read on the test split less the validation split,
and on the validation split too, so one can see how well the service's check (validation)
predicts the bar (test). Used to pick UNSIR's defaults and escalation steps; there is no
verification or escalation here. Results: bench/results/unsir_variants.json.

``--scenario animal-mnist`` or ``cifar10`` runs on bench.class_forgetting's full-size base
model instead (trained if missing, under its work folder), forgetting its class; the rows
then also give the retained accuracy (every other class's test images, less the validation
split) next to the parent's, for the issue's "within 1 point of the retrain" comparison.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from dataclasses import dataclass
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
# The repair: labels (the paper's) against distillation from the parent without the class.
REPAIR_VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("defaults", {}),
    ("distilled repair (T 1)", {"repair_distill": 1.0, "distill_temperature": 1.0}),
    ("distilled repair (T 4)", {"repair_distill": 1.0, "distill_temperature": 4.0}),
    ("half distilled (T 1)", {"repair_distill": 0.5, "distill_temperature": 1.0}),
    (
        "distilled repair (T 1), 100 per class",
        {"repair_distill": 1.0, "distill_temperature": 1.0, "retain_per_class": 100},
    ),
    (
        "distilled repair (T 1), 1 epoch",
        {"repair_distill": 1.0, "distill_temperature": 1.0, "repair_epochs": 1},
    ),
)
# The distilled repair against the bar on the robustness subset.
DISTILLED_VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("defaults", {}),
    ("distilled repair (T 4)", {"repair_distill": 1.0, "distill_temperature": 4.0}),
    (
        "distilled repair (T 4), 4 repair epochs",
        {"repair_distill": 1.0, "distill_temperature": 4.0, "repair_epochs": 4},
    ),
)
SETS = {"bar": VARIANTS, "repair": REPAIR_VARIANTS, "distilled": DISTILLED_VARIANTS}


def _split(data: Path, classes: list[str], part: str) -> tuple[list[Path], Any]:
    import torch

    paths, labels = split_files(data, classes, part)
    return paths, torch.tensor(labels)


def _predict(net: Any, images: Any) -> Any:
    import torch

    from worker.training.data import to_model_input

    net.eval()
    with torch.no_grad():
        return torch.cat(
            [net(to_model_input(images[i : i + 512])).argmax(1) for i in range(0, len(images), 512)]
        )


def _per_class(net: Any, images: Any, labels: Any, n: int) -> list[float]:
    pred = _predict(net, images)
    return [float((pred[labels == c] == c).float().mean()) for c in range(n)]


def _retained(net: Any, images: Any, labels: Any) -> float:
    """Accuracy on the other classes' images, the forgotten class counted as a wrong answer
    (as the service's ``retain`` figure)."""
    return float((_predict(net, images) == labels).float().mean())


def _changes(after: list[float], before: list[float]) -> list[float]:
    return [round(100 * (a - b), 1) for a, b in zip(after, before, strict=True)]


def _robustness_base(base_seed: int) -> tuple[cf.Scenario, Path, dict[str, Any], str]:
    cf.WORK = PROJECT_ROOT / ".cache" / "bench" / "unsir_robustness" / f"base-{base_seed}"
    s = ur.scenario(base_seed)
    data = cf.subset_copy(s)  # a fresh copy: a service run may have erased the class from it
    base = cf.train_base(s, data, cf.WORK / "homes" / f"base-{base_seed}", 0.0)
    return s, data, base, ur.FORGET


def _full_base(dataset: str) -> tuple[cf.Scenario, Path, dict[str, Any], str]:
    (s,) = [s for s in cf.FULL if s.dataset == dataset]
    data = cf.subset_copy(s)
    base = cf.train_base(s, data, cf.WORK / "homes" / f"{dataset}-base", 0.0)
    return s, data, base, s.forget


_SHOWN = (
    "variant",
    "seed",
    "passes",
    "forget_after",
    "retained_accuracy_after",
    "method_cpu_seconds",
)


@dataclass
class _TestSplit:
    """The test images, split into the validation part (the service's check) and the rest (the
    bar), with the forgotten class."""

    images: Any
    labels: Any
    validation: Any
    forget: int
    n: int

    def figures(self, net: Any) -> tuple[list[float], list[float], float]:
        """Per-class accuracy on the held-out part and on validation, and retained accuracy."""
        held, val = ~self.validation, self.validation
        others = held & (self.labels != self.forget)
        return (
            _per_class(net, self.images[held], self.labels[held], self.n),
            _per_class(net, self.images[val], self.labels[val], self.n),
            _retained(net, self.images[others], self.labels[others]),
        )


def _row(
    split: _TestSplit, before: tuple[list[float], list[float], float], net: Any
) -> dict[str, Any]:
    after = split.figures(net)
    test_change = _changes(after[0], before[0])
    after_forget = round(after[0][split.forget], 3)
    worst = min(c for i, c in enumerate(test_change) if i != split.forget)
    return {
        "retained_accuracy_before": round(before[2], 4),
        "retained_accuracy_after": round(after[2], 4),
        "forget_after": after_forget,
        "worst_retained_change_points": worst,
        "passes": after_forget <= 0.05 and worst >= -5.0,
        "test_change": test_change,
        "validation_change": _changes(after[1], before[1]),
    }


def run_base(
    scenario: str, base_seed: int, seeds: int, variants: tuple[tuple[str, dict[str, Any]], ...]
) -> list[dict[str, Any]]:
    import torch

    from app.core.methods.unsir import UnsirConfig
    from app.repositories.samples import is_validation
    from worker.training.architectures import build_model
    from worker.training.data import load_images
    from worker.unlearning.base import UnlearningInputs
    from worker.unlearning.registry import get_method

    s, data, base, forget_name = (
        _robustness_base(base_seed) if scenario == "robustness" else _full_base(scenario)
    )
    channels = 1 if s.dataset == "animal-mnist" else 3
    classes = base["classes"]
    n, forget = len(classes), classes.index(forget_name)
    train_paths, train_labels = _split(data, classes, "train")
    test_paths, test_labels = _split(data, classes, "test")
    split = _TestSplit(
        images=load_images(test_paths, image_size=s.image_size, channels=channels),
        labels=test_labels,
        validation=torch.tensor(
            [is_validation(hashlib.sha256(p.read_bytes()).hexdigest()) for p in test_paths]
        ),
        forget=forget,
        n=n,
    )
    train = load_images(train_paths, image_size=s.image_size, channels=channels)
    keep = train_labels != forget
    run = get_method("unsir").run
    assert run is not None
    rows = []
    for label, overrides in variants:
        for seed in range(seeds):
            net = build_model(
                "small_cnn",
                num_classes=n,
                in_channels=channels,
                image_size=s.image_size,
                norm="batch",
            )
            net.load_state_dict(torch.load(base["state_dict"], weights_only=True))
            before = split.figures(net)
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
            row = _row(split, before, net)
            rows.append(
                {
                    "variant": label,
                    "config": overrides,
                    "scenario": scenario,
                    "base_seed": base_seed,
                    "seed": seed,
                    **{k: v for k, v in row.items() if not k.endswith("_change")},
                    "test_change_points": dict(zip(classes, row["test_change"], strict=True)),
                    "validation_change_points": dict(
                        zip(classes, row["validation_change"], strict=True)
                    ),
                    "method_cpu_seconds": round(seconds, 2),
                    "base_train_cpu_seconds": base.get("cpu_s"),
                }
            )
            print(json.dumps({k: rows[-1][k] for k in _SHOWN}), flush=True)
    return rows


def summarise(
    rows: list[dict[str, Any]], variants: tuple[tuple[str, dict[str, Any]], ...]
) -> list[dict[str, Any]]:
    out = []
    for label, overrides in variants:
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
                "mean_retained_accuracy_after": round(
                    statistics.mean(r["retained_accuracy_after"] for r in mine), 4
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
    parser.add_argument(
        "--scenario", choices=["robustness", "animal-mnist", "cifar10"], default="robustness"
    )
    parser.add_argument("--set", choices=sorted(SETS), default="bar", help="which variants")
    parser.add_argument("--name", default="unsir_variants", help="result file name")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    variants = SETS[args.set]
    bases = range(args.bases) if args.scenario == "robustness" else [0]
    rows = [row for b in bases for row in run_base(args.scenario, b, args.seeds, variants)]
    summary = summarise(rows, variants)
    for line in summary:
        print(line)
    path = write_result(args.name, {"summary": summary, "rows": rows})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
