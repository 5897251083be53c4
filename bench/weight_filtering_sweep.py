"""Weight-filter training settings compared directly (no service) on bench.class_forgetting's
full-size base models: how much of the class each setting's filters leave, and what they cost
the other classes.

    OMP_NUM_THREADS=1 python -m bench.weight_filtering_sweep --dataset cifar10 [--set second]

For every setting: train the filters on the base model's training images (as the service's
filter job does on a one-shard model), apply the forgotten class's row, and read the class's
accuracy and the retained accuracy (the other classes' test images, less the validation
split) next to the base model's. Every setting is an override on the filter defaults of the
sweep's first run (``EARLIER``). Results: bench/results/weight_filtering_sweep_<dataset>.json.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import time
from typing import Any

from bench import class_forgetting as cf
from bench.harness import split_files, write_result

Settings = tuple[tuple[str, dict[str, Any]], ...]
# The filter defaults when the sweep was first run: every setting below is an override on
# these, so the sets mean the same whatever today's defaults are.
EARLIER = {
    "lambda_unlearn": 0.3,
    "keep_target": "labels",
    "distill_temperature": 2.0,
    "epochs": 5,
    "lr_schedule": "constant",
}
# The setting the seeds set picked (the defaults before the step-size sets)
DISTILLED_T2 = {"lambda_unlearn": 1.0, "keep_target": "parent", "distill_temperature": 2.0}
# Today's filter defaults, as overrides on EARLIER
DEFAULTS = {**DISTILLED_T2, "lr_schedule": "cosine", "epochs": 10}
# (label, overrides on top of EARLIER), in named sets run one after another
SETS: dict[str, Settings] = {
    "first": (
        ("earlier defaults", {}),
        ("lambda_unlearn 1", {"lambda_unlearn": 1.0}),
        ("lambda_unlearn 1, lambda_reg 5", {"lambda_unlearn": 1.0, "lambda_reg": 5.0}),
        ("10 epochs", {"epochs": 10}),
        ("lambda_unlearn 1, 10 epochs", {"lambda_unlearn": 1.0, "epochs": 10}),
    ),
    "second": (
        ("lambda_unlearn 1, 15 epochs", {"lambda_unlearn": 1.0, "epochs": 15}),
        ("lambda_unlearn 2, 10 epochs", {"lambda_unlearn": 2.0, "epochs": 10}),
        (
            "lambda_unlearn 1, 10 epochs, lambda_reg 20",
            {"lambda_unlearn": 1.0, "epochs": 10, "lambda_reg": 20.0},
        ),
        (
            "lambda_unlearn 1, 10 epochs, no pairs",
            {"lambda_unlearn": 1.0, "epochs": 10, "pair_fraction": 0.0},
        ),
    ),
    "keep": (
        ("kept classes distilled (T 2)", {"keep_target": "parent"}),
        (
            "kept classes distilled (T 2), lambda_unlearn 1",
            {"keep_target": "parent", "lambda_unlearn": 1.0},
        ),
        (
            "kept classes distilled (T 2), lambda_unlearn 1, 10 epochs",
            {"keep_target": "parent", "lambda_unlearn": 1.0, "epochs": 10},
        ),
        (
            "kept classes distilled (T 1), lambda_unlearn 1",
            {"keep_target": "parent", "lambda_unlearn": 1.0, "distill_temperature": 1.0},
        ),
    ),
    # no filters: only the reference row
    "reference": (),
    # the three closest settings over three filter seeds; the last became the defaults
    "seeds": (
        (
            "kept classes distilled (T 1), lambda_unlearn 1",
            {**DISTILLED_T2, "distill_temperature": 1.0},
        ),
        ("lambda_unlearn 1, 10 epochs", {"lambda_unlearn": 1.0, "epochs": 10}),
        ("kept classes distilled (T 2), lambda_unlearn 1", DISTILLED_T2),
    ),
    # the setting the seeds set picked, alone (a baseline for sets run on a new base model)
    "today": (("kept classes distilled (T 2), lambda_unlearn 1", DISTILLED_T2),),
    # the step size through training, on top of the defaults the seeds set picked
    "schedule": (
        ("cosine lr", {**DISTILLED_T2, "lr_schedule": "cosine"}),
        ("cosine lr, 10 epochs", {**DISTILLED_T2, "lr_schedule": "cosine", "epochs": 10}),
        ("lr 0.01", {**DISTILLED_T2, "lr": 0.01}),
    ),
    "schedule2": (
        (
            "cosine lr, 10 epochs, forget_fraction 0.3",
            {**DISTILLED_T2, "lr_schedule": "cosine", "epochs": 10, "forget_fraction": 0.3},
        ),
        ("cosine lr, 20 epochs", {**DISTILLED_T2, "lr_schedule": "cosine", "epochs": 20}),
    ),
    # around today's defaults (DISTILLED_T2, cosine, 10 epochs)
    "around": (
        ("defaults, lambda_reg 20", {**DEFAULTS, "lambda_reg": 20.0}),
        ("defaults, lambda_reg 5", {**DEFAULTS, "lambda_reg": 5.0}),
        ("defaults, batch 128", {**DEFAULTS, "batch_size": 128}),
        ("defaults, T 4", {**DEFAULTS, "distill_temperature": 4.0}),
    ),
}


def _figures(net: Any, images: Any, labels: Any, forget: int) -> dict[str, Any]:
    from worker.unlearning import _ops

    pred = _ops.predict(net, images, net_device(net))
    is_forget = labels == forget
    return {
        "forget_accuracy": round(float((pred[is_forget] == forget).float().mean()), 4),
        "retained_accuracy": round(
            float((pred[~is_forget] == labels[~is_forget]).float().mean()), 4
        ),
        "per_class": [
            round(float((pred[labels == c] == c).float().mean()), 4)
            for c in range(int(labels.max()) + 1)
        ],
    }


def _worst_retained_change(after: dict[str, Any], before: dict[str, Any], forget: int) -> float:
    """The largest loss of one retained class against the base model, in points."""
    changes = [
        100 * (a - b)
        for c, (a, b) in enumerate(zip(after["per_class"], before["per_class"], strict=True))
        if c != forget
    ]
    return round(min(changes), 1)


def _without_output(net: Any, images: Any, labels: Any, forget: int) -> dict[str, float]:
    import torch

    from worker.unlearning import _ops

    pred = _ops.logits_without(net, images, [forget], torch.device("cpu")).argmax(1)
    others = labels != forget
    return {
        "forget_accuracy": 0.0,
        "retained_accuracy": round(float((pred[others] == labels[others]).float().mean()), 4),
    }


def net_device(net: Any) -> Any:
    return next(net.parameters()).device


def run(dataset: str, settings: Settings, seeds: list[int]) -> list[dict[str, Any]]:
    import torch

    from app.core.methods.weight_filtering import FilterTrainingConfig
    from app.repositories.samples import is_validation
    from worker.training.architectures import build_model
    from worker.training.data import load_images
    from worker.unlearning.filtering import apply_filters, train_filters

    (s,) = [s for s in cf.FULL if s.dataset == dataset]
    data = cf.subset_copy(s)
    base = cf.train_base(s, data, cf.WORK / "homes" / f"{dataset}-base", 0.0)
    classes = base["classes"]
    n, forget = len(classes), classes.index(s.forget)
    channels = 1 if dataset == "animal-mnist" else 3
    train_paths, train_labels = split_files(data, classes, "train")
    test_paths, test_labels = split_files(data, classes, "test")
    held_out = torch.tensor(
        [not is_validation(hashlib.sha256(p.read_bytes()).hexdigest()) for p in test_paths]
    )
    train = load_images(train_paths, image_size=s.image_size, channels=channels)
    test = load_images(test_paths, image_size=s.image_size, channels=channels)[held_out]
    test_y = torch.tensor(test_labels)[held_out]
    parent = build_model(
        "small_cnn", num_classes=n, in_channels=channels, image_size=s.image_size, norm="batch"
    )
    parent.load_state_dict(torch.load(base["state_dict"], weights_only=True))
    before = _figures(parent, test, test_y, forget)
    rows: list[dict[str, Any]] = [
        {
            # the base model with the class's output removed (argmax over the other classes):
            # the behaviour a retrain's gain on the other classes comes from
            "setting": "reference: base model without the class's output",
            "before": before,
            "after": _without_output(parent, test, test_y, forget),
        }
    ]
    for (label, overrides), seed in itertools.product(settings, seeds):
        net = copy.deepcopy(parent)
        cpu = time.process_time()
        filters = train_filters(
            net,
            train,
            torch.tensor(train_labels),
            n,
            FilterTrainingConfig(**{**EARLIER, **overrides}),
            torch.device("cpu"),
            seed=seed,
        )
        seconds = time.process_time() - cpu
        apply_filters(net, filters, [forget])
        after = _figures(net, test, test_y, forget)
        rows.append(
            {
                "setting": label,
                "config": overrides,
                "seed": seed,
                "before": before,
                "after": after,
                "worst_retained_class_change_points": _worst_retained_change(after, before, forget),
                "filter_training_cpu_seconds": round(seconds, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=["animal-mnist", "cifar10"], required=True)
    parser.add_argument("--set", choices=sorted(SETS), default="first")
    parser.add_argument("--seed", type=int, action="append", help="filter seeds (default 0)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    rows = run(args.dataset, SETS[args.set], args.seed or [0])
    name = f"weight_filtering_sweep_{args.dataset}"
    path = write_result(name if args.set == "first" else f"{name}_{args.set}", {"rows": rows})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
