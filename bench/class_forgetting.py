"""Class forgetting benchmark: forget one class with every registered method and compare each
with a full retrain of the same model, on the same data, with the same seed.

    .venv/bin/python -m bench.class_forgetting           # Animal-MNIST "elephant", CIFAR-10 "cat"
    .venv/bin/python -m bench.class_forgetting --quick   # small subsets, a few minutes

How: per dataset, one monolithic small_cnn is trained through the service with the recommended
recipe (the *base* model; its accuracy on its own training images and on the test split is
reported next to every row).
Every method then starts from exactly those weights: it runs in a fresh in-process service (its
own database, store and dataset copy, because forgetting erases and tombstones the class's
images, which a second registration would refuse) into which the base weights are imported
with POST /v1/models/import, and the class is forgotten with one deletion request. `retrain` is
the gold standard (the same recipe and seed, without the class); `sisa` on a monolithic model
retrains the same way. Results go to bench/results/class_forgetting.json (or
class_forgetting_quick.json, or --name) and a markdown table is printed. Each row is also
kept under the mode's working folder; `--reuse` takes a kept row measured on the same base
weights with the same resolved configuration instead of rerunning it, so a long run can be
split (the retrain once, methods added later) and assembled into one table.

Timings come from a shared two-core machine: each row records how much CPU other processes
used meanwhile (`foreign_cpu`), and `--wait-quiet` waits for a quiet spell before each step.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.class_forgetting_compare import compare_with_retrain, markdown
from bench.harness import (
    LAX_TARGETS,
    PROJECT_ROOT,
    Service,
    contention,
    in_process_service,
    split_files,
    subset,
    wait_quiet,
    write_result,
)

# One working folder per mode (set by main): a quick and a full run may go side by side, and
# a later run of the same mode reuses its base model (two runs of one mode may not overlap:
# each method refreshes the mode's dataset copy).
WORK = PROJECT_ROOT / ".cache" / "bench" / "class_forgetting"


@dataclass(frozen=True)
class Scenario:
    dataset: str
    forget: str
    train_per_class: int | None
    test_per_class: int | None
    image_size: int
    epochs: int
    batch_size: int = 64
    seed: int = 0
    classes: tuple[str, ...] | None = None  # a subset of the classes (None: all)
    subset_seed: int = 0  # which images the subset copies (``seed`` is the model's)
    # Extra rows besides every method with its defaults: (label, method, method_config).
    variants: tuple[tuple[str, str, dict[str, Any]], ...] = ()


# UNSIR with the paper's own values (for a ResNet-18 on a GPU), beside the service's defaults
# (the paper's one-impair/one-repair schedule with step sizes for these small CNNs, picked by
# bench.unsir_sweep): shows what the tuning buys.
UNSIR_PAPER = {
    "noise_batch_size": 256,
    "noise_epochs": 5,
    "noise_steps": 8,
    "noise_repeats": 20,
    "retain_per_class": 500,
    "batch_size": 256,
    "impair_lr": 0.02,
    "repair_lr": 0.01,
}
VARIANTS = (("unsir (paper's values)", "unsir", UNSIR_PAPER),)

FULL = [
    Scenario("animal-mnist", "elephant", None, None, 28, 15, variants=VARIANTS),
    Scenario("cifar10", "cat", 1000, 200, 32, 15, variants=VARIANTS),
]
# Small subsets; a smaller batch gives the short training enough steps to be a usable model.
# Both modes train the base model with small_cnn's recommended recipe (batch norm, one-cycle
# schedule, crop and flip augmentation; app.core.recipe.RECOMMENDED): a model that converges,
# so the retrain it is compared with is not a noisy, under-trained one.
QUICK = [
    Scenario("animal-mnist", "elephant", 200, 50, 28, 15, 32, variants=VARIANTS),
    Scenario("cifar10", "cat", 200, 50, 32, 15, 32, variants=VARIANTS),
]


# --- service helpers ----------------------------------------------------------------------------


def model_spec(scenario: Scenario, name: str, dataset_id: int) -> dict[str, Any]:
    """The base model's request; the recipe is written out in full, so the import (whose
    omitted fields take the historical values) records the same recipe for the retrain."""
    from app.core.recipe import RECOMMENDED

    return {
        **RECOMMENDED["small_cnn"],
        "name": name,
        "dataset": dataset_id,
        "architecture": "small_cnn",
        "shards": 1,
        "slices": 1,
        "epochs_per_slice": scenario.epochs,
        "image_size": scenario.image_size,
        "seed": scenario.seed,
        "batch_size": scenario.batch_size,
    }


def final_state_dict(model_id: int) -> dict[str, Any]:
    """The current version's weights, read from the service's store."""
    import torch
    from sqlalchemy import select

    from app.db.models import Checkpoint, Model
    from app.db.session import session_scope
    from worker.constituents import CHECKPOINTS
    from worker.flows.common import store

    with session_scope() as session:
        model = session.get(Model, model_id)
        assert model is not None
        key = session.scalar(
            select(Checkpoint.key).where(
                Checkpoint.version_id == model.current_version_id, Checkpoint.slice == 0
            )
        )
    assert key is not None
    blob = store().get(CHECKPOINTS, key)
    return torch.load(io.BytesIO(blob), weights_only=True)["model"]


def train_base(scenario: Scenario, data: Path, home: Path, quiet_s: float) -> dict[str, Any]:
    """Train the base model once and save its weights for every method to start from.

    A base trained earlier for the same recipe is reused (its record names the recipe), so a
    rerun of some methods starts from the very same weights.
    """
    import torch

    # fields at their defaults are left out, so a record written before they existed matches
    recipe = json.loads(  # as the record stores it (a tuple of classes reads back as a list)
        json.dumps(
            {
                k: v
                for k, v in asdict(scenario).items()
                if k != "variants" and not (k in ("classes", "subset_seed") and not v)
            }
        )
    )
    record_path = home.parent / f"{home.name}.json"
    if record_path.is_file():
        cached = json.loads(record_path.read_text())
        if cached.get("recipe") == recipe and Path(cached["state_dict"]).is_file():
            return {k: v for k, v in cached.items() if k != "recipe"}
    with in_process_service(home, data_roots=[data]) as service:
        dataset = service.register_dataset(data, name=f"{scenario.dataset}-base")
        record: dict[str, Any] = {"waited_for_quiet_s": wait_quiet(quiet_s)}
        with contention(record):
            model, took = service.train_model(model_spec(scenario, "base", dataset["id"]))
        path = home.parent / f"{home.name}.pt"
        torch.save(final_state_dict(model["id"]), path)
    base = {
        **record,
        "train_seconds": took,
        "state_dict": str(path),
        "classes": dataset["classes"],
        "model_spec": {k: v for k, v in model_spec(scenario, "base", 0).items() if k != "dataset"},
        "test": model["metrics"]["test"],
        "train_accuracy": train_accuracy(path, data, dataset["classes"], scenario),
    }
    record_path.write_text(json.dumps({**base, "recipe": recipe}, indent=2))
    return base


def train_accuracy(weights: Path, data: Path, classes: list[str], scenario: Scenario) -> float:
    """The base model's accuracy on its own (unaugmented) training images: with the test
    accuracy, whether it converged and how much it fits its training set."""
    import torch

    from worker.training.architectures import build_model
    from worker.training.data import load_images, to_model_input

    channels = 1 if scenario.dataset == "animal-mnist" else 3
    paths, labels = split_files(data, classes, "train")
    images = load_images(paths, image_size=scenario.image_size, channels=channels)
    net = build_model(
        "small_cnn",
        num_classes=len(classes),
        in_channels=channels,
        image_size=scenario.image_size,
        norm="batch",
    )
    net.load_state_dict(torch.load(weights, weights_only=True))
    net.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(paths), 512):
            logits = net(to_model_input(images[start : start + 512]))
            correct += int((logits.argmax(1) == torch.tensor(labels[start : start + 512])).sum())
    return round(correct / len(paths), 4)


def import_base(service: Service, scenario: Scenario, base: dict[str, Any], name: str) -> dict:
    from sqlalchemy import select

    from app.db.models import ModelVersion
    from app.db.session import session_scope
    from worker import tasks

    dataset = service.register_dataset(WORK / f"{scenario.dataset}-data", name=name)
    body = {**model_spec(scenario, name, dataset["id"]), "class_names": base["classes"]}
    for key in ("shards", "slices"):
        body.pop(key)
    # Uploaded: the base weights lie beside the deployments' homes, outside the data roots.
    weights = Path(base["state_dict"]).read_bytes()
    response = service.client.post(
        "/v1/models/import", data=body, files={"file": ("base.pt", weights)}
    )
    response.raise_for_status()
    model_id = response.json()["id"]
    with session_scope() as session:
        version_id = session.scalar(
            select(ModelVersion.id).where(ModelVersion.model_id == model_id)
        )
    tasks.import_model(version_id)
    model = service.client.get(f"/v1/models/{model_id}").json()
    if model["status"] != "ready":
        raise RuntimeError(f"import failed: {model['status_reason']}")
    if model["metrics"]["test"] != base["test"]:
        raise RuntimeError("the imported model does not reproduce the base model's accuracy")
    return model


def mia_auc(service: Service, request_id: str) -> dict[str, Any] | None:
    """Membership-inference AUCs (forgotten training images vs. test images) from the audit
    report, when the report exists."""
    response = service.client.get(f"/v1/deletion-requests/{request_id}/report")
    if response.status_code != 200:
        return None
    report = response.json().get("report", response.json())
    attacks = (report.get("membership_inference") or {}).get("attacks") or {}
    return {
        name: {stage: (stages.get(stage) or {}).get("auc") for stage in ("before", "after")}
        for name, stages in attacks.items()
    } or None


# --- one method ---------------------------------------------------------------------------------


def run_method(
    scenario: Scenario,
    base: dict[str, Any],
    method: str,
    config: dict[str, Any] | None,
    label: str,
    quiet_s: float,
    options: dict[str, Any] | None = LAX_TARGETS,
) -> dict[str, Any]:
    """One request in a fresh service on the base weights. ``options`` None sends none (the
    service's default targets, verified and escalated)."""
    import torch

    home = WORK / "homes" / f"{scenario.dataset}-{label.replace(' ', '_')}"
    subset_copy(scenario)  # a fresh copy: the previous method erased the class from its own
    with in_process_service(home, data_roots=[WORK / f"{scenario.dataset}-data"]) as service:
        model = import_base(service, scenario, base, "model")
        payload: dict[str, Any] = {
            "model": model["id"],
            "class_name": scenario.forget,
            "method": method,
        }
        if config is not None:
            payload["method_config"] = config
        if options is not None:
            payload["options"] = options
        record: dict[str, Any] = {"waited_for_quiet_s": wait_quiet(quiet_s)}
        cpu = time.process_time()
        with contention(record):
            request, took = service.forget(payload)
        record["request_cpu_seconds"] = round(time.process_time() - cpu, 3)
        # The service's own record: seconds spent rebuilding constituents (training for sisa
        # and retrain, the method's run for the others).
        record["build_wall_seconds"] = round(
            sum(request["timings"].get("retrain_s", {}).values()), 3
        )
        if request["status"] != "completed":
            raise RuntimeError(f"{label}: request ended {request['status']}: {request}")
        after = service.client.get(f"/v1/models/{model['id']}").json()
        forgetting = after["metrics"]["forgetting"]
        weights = WORK / "weights" / f"{scenario.dataset}-{label.replace(' ', '_')}.pt"
        weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(final_state_dict(model["id"]), weights)
        mia = mia_auc(service, request["id"])
    return row(base, label, method, config, request, took, forgetting, mia, weights, record)


def row(
    base: dict[str, Any],
    label: str,
    method: str,
    config: dict[str, Any] | None,
    request: dict[str, Any],
    took: float,
    forgetting: dict[str, Any],
    mia: dict[str, Any] | None,
    weights: Path,
    record: dict[str, Any],
) -> dict[str, Any]:
    cost = forgetting["cost"]
    attempts = request["plan"].get("attempts") or [{}]
    return {
        "label": label,
        "method": method,
        # the base model every row starts from: did it converge (train) and generalise (test)
        "base_train_accuracy": base["train_accuracy"],
        "base_test_accuracy": base["test"]["accuracy"],
        "method_config": request["method_config"] if config is not None else "defaults",
        "validation": attempts[-1].get("validation"),
        "attempts": attempts,
        "forget_accuracy": forgetting["forget"]["after"],
        "forget_accuracy_before": forgetting["forget"]["before"],
        "forget_train_accuracy": forgetting["forget_train"]["after"],
        "retained_accuracy": forgetting["retain"]["after"],
        "retained_accuracy_before": forgetting["retain"]["before"],
        "test_accuracy": forgetting["test"]["after"],
        "test_accuracy_before": forgetting["test"]["before"],
        "per_class": forgetting["per_class"],
        "forgotten_now_predicted_as": forgetting["now_predicted_as"],
        "forget_prediction_distribution": forgetting["forget_prediction_distribution"],
        "relearn_epochs": forgetting.get("relearn_epochs"),
        "weight_distance_to_original": forgetting["weight_distance"]["to_original"]["constituents"][
            0
        ],
        "method_seconds": cost["compute_seconds"],
        "request_wall_seconds": took,
        "samples_touched": cost["samples_touched"],
        "samples_touched_unit": cost["samples_touched_unit"],
        "membership_inference_auc": mia,
        "weights": str(weights),
        **record,
    }


def subset_copy(scenario: Scenario) -> Path:
    return subset(
        scenario.dataset,
        WORK / f"{scenario.dataset}-data",
        train_per_class=scenario.train_per_class,
        test_per_class=scenario.test_per_class,
        classes=list(scenario.classes) if scenario.classes else None,
        seed=scenario.subset_seed,
    )


# --- the run ------------------------------------------------------------------------------------


def methods_to_run(
    scenario: Scenario, only: list[str] | None
) -> list[tuple[str, str, dict | None]]:
    """(label, method, config) rows: every registered method with its defaults, retrain first
    (the reference), then the scenario's extra configurations; weight filtering needs a filter
    job first and has its own benchmark (bench.weight_filtering)."""
    from worker.unlearning.registry import all_methods

    names = [m.name for m in all_methods() if not m.uses_weight_filters]
    names = [n for n in names if only is None or n in only]
    names.sort(key=lambda n: (n != "retrain", n))
    rows: list[tuple[str, str, dict | None]] = [(n, n, None) for n in names]
    rows += [v for v in scenario.variants if only is None or v[1] in only]
    return rows


def cached_row(
    scenario: Scenario, base: dict[str, Any], label: str, method: str, config: dict | None
) -> tuple[Path, dict[str, Any] | None]:
    """Where a row is kept, and the row an earlier run measured for the same base weights,
    method and resolved configuration (None when there is none or anything differs)."""
    import hashlib

    from app.core.methods.registry import validate_config

    path = WORK / "rows" / f"{scenario.dataset}-{label.replace(' ', '_')}.json"
    key = {
        "base_sha256": hashlib.sha256(Path(base["state_dict"]).read_bytes()).hexdigest(),
        "method": method,
        "config": validate_config(method, config).model_dump(mode="json"),
    }
    if path.is_file():
        stored = json.loads(path.read_text())
        row = stored.get("row")  # None: an earlier run stopped while measuring it
        if stored.get("key") == key and row is not None and Path(row["weights"]).is_file():
            return path, {**row, "reused_from_earlier_run": True}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "row": None}))
    return path, None


