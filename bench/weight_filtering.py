"""Weight filtering benchmark: train a model's per-class filters once, then forget one class and
a second one in sequence by applying them, and compare each step with a full retrain of the
same model (same recipe and seed) without the class(es).

    .venv/bin/python -m bench.weight_filtering           # Animal-MNIST, CIFAR-10 (full)
    .venv/bin/python -m bench.weight_filtering --quick   # small subsets, a few minutes
    .venv/bin/python -m bench.weight_filtering --dataset cifar10 --seed 1   # another base seed

The base models are bench.class_forgetting's (its scenarios, subsets and setup functions:
small_cnn, one shard, Animal-MNIST forgetting "elephant", CIFAR-10 forgetting "cat"), trained
here under this benchmark's own work folder. Every service is a fresh in-process deployment
into which the base weights are imported. The filter job's time (the one training round) is
reported apart from each forgetting request's; the figures are on the test split (the
validation split the requests are checked on is held out of it). Results go to
bench/results/weight_filtering.json (or weight_filtering_quick.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import Any

from bench import class_forgetting as cf
from bench.harness import (
    LAX_TARGETS,
    PROJECT_ROOT,
    contention,
    in_process_service,
    write_result,
)

WORK = PROJECT_ROOT / ".cache" / "bench" / "weight_filtering"
# The second class forgotten after the scenario's own.
SECOND = {"animal-mnist": "zebra", "cifar10": "dog"}


def use_own_work_folder(quick: bool) -> None:
    """bench.class_forgetting's setup functions read its module-level WORK: point it here, so
    the two benchmarks never share (and erase from) one dataset copy."""
    global WORK
    WORK = WORK / ("quick" if quick else "full")
    cf.WORK = WORK


def train_accuracy(model_id: int) -> float:
    """The current version's accuracy on its own training images."""
    from sqlalchemy import select

    from app.db.models import Model, ModelVersion, Sample, SampleState
    from app.db.session import session_scope
    from app.settings import get_settings
    from worker.constituents import load_constituents
    from worker.flows.common import device, store
    from worker.samples import load_tensors, sample_rows
    from worker.training.evaluate import aggregate, predict_proba

    with session_scope() as session:
        model = session.get(Model, model_id)
        assert model is not None
        version = session.get(ModelVersion, model.current_version_id)
        ids = session.scalars(
            select(Sample.id).where(
                Sample.dataset_id == model.dataset_id,
                Sample.split == "train",
                Sample.state == SampleState.ACTIVE,
            )
        ).all()
        images, labels = load_tensors(
            get_settings(), model.dataset, sample_rows(session, list(ids)), model.recipe.image_size
        )
        nets = load_constituents(session, store(), model, version, device())
        probas = [predict_proba(n, images, device=device()) for n in nets]
        pred = aggregate(probas, model.recipe.aggregation).argmax(1)
    return round(float((pred == labels).float().mean()), 4)


def step_row(
    label: str, request: dict[str, Any], took: float, forgetting: dict[str, Any], record: dict
) -> dict[str, Any]:
    return {
        "label": label,
        "method": request["method"],
        "status": request["status"],
        "classes": forgetting["forget_classes"],
        "validation": (request["plan"].get("attempts") or [{}])[-1].get("validation"),
        "forget_accuracy": forgetting["forget"]["after"],
        "forget_accuracy_before": forgetting["forget"]["before"],
        "retained_accuracy": forgetting["retain"]["after"],
        "retained_accuracy_before": forgetting["retain"]["before"],
        "test_accuracy": forgetting["test"]["after"],
        "per_class": forgetting["per_class"],
        "method_seconds": forgetting["cost"]["compute_seconds"],
        "request_wall_seconds": round(took, 3),
        **record,
    }


def forget(service: Any, model_id: int, payload: dict[str, Any], label: str) -> dict[str, Any]:
    record: dict[str, Any] = {}
    cpu = time.process_time()
    with contention(record):
        request, took = service.forget({"model": model_id, "options": LAX_TARGETS, **payload})
    record["request_cpu_seconds"] = round(time.process_time() - cpu, 3)
    if request["status"] != "completed":
        raise RuntimeError(f"{label}: request ended {request['status']}: {request}")
    after = service.client.get(f"/v1/models/{model_id}").json()
    row = step_row(label, request, took, after["metrics"]["forgetting"], record)
    print(
        f"  {label}: forget {row['forget_accuracy']:.3f}, retained "
        f"{row['retained_accuracy']:.3f}, {row['method_seconds']:.2f}s method, {took:.1f}s "
        "request",
        flush=True,
    )
    return row


def train_filters(service: Any, model_id: int, config: dict[str, Any]) -> dict[str, Any]:
    from worker import tasks

    response = service.client.post(f"/v1/models/{model_id}/filters", json={"config": config})
    response.raise_for_status()
    record: dict[str, Any] = {}
    cpu, began = time.process_time(), time.perf_counter()
    with contention(record):
        tasks.train_filters(response.json()["id"])
    record["job_wall_seconds"] = round(time.perf_counter() - began, 3)
    record["job_cpu_seconds"] = round(time.process_time() - cpu, 3)
    job = service.client.get(f"/v1/models/{model_id}/filters").json()
    if job["status"] != "ready":
        raise RuntimeError(f"filter training ended {job['status']}: {job['status_reason']}")
    print(
        f"  filters trained in {job['train_seconds']:.1f}s ({record['job_wall_seconds']:.1f}s "
        "with the accuracy table)",
        flush=True,
    )
    return {**job, **record}


