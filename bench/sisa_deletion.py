"""Benchmark of the SISA spine on CIFAR-10: deletion speed-up, training throughput and
ensemble accuracy, all measured in one run of the in-process service.

    .venv/bin/python -m bench.sisa_deletion            # the full run (~10-15 min on 2 CPU cores)
    .venv/bin/python -m bench.sisa_deletion --quick    # a smoke run (~1-2 min)

What it measures, with S shards and R slices (defaults S=5, R=4):

1. Deletion. For every slice position k = 1..R it deletes one training file that sits in slice k
   with method `sisa`, then another file in slice k with method `retrain`, and compares the wall
   times with the sample-pass prediction S * R(R+1) / ((R-k+1)(R+k)) (S * 3R/(2R+1) on average
   over positions). Wall time is split into the phases the service records on each request
   (queued, claim, retrain per shard, evaluation, audit, erasure), so a miss can be attributed.
2. Throughput. SISA training sample passes per second against a plain PyTorch loop written here
   (one tensor of all images, manual batches, the same SGD recipe and model) running the same
   number of sample passes.
3. Accuracy. The SISA ensemble's test accuracy against one model (shards=1, slices=1) trained
   through the service on all the data with the same budget of sample passes.

Results go to bench/results/sisa_deletion.json (or sisa_deletion_quick.json) via the harness.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from bench.harness import (
    Service,
    contention,
    in_process_service,
    wait_quiet,
    write_result,
)
from bench.sisa_report import summarise, table
from bench.sisa_setup import (
    FULL,
    IMAGE_SIZE,
    QUICK,
    RECIPE,
    SHARDS,
    SLICES,
    WORK,
    Scale,
    bench_data,
    parameters,
)
from bench.sisa_throughput import (
    PlainLoop,
    accuracy,
    decode_split,
    interleaved_throughput,
    run_throughput,
    warm_up,
)

# --- phase timing -------------------------------------------------------------------------------
# The service records each request's phases itself (`timings` on the request); the benchmark
# reads them from the API rather than timing the worker's functions from outside.


@contextmanager
def measured(quiet_s: float) -> Iterator[dict[str, Any]]:
    """Machine contention of one measured step."""
    record: dict[str, Any] = {"waited_for_quiet_s": round(wait_quiet(quiet_s), 1)}
    with contention(record):
        yield record
    record["load_average"] = [round(v, 2) for v in os.getloadavg()]  # 1, 5, 15 min at the end


# --- the service side ---------------------------------------------------------------------------


def model_spec(name: str, dataset_id: int, *, shards: int, slices: int, epochs: int) -> dict:
    return {
        "name": name,
        "dataset": dataset_id,
        "architecture": "small_cnn",
        "shards": shards,
        "slices": slices,
        "epochs_per_slice": epochs,
        "image_size": IMAGE_SIZE,
        "seed": 0,
        "aggregation": "mean_softmax",
        **RECIPE,
    }


def current_manifest(model_id: int) -> list[tuple[str, int, int]]:
    """(rel_path, shard, slice) of every active training sample of the model's current version."""
    from sqlalchemy import select

    from app.db.models import ManifestEntry, Model, Sample, SampleState
    from app.db.session import session_scope

    with session_scope() as session:
        model = session.get(Model, model_id)
        assert model is not None and model.current_version_id is not None
        rows = session.execute(
            select(Sample.rel_path, ManifestEntry.shard, ManifestEntry.slice)
            .join(Sample, Sample.id == ManifestEntry.sample_id)
            .where(
                ManifestEntry.version_id == model.current_version_id,
                Sample.state == SampleState.ACTIVE,
            )
            .order_by(Sample.rel_path)
        ).all()
    return [(str(p), int(s), int(sl)) for p, s, sl in rows]


def version_metrics(service: Service, model_id: int, number: int) -> dict[str, Any]:
    model = service.client.get(f"/v1/models/{model_id}").json()
    return next(v for v in model["versions"] if v["number"] == number)["metrics"]