def run_scenario(
    scenario: Scenario, only: list[str] | None, quiet_s: float, reuse: bool = False
) -> dict[str, Any]:
    data = subset_copy(scenario)
    base = train_base(scenario, data, WORK / "homes" / f"{scenario.dataset}-base", quiet_s)
    print(
        f"{scenario.dataset}: base model train accuracy {base['train_accuracy']:.3f}, test "
        f"accuracy {base['test']['accuracy']:.3f}, trained in {base['train_seconds']:.1f}s",
        flush=True,
    )
    rows = []
    for label, method, config in methods_to_run(scenario, only):
        path, result = cached_row(scenario, base, label, method, config)
        if result is None or not reuse:
            result = run_method(scenario, base, method, config, label, quiet_s)
            key = json.loads(path.read_text())["key"]
            path.write_text(json.dumps({"key": key, "row": result}, indent=1))
        print(
            f"  {label}: forget {result['forget_accuracy']:.3f}, retained "
            f"{result['retained_accuracy']:.3f}, {result['method_seconds']:.1f}s method, "
            f"{result['request_wall_seconds']:.1f}s request",
            flush=True,
        )
        rows.append(result)
    compare_with_retrain(rows)
    return {"scenario": asdict(scenario), "base": base, "rows": rows}


NOTES = [
    "Every row starts from the same base weights (imported into a fresh service per method); "
    "retrain and sisa rebuild the monolithic model from scratch without the class with the "
    "base recipe and seed.",
    "forget/retained/test accuracy are on the held-out test split (forget = the forgotten "
    "class's test images, retained = every other class's).",
    "request CPU s: CPU seconds of this process serving the whole request (rebuilding, "
    "evaluation and audit): the speed-up column to trust on a shared machine. method wall s: the service's own timing of the training "
    "loop / method run. request wall s: submit to completed, audit report included.",
    "MIA AUC after: the audit report's loss-threshold attack, forgotten training images vs. "
    "test images, on the unlearned model (0.5 = chance).",
    "unsir's defaults were picked by bench.unsir_sweep (the paper's schedule of one impair and "
    "one repair epoch; learning rates and retain-subset size swept) judged on these same test "
    "splits; 'unsir (paper's values)' runs the paper's ResNet-18 settings for comparison.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small subsets (a few minutes)")
    parser.add_argument("--dataset", choices=["animal-mnist", "cifar10"], action="append")
    parser.add_argument("--method", action="append", help="only these methods (retrain always)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 keeps timings stable on a shared machine; CPU seconds are "
        "comparable across methods either way)",
    )
    parser.add_argument("--name", help="result file name (default: by --quick)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="take a row an earlier run of this mode measured on the same base weights with "
        "the same method configuration (marked reused_from_earlier_run) instead of rerunning it",
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    scenarios = [
        s for s in (QUICK if args.quick else FULL) if s.dataset in (args.dataset or [s.dataset])
    ]
    only = sorted({*args.method, "retrain"}) if args.method else None
    name = args.name or ("class_forgetting_quick" if args.quick else "class_forgetting")
    global WORK
    WORK = WORK / ("quick" if args.quick else "full")
    results = [run_scenario(s, only, args.wait_quiet, args.reuse) for s in scenarios]
    table = markdown(results)
    path = write_result(name, {"results": results, "table": table, "notes": NOTES})
    print(table)
    print(f"\nwritten to {path}")
    print(json.dumps({"rows": sum(len(r["rows"]) for r in results)}))


if __name__ == "__main__":
    main()
