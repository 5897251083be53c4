"""KODGE's two scalings on the class forgetting benchmark's small CNNs, judged on the
validation split only (the test split stays for bench.class_forgetting's report).

    nice -n 10 env OMP_NUM_THREADS=1 python -m bench.kodge_sweep [--quick]

Per dataset, small_cnn is trained with the recommended recipe on the same subset and seed as
bench.class_forgetting (its --quick or full scenario), then KODGE forgets the benchmark's class
from a copy of those weights for every (alpha_r, alpha_f, samples) of the grid. Each run is
scored on the validation split the service checks a request's targets on: one test image in
five, chosen by the content hash of its file (app.repositories.samples.is_validation). A
configuration is usable when the forgotten class's validation accuracy is at most 1% and the
retained classes lose at most 2 points (the service's default retained-drop target); the pick
is the usable configuration with the smallest worst retained drop over the datasets.
Results: bench/results/kodge_sweep[_quick].json.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import time
from pathlib import Path
from typing import Any

import torch

from bench.harness import PROJECT_ROOT, write_result
from worker.unlearning.methods.kodge import project

WORK = PROJECT_ROOT / ".cache" / "bench" / "kodge_sweep"
ALPHA_R = (10.0, 30.0, 100.0, 300.0, 1000.0)
ALPHA_F = (3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
SAMPLES = (900, 300)
MAX_FORGET = 0.01
MAX_DROP_POINTS = 2.0


def load_split(
    root: Path, split: str, classes: list[str], size: int, channels: int
) -> dict[str, torch.Tensor]:
    """Images, labels and whether each is in the validation split (test images only)."""
    from app.repositories.samples import is_validation
    from worker.training.data import load_images

    paths, labels, held = [], [], []
    for index, name in enumerate(classes):
        for path in sorted((root / split / name).iterdir()):
            paths.append(path)
            labels.append(index)
            held.append(is_validation(hashlib.sha256(path.read_bytes()).hexdigest()))
    return {
        "x": load_images(paths, image_size=size, channels=channels),
        "y": torch.tensor(labels),
        "validation": torch.tensor(held),
    }


def train_base(
    scenario: Any, train: dict[str, torch.Tensor], channels: int, cached: Path
) -> torch.nn.Module:
    """small_cnn with the recommended recipe; weights saved to ``cached`` and reused by a
    rerun (the training is deterministic on the CPU for a given seed)."""
    from app.core.recipe import RECOMMENDED
    from worker.training.architectures import build_model
    from worker.training.trainer import Recipe, make_optimizer, train_epochs

    fields = {**RECOMMENDED["small_cnn"], "batch_size": scenario.batch_size}
    recipe = Recipe(**{k: v for k, v in fields.items() if k != "norm"})
    torch.manual_seed(scenario.seed)
    net = build_model(
        "small_cnn",
        num_classes=10,
        in_channels=channels,
        image_size=scenario.image_size,
        norm=fields["norm"],
    )
    if cached.is_file():
        net.load_state_dict(torch.load(cached, weights_only=True))
        return net.eval()
    train_epochs(
        net,
        make_optimizer(net, recipe),
        train["x"],
        train["y"],
        epochs=scenario.epochs,
        batch_size=recipe.batch_size,
        seed=scenario.seed,
        device=torch.device("cpu"),
        recipe=recipe,
    )
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), cached)
    return net.eval()


@torch.no_grad()
def accuracies(net: torch.nn.Module, data: dict[str, torch.Tensor], forget: int) -> dict:
    from worker.training.data import to_model_input

    net.eval()
    pred = torch.cat(
        [
            net(to_model_input(data["x"][i : i + 512])).argmax(1)
            for i in range(0, len(data["y"]), 512)
        ]
    )
    out = {}
    for split, mask in (("validation", data["validation"]), ("test", ~data["validation"])):
        hit = pred[mask] == data["y"][mask]
        is_forget = data["y"][mask] == forget
        out[split] = {
            "forget": float(hit[is_forget].float().mean()),
            "retained": float(hit[~is_forget].float().mean()),
        }
    return out


def decompose(
    net: torch.nn.Module, train: dict[str, torch.Tensor], forget: int, samples: int
) -> tuple[Any, Any, float]:
    """The method's own SVD step on the base weights (independent of the scalings)."""
    from worker.unlearning.base import UnlearningInputs
    from worker.unlearning.methods.kodge import KodgeConfig, directions

    is_forget = train["y"] == forget
    began = time.perf_counter()
    retain, forgotten, _, _ = directions(
        UnlearningInputs(
            model=net,
            forget_images=train["x"][is_forget],
            forget_labels=train["y"][is_forget],
            retain_images=train["x"][~is_forget],
            retain_labels=train["y"][~is_forget],
            num_classes=10,
            forget_classes=[forget],
            device=torch.device("cpu"),
            seed=0,
        ),
        KodgeConfig(samples=samples),
    )
    return retain, forgotten, time.perf_counter() - began