def run_filtering(scenario: cf.Scenario, base: dict[str, Any], config: dict) -> dict[str, Any]:
    second = SECOND[scenario.dataset]
    cf.subset_copy(scenario)
    home = WORK / "homes" / f"{scenario.dataset}-weight_filtering"
    with in_process_service(home, data_roots=[WORK / f"{scenario.dataset}-data"]) as service:
        model = cf.import_base(service, scenario, base, "model")
        base_train = train_accuracy(model["id"])
        filters = train_filters(service, model["id"], config)
        first = forget(
            service,
            model["id"],
            {"class_name": scenario.forget, "method": "weight_filtering"},
            f"weight_filtering {scenario.forget}",
        )
        then = forget(
            service,
            model["id"],
            {"class_name": second, "method": "weight_filtering"},
            f"weight_filtering then {second}",
        )
    return {"base_train_accuracy": base_train, "filters": filters, "steps": [first, then]}


def run_retrain(scenario: cf.Scenario, base: dict[str, Any], classes: list[str]) -> dict:
    cf.subset_copy(scenario)
    home = WORK / "homes" / f"{scenario.dataset}-retrain-{len(classes)}"
    with in_process_service(home, data_roots=[WORK / f"{scenario.dataset}-data"]) as service:
        model = cf.import_base(service, scenario, base, "model")
        return forget(
            service,
            model["id"],
            {"class_names": classes, "method": "retrain"},
            f"retrain without {'+'.join(classes)}",
        )


def compare(step: dict[str, Any], retrain: dict[str, Any], filter_seconds: float) -> None:
    step["retrain"] = {
        k: retrain[k]
        for k in ("forget_accuracy", "retained_accuracy", "test_accuracy", "method_seconds")
    }
    step["retained_minus_retrain_points"] = round(
        100 * (step["retained_accuracy"] - retrain["retained_accuracy"]), 2
    )
    seconds = step["method_seconds"]
    step["speedup_method"] = round(retrain["method_seconds"] / seconds, 1) if seconds else None
    step["speedup_request_wall"] = round(
        retrain["request_wall_seconds"] / step["request_wall_seconds"], 2
    )
    # With the one filter training round charged to this single request.
    step["speedup_including_filter_training"] = round(
        retrain["method_seconds"] / (seconds + filter_seconds), 2
    )
    step["under_5s"] = seconds < 5.0


def run_scenario(scenario: cf.Scenario, config: dict[str, Any], quiet_s: float) -> dict:
    data = cf.subset_copy(scenario)
    # a base of another seed is kept beside seed 0's, so neither retrains the other away
    suffix = f"-seed{scenario.seed}" if scenario.seed else ""
    base = cf.train_base(
        scenario, data, WORK / "homes" / f"{scenario.dataset}-base{suffix}", quiet_s
    )
    print(f"{scenario.dataset}: base test accuracy {base['test']['accuracy']:.3f}", flush=True)
    filtering = run_filtering(scenario, base, config)
    second = SECOND[scenario.dataset]
    retrains = [
        run_retrain(scenario, base, [scenario.forget]),
        run_retrain(scenario, base, [scenario.forget, second]),
    ]
    seconds = filtering["filters"]["train_seconds"]
    for step, retrain in zip(filtering["steps"], retrains, strict=True):
        compare(step, retrain, seconds)
    return {
        "scenario": {k: v for k, v in scenario.__dict__.items() if k != "variants"},
        "second_class": second,
        "base": {
            "train_accuracy": filtering["base_train_accuracy"],
            "test_accuracy": base["test"]["accuracy"],
            "train_seconds": base["train_seconds"],
        },
        "filters": filtering["filters"],
        "steps": filtering["steps"],
        "retrains": retrains,
        "load_average_1_5_15": os.getloadavg(),
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset | step | forget acc (retrain) | retained acc (retrain) | method s | retrain s "
        "| speed-up | filter training s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for step in result["steps"]:
            r = step["retrain"]
            lines.append(
                f"| {result['scenario']['dataset']} | {step['label']} "
                f"| {100 * step['forget_accuracy']:.1f}% ({100 * r['forget_accuracy']:.1f}%) "
                f"| {100 * step['retained_accuracy']:.1f}% ({100 * r['retained_accuracy']:.1f}%) "
                f"| {step['method_seconds']:.2f} | {r['method_seconds']:.1f} "
                f"| {step['speedup_method']}x | {result['filters']['train_seconds']:.1f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small subsets (a few minutes)")
    parser.add_argument("--dataset", choices=["animal-mnist", "cifar10"], action="append")
    parser.add_argument("--config", default="{}", help="filter training configuration (JSON)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--name", help="result file name (default: by --quick)")
    parser.add_argument(
        "--seed",
        type=int,
        help="seed of the base model and of the retrain (default: the scenario's, 0)",
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    use_own_work_folder(args.quick)
    config = json.loads(args.config)
    scenarios = [
        s if args.seed is None else dataclasses.replace(s, seed=args.seed)
        for s in (cf.QUICK if args.quick else cf.FULL)
        if s.dataset in (args.dataset or [s.dataset])
    ]
    results = [run_scenario(s, config, args.wait_quiet) for s in scenarios]
    table = markdown(results)
    name = args.name or ("weight_filtering_quick" if args.quick else "weight_filtering")
    notes = [
        "forget/retained accuracy on the test split (less the validation split); retained = "
        "every class not forgotten so far. The second step's retrain reference is one retrain "
        "of the base recipe without both classes.",
        "method s: the service's own timing of the method run (weight_filtering: applying the "
        "filters; retrain: training); filter training s: the one filter job, paid once for "
        "every class.",
        "speedup_including_filter_training charges the whole filter job to one request.",
    ]
    path = write_result(
        name, {"results": results, "table": table, "config": config, "notes": notes}
    )
    print(table)
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