def delete_one(
    service: Service, model_id: int, rel_path: str, method: str, quiet_s: float
) -> dict[str, Any]:
    with measured(quiet_s) as record:
        request, took = service.forget(
            {"model": model_id, "filenames": [rel_path], "method": method}
        )
    if request["status"] != "completed":
        raise RuntimeError(f"{method} deletion of {rel_path} ended {request['status']}: {request}")
    cost = version_metrics(service, model_id, request["result_version"])["cost"]
    plan = request["plan"]
    record.update(
        method=method,
        file=rel_path,
        wall_s=took,
        train_s=cost["train_seconds"],
        sample_passes=cost["sample_passes"],
        retrained_shards=cost["retrained_shards"],
        restart_slices=[a["restart_slice"] for a in plan.get("affected_shards", [])],
        planner_speedup=plan.get("predicted_speedup"),
        phases=request["timings"],
    )
    # What is left of the wall time outside the request's own record: the HTTP calls
    # (validation, resolving the name, persisting, sending to the broker, the status GET).
    record["api_s"] = took - request["timings"]["total_s"]
    return record


# --- the benchmark ------------------------------------------------------------------------------


def train_sisa(
    service: Service, dataset_id: int, scale: Scale, quiet_s: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The SISA model trained through the service: the model and its training record."""
    with measured(quiet_s) as training:
        model, train_wall = service.train_model(
            model_spec(
                "cifar-sisa",
                dataset_id,
                shards=SHARDS,
                slices=SLICES,
                epochs=scale.epochs_per_slice,
            )
        )
    sisa_metrics = model["metrics"]
    training.update(
        wall_s=train_wall,
        train_s=sisa_metrics["cost"]["train_seconds"],
        sample_passes=int(sisa_metrics["cost"]["sample_passes"]),
        test_accuracy=sisa_metrics["test"]["accuracy"],
        constituent_accuracy=statistics.fmean(
            c["test_accuracy"] for c in sisa_metrics["constituents"]
        ),
    )
    return model, training


def checkpoint_partial(name: str | None, **figures: Any) -> None:
    """Write what is measured so far to bench/results/<name>_partial.json (a long run on a
    shared machine may be cut short; its finished steps stay on record)."""
    if name:
        write_result(f"{name}_partial", {"partial": True, **figures})


def delete_per_slice(
    service: Service, model_id: int, seed: int, quiet_s: float, partial: Callable[..., None]
) -> list[dict[str, Any]]:
    """One sisa and one retrain deletion per slice position, on distinct files."""
    rng = random.Random(seed)
    deletions: list[dict[str, Any]] = []
    for k in range(1, SLICES + 1):
        candidates = [row for row in current_manifest(model_id) if row[2] == k - 1]
        (sisa_file, shard, _), (retrain_file, _, _) = rng.sample(candidates, 2)
        sisa = delete_one(service, model_id, sisa_file, "sisa", quiet_s)
        sisa["shard"] = shard
        retrain = delete_one(service, model_id, retrain_file, "retrain", quiet_s)
        if sisa["restart_slices"] != [k - 1]:
            raise RuntimeError(f"slice {k}: sisa plan restarted at {sisa['restart_slices']}")
        deletions.append({"slice": k, "sisa": sisa, "retrain": retrain})
        partial(deletions=deletions)
        print(
            f"slice {k}: sisa {sisa['wall_s']:.1f}s (train {sisa['train_s']:.1f}s), "
            f"retrain {retrain['wall_s']:.1f}s (train {retrain['train_s']:.1f}s); "
            f"other processes' CPU share {sisa.get('foreign_cpu')}, "
            f"{retrain.get('foreign_cpu')}",
            flush=True,
        )
    return deletions


def train_mono(service: Service, dataset_id: int, epochs: int, quiet_s: float) -> dict[str, Any]:
    """One model on all the data through the service (shards=1, slices=1)."""
    with measured(quiet_s) as mono:
        mono_model, mono_wall = service.train_model(
            model_spec("cifar-mono", dataset_id, shards=1, slices=1, epochs=epochs)
        )
    mono.update(
        wall_s=mono_wall,
        epochs=epochs,
        train_s=mono_model["metrics"]["cost"]["train_seconds"],
        sample_passes=mono_model["metrics"]["cost"]["sample_passes"],
        test_accuracy=mono_model["metrics"]["test"]["accuracy"],
    )
    return mono


def run_plain_loop(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    sample_passes: int,
    quiet_s: float,
) -> dict[str, Any]:
    """The plain loop on the same data and model, for the same number of sample passes."""
    plain: dict[str, Any] = {"waited_for_quiet_s": round(wait_quiet(quiet_s), 1)}
    loop = PlainLoop(*train, num_classes)
    with contention(plain):
        plain_s = loop.run(sample_passes)
    plain.update(
        loop_s=plain_s,
        sample_passes=sample_passes,
        test_accuracy=accuracy(loop.net, *test),
    )
    return plain


def run(scale: Scale, seed: int, quiet_s: float, name: str | None = None) -> dict[str, Any]:
    data = bench_data(scale, seed)
    # Decoded now, before the service erases the files it forgets from this copy.
    train_images, train_labels = decode_split(data, "train")
    test_images, test_labels = decode_split(data, "test")
    n_train = train_images.shape[0]
    warm_up()
    with in_process_service(WORK / "home", data_roots=[WORK / "data"], device="cpu") as service:
        dataset = service.register_dataset(data, "cifar10-bench")
        classes: list[str] = dataset["classes"]
        if classes != sorted(classes):
            raise RuntimeError(f"class order {classes} differs from the plain loop's")
        model, training = train_sisa(service, dataset["id"], scale, quiet_s)
        sisa_passes = training["sample_passes"]
        checkpoint_partial(name, training=training)
        deletions = delete_per_slice(
            service,
            model["id"],
            seed,
            quiet_s,
            lambda **f: checkpoint_partial(name, training=training, **f),
        )
        final_model = service.client.get(f"/v1/models/{model['id']}").json()
        training["final_accuracy"] = final_model["metrics"]["test"]["accuracy"]
        # The same budget of sample passes as the SISA training.
        mono_epochs = max(1, round(sisa_passes / n_train))
        mono = train_mono(service, dataset["id"], mono_epochs, quiet_s)
        checkpoint_partial(name, training=training, deletions=deletions, monolithic=mono)

    plain = run_plain_loop(
        (train_images, train_labels), (test_images, test_labels), len(classes), sisa_passes, quiet_s
    )
    # The same comparison alternated slice by slice, robust to other jobs' load.
    wait_quiet(quiet_s)
    interleaved = interleaved_throughput(
        train_images, train_labels, epochs_per_slice=1, num_classes=len(classes)
    )
    plain["interleaved"] = interleaved
    setup = parameters(
        scale,
        seed,
        n_train=n_train,
        test_per_class=scale.test_per_class,
        n_test=len(test_labels),
        device="cpu",
    )
    return summarise(setup, training, deletions, mono, plain)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sisa_deletion", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--train-per-class", type=int)
    parser.add_argument("--test-per-class", type=int)
    parser.add_argument("--epochs-per-slice", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each measured step, wait up to this long for other processes to go idle",
    )
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="only the SISA-vs-plain-loop throughput, alternated slice by slice "
        "(writes sisa_throughput.json)",
    )
    args = parser.parse_args(argv)
    # One line per HTTP call and per eager task would bury the figures.
    for noisy in ("httpx", "celery.app.trace"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    base = QUICK if args.quick else FULL
    scale = Scale(
        train_per_class=args.train_per_class or base.train_per_class,
        test_per_class=args.test_per_class or base.test_per_class,
        epochs_per_slice=args.epochs_per_slice or base.epochs_per_slice,
    )
    began = time.perf_counter()
    if args.throughput_only:
        result = run_throughput(scale, args.seed, args.wait_quiet)
        result["bench_wall_s"] = time.perf_counter() - began
        name = "sisa_throughput_quick" if args.quick else "sisa_throughput"
        inter = result["interleaved"]
        print(
            f"SISA {inter['sisa_passes_per_s']:.0f} passes/s, plain loop "
            f"{inter['plain_passes_per_s']:.0f} passes/s: ratio {inter['ratio']:.3f} "
            f"(other processes' CPU share {inter.get('foreign_cpu')})"
        )
        print(f"wrote {write_result(name, result)}")
        return
    name = "sisa_deletion_quick" if args.quick else "sisa_deletion"
    result = run(scale, args.seed, args.wait_quiet, name)
    result["bench_wall_s"] = time.perf_counter() - began
    result["parameters"]["wait_quiet_s"] = args.wait_quiet
    path = write_result(name, result)
    print(table(result))
    print(f"\nwrote {path} in {result['bench_wall_s']:.0f}s")


if __name__ == "__main__":
    main()