def sweep_dataset(scenario: Any) -> dict[str, Any]:
    from bench.class_forgetting import subset_copy

    channels = 1 if scenario.dataset == "animal-mnist" else 3
    data = subset_copy(scenario)
    classes = sorted(p.name for p in (data / "train").iterdir())
    forget = classes.index(scenario.forget)
    train = load_split(data, "train", classes, scenario.image_size, channels)
    test = load_split(data, "test", classes, scenario.image_size, channels)
    began = time.perf_counter()
    cached = WORK / f"{scenario.dataset}-base-{scenario.epochs}-{scenario.batch_size}.pt"
    reused = cached.is_file()
    net = train_base(scenario, train, channels, cached)
    base = {
        "seconds": round(time.perf_counter() - began, 1),
        "weights_from_an_earlier_run": reused,
        "train_accuracy": accuracies(
            net, {**train, "validation": torch.zeros_like(train["y"], dtype=torch.bool)}, forget
        )["test"],
        **accuracies(net, test, forget),
    }
    print(scenario.dataset, "base", base, flush=True)
    rows = []
    for samples in SAMPLES:
        retain, forgotten, svd_seconds = decompose(net, train, forget, samples)
        for alpha_r, alpha_f in itertools.product(ALPHA_R, ALPHA_F):
            config = {"alpha_r": alpha_r, "alpha_f": alpha_f, "samples": samples}
            model = copy.deepcopy(net)
            began = time.perf_counter()
            project(model, retain, forgotten, alpha_r, alpha_f)
            seconds = svd_seconds + time.perf_counter() - began
            after = accuracies(model, test, forget)
            val = after["validation"]
            drop = 100 * (base["validation"]["retained"] - val["retained"])
            rows.append(
                {
                    **config,
                    **after,
                    "validation_retained_drop_points": round(drop, 2),
                    "usable": val["forget"] <= MAX_FORGET and drop <= MAX_DROP_POINTS,
                    "seconds": round(seconds, 2),
                }
            )
            print(scenario.dataset, rows[-1], flush=True)
    return {
        "dataset": scenario.dataset,
        "forget": scenario.forget,
        "validation_images": int(test["validation"].sum()),
        "base": base,
        "rows": rows,
    }


def pick(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The configuration usable on every dataset with the smallest worst retained drop."""
    best = None
    for index in range(len(results[0]["rows"])):
        rows = [r["rows"][index] for r in results]
        if not all(r["usable"] for r in rows):
            continue
        worst = max(r["validation_retained_drop_points"] for r in rows)
        if best is None or worst < best["worst_validation_drop_points"]:
            keys = ("alpha_r", "alpha_f", "samples")
            best = {**{k: rows[0][k] for k in keys}, "worst_validation_drop_points": worst}
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick benchmark's subsets")
    args = parser.parse_args()
    from bench import class_forgetting

    torch.set_num_threads(1)
    global WORK
    WORK = WORK / ("quick" if args.quick else "full")
    class_forgetting.WORK = WORK
    scenarios = class_forgetting.QUICK if args.quick else class_forgetting.FULL
    results = [sweep_dataset(s) for s in scenarios]
    chosen = pick(results)
    print("pick:", chosen)
    grid = {"alpha_r": ALPHA_R, "alpha_f": ALPHA_F, "samples": SAMPLES}
    name = "kodge_sweep_quick" if args.quick else "kodge_sweep"
    path = write_result(name, {"grid": grid, "pick": chosen, "results": results})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
