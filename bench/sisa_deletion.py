"""Benchmark of the SISA spine on CIFAR-10 (issue 2): deletion speed-up, training throughput and
ensemble accuracy, all measured in one run of the in-process service.

    .venv/bin/python -m bench.sisa_deletion            # the full run (~10-15 min on 2 CPU cores)
    .venv/bin/python -m bench.sisa_deletion --quick    # a smoke run (~1-2 min)

What it measures, with S shards and R slices (defaults S=5, R=4):

1. Deletion. For every slice position k = 1..R it deletes one training file that sits in slice k
   with method `sisa`, then another file in slice k with method `retrain`, and compares the wall
   times with the sample-pass prediction S * R(R+1) / ((R-k+1)(R+k)) (S * 3R/(2R+1) on average
   over positions). Wall time is split into phases (planning, decoding, training, evaluation,
   audit, erasing) by wrapping the worker's flow functions, so a miss can be attributed.
2. Throughput. SISA training sample passes per second against a plain PyTorch loop written here
   (one tensor of all images, manual batches, the same SGD recipe and model) running the same
   number of sample passes.
3. Accuracy. The SISA ensemble's test accuracy against one model (shards=1, slices=1) trained
   through the service on all the data with the same budget of sample passes.

Results go to bench/results/sisa_deletion.json (or sisa_deletion_quick.json) via the harness.
"""

from __future__ import annotations

import argparse
import functools
import logging
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.harness import (
    PROJECT_ROOT,
    Service,
    contention,
    in_process_service,
    subset,
    wait_quiet,
    write_result,
)

WORK = PROJECT_ROOT / ".cache" / "bench" / "sisa_deletion"
SHARDS = 5
SLICES = 4
IMAGE_SIZE = 32  # CIFAR-10's own size: no resampling in the timed paths
RECIPE = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64}


@dataclass(frozen=True)
class Scale:
    train_per_class: int
    test_per_class: int
    epochs_per_slice: int


FULL = Scale(train_per_class=800, test_per_class=200, epochs_per_slice=4)
QUICK = Scale(train_per_class=100, test_per_class=40, epochs_per_slice=2)


# --- phase timing -------------------------------------------------------------------------------


@dataclass
class PhaseClock:
    """Inclusive wall time per phase path ("train_shard/decode"), summed over calls.

    Flow functions are looked up as module attributes when the tasks call them, so replacing
    the attribute is enough to time them without touching the service's code.
    """

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    stack: list[str] = field(default_factory=list)
    wrapped: list[str] = field(default_factory=list)

    def wrap(self, module: Any, attr: str, phase: str) -> None:
        original = getattr(module, attr, None)
        if original is None:  # the flows are being reworked elsewhere; time what exists
            return

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            path = "/".join([*self.stack, phase])
            self.stack.append(phase)
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[path] += time.perf_counter() - began
                self.calls[path] += 1
                self.stack.pop()

        setattr(module, attr, timed)
        self.wrapped.append(f"{module.__name__}.{attr}")

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def snapshot(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in sorted(self.seconds.items())}

    def top_level(self) -> float:
        return sum(v for k, v in self.seconds.items() if "/" not in k)


def instrument() -> PhaseClock:
    from worker.audit import publish
    from worker.flows import deletion, forgetting_metrics, training

    clock = PhaseClock()
    clock.wrap(deletion, "start_batch", "plan")
    clock.wrap(training, "train_shard", "train_shard")
    clock.wrap(training, "load_tensors", "decode")
    clock.wrap(training, "finalize_version", "finalize")
    clock.wrap(training, "evaluate_version", "evaluate")
    clock.wrap(training, "load_constituents", "load_constituents")
    clock.wrap(forgetting_metrics, "forgetting_metrics", "forgetting_metrics")
    clock.wrap(deletion, "complete_batch", "complete")
    clock.wrap(publish, "publish_report", "audit")
    clock.wrap(deletion, "erase_samples", "erase")
    clock.wrap(deletion, "purge_superseded_checkpoints", "purge_checkpoints")
    clock.wrap(deletion, "purge_dataset_cache", "purge_cache")
    return clock


@contextmanager
def measured(clock: PhaseClock, quiet_s: float) -> Iterator[dict[str, Any]]:
    """Phases and machine contention of one measured step."""
    record: dict[str, Any] = {"waited_for_quiet_s": round(wait_quiet(quiet_s), 1)}
    clock.reset()
    with contention(record):
        yield record
    record["phases"] = clock.snapshot()


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
    service: Service, clock: PhaseClock, model_id: int, rel_path: str, method: str, quiet_s: float
) -> dict[str, Any]:
    with measured(clock, quiet_s) as record:
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
        worker_s=clock.top_level(),
    )
    # What is left of the wall time outside the worker's flows: the HTTP request (validation,
    # resolving the name, persisting the request, sending to the broker) and the status GET.
    record["api_s"] = took - record["worker_s"]
    return record


# --- the plain loop -----------------------------------------------------------------------------


def decode_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of a split, classes in sorted order (as the service indexes them)."""
    from worker.training.data import load_images

    paths: list[Path] = []
    labels: list[int] = []
    classes = sorted(d.name for d in (root / split).iterdir() if d.is_dir())
    for index, name in enumerate(classes):
        for path in sorted((root / split / name).iterdir()):
            paths.append(path)
            labels.append(index)
    images = load_images(paths, image_size=IMAGE_SIZE, channels=3)
    return images, torch.tensor(labels, dtype=torch.int64)


class PlainLoop:
    """A plain PyTorch loop: all images in one float tensor, shuffled manual batches, SGD.

    `run(passes)` trains until that many samples went through the model (the last epoch
    partial), so it can match exactly the work of the SISA training it is compared with; the
    model and optimizer carry over between calls.
    """

    def __init__(self, images_u8: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
        from worker.training.architectures import build_model

        torch.manual_seed(0)
        self.net = build_model(
            "small_cnn", num_classes=num_classes, in_channels=3, image_size=IMAGE_SIZE
        )
        self.optimizer = torch.optim.SGD(
            self.net.parameters(),
            lr=RECIPE["lr"],
            momentum=RECIPE["momentum"],
            weight_decay=RECIPE["weight_decay"],
        )
        # Normalised once, outside the timed loop: the most favourable plain baseline.
        self.inputs = images_u8.float().div(127.5).sub(1.0)
        self.targets = labels.long()

    def run(self, sample_passes: int) -> float:
        n, batch = self.inputs.shape[0], int(RECIPE["batch_size"])
        done = 0
        self.net.train()
        began = time.perf_counter()
        while done < sample_passes:
            order = torch.randperm(n)[: sample_passes - done]
            for idx in order.split(batch):
                self.optimizer.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(
                    self.net(self.inputs[idx]), self.targets[idx]
                )
                loss.backward()
                self.optimizer.step()
            done += order.numel()
        return time.perf_counter() - began


def _slice_training(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images_u8: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    seed: int,
) -> float:
    """One SISA slice-training as `train_shard` runs it, minus the store and the database."""
    from worker.training.trainer import checkpoint_bytes, train_epochs

    began = time.perf_counter()
    train_epochs(
        net,
        optimizer,
        images_u8,
        labels,
        epochs=epochs,
        batch_size=int(RECIPE["batch_size"]),
        seed=seed,
        device=torch.device("cpu"),
    )
    checkpoint_bytes(net, optimizer)
    return time.perf_counter() - began


def interleaved_throughput(
    images_u8: torch.Tensor, labels: torch.Tensor, *, epochs_per_slice: int, num_classes: int
) -> dict[str, Any]:
    """SISA's training work against the plain loop, alternated slice by slice.

    The service-level comparison trains SISA and the plain loop minutes apart; on a machine
    shared with other jobs the load differs between the two and swamps the difference being
    measured. Here each SISA slice-training (the service's own `train_epochs` on the shard's
    cumulative slices, then serialising the checkpoint as `train_shard` does) is followed or
    preceded (alternately, to cancel drift) by the plain loop running the same sample passes,
    so both sides see the same load. It leaves out what only the service does (decoding, the
    store, the database), which the service-level figures include.
    """
    from worker.training.architectures import build_model
    from worker.training.trainer import Recipe, make_optimizer

    recipe = Recipe(**RECIPE)  # type: ignore[arg-type]
    plain = PlainLoop(images_u8, labels, num_classes)
    order = torch.randperm(images_u8.shape[0], generator=torch.Generator().manual_seed(0))
    sisa_s = plain_s = 0.0
    passes = 0
    record: dict[str, Any] = {}
    with contention(record):
        for shard, members in enumerate(order.chunk(SHARDS)):
            torch.manual_seed(shard)
            net = build_model(
                "small_cnn", num_classes=num_classes, in_channels=3, image_size=IMAGE_SIZE
            )
            optimizer = make_optimizer(net, recipe)
            x, y = images_u8[members], labels[members]
            for slice_ in range(SLICES):
                end = len(members) * (slice_ + 1) // SLICES  # cumulative slices
                work = end * epochs_per_slice

                step = functools.partial(
                    _slice_training,
                    net,
                    optimizer,
                    x[:end],
                    y[:end],
                    epochs=epochs_per_slice,
                    seed=shard * SLICES + slice_,
                )
                if (shard * SLICES + slice_) % 2 == 0:
                    sisa_s += step()
                    plain_s += plain.run(work)
                else:
                    plain_s += plain.run(work)
                    sisa_s += step()
                passes += work
    return {
        "sample_passes_each": passes,
        "epochs_per_slice": epochs_per_slice,
        "sisa_s": sisa_s,
        "plain_s": plain_s,
        "sisa_passes_per_s": passes / sisa_s,
        "plain_passes_per_s": passes / plain_s,
        "ratio": plain_s / sisa_s,
        **record,
    }


@torch.no_grad()
def accuracy(net: torch.nn.Module, images_u8: torch.Tensor, labels: torch.Tensor) -> float:
    net.eval()
    correct = 0
    for x, y in zip(images_u8.split(512), labels.split(512), strict=True):
        correct += int((net(x.float().div(127.5).sub(1.0)).argmax(1) == y).sum())
    return correct / labels.numel()


def warm_up() -> None:
    """A few steps first, so one-time kernel set-up is charged to neither side."""
    from worker.training.architectures import build_model

    net = build_model("small_cnn", num_classes=10, in_channels=3, image_size=IMAGE_SIZE)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(64, 3, IMAGE_SIZE, IMAGE_SIZE), torch.randint(0, 10, (64,))
    for _ in range(10):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()


# --- the benchmark ------------------------------------------------------------------------------


def predicted_speedup(k: int) -> float:
    from app.sisa.planner import predicted_sisa_speedup

    return predicted_sisa_speedup(SHARDS, SLICES, k)


def bench_data(scale: Scale, seed: int) -> Path:
    """The seeded CIFAR-10 subset, a private copy the service may erase files from."""
    return subset(
        "cifar10",
        WORK / "data",
        train_per_class=scale.train_per_class,
        test_per_class=scale.test_per_class,
        seed=seed,
    )


def run(scale: Scale, seed: int, quiet_s: float) -> dict[str, Any]:
    data = bench_data(scale, seed)
    # Decoded now, before the service erases the files it forgets from this copy.
    train_images, train_labels = decode_split(data, "train")
    test_images, test_labels = decode_split(data, "test")
    n_train = train_images.shape[0]
    warm_up()
    with in_process_service(WORK / "home", device="cpu") as service:
        clock = instrument()
        dataset = service.register_dataset(data, "cifar10-bench")
        classes: list[str] = dataset["classes"]
        if classes != sorted(classes):
            raise RuntimeError(f"class order {classes} differs from the plain loop's")

        # 1. SISA training.
        with measured(clock, quiet_s) as training:
            model, train_wall = service.train_model(
                model_spec(
                    "cifar-sisa",
                    dataset["id"],
                    shards=SHARDS,
                    slices=SLICES,
                    epochs=scale.epochs_per_slice,
                )
            )
        sisa_metrics = model["metrics"]
        sisa_passes = int(sisa_metrics["cost"]["sample_passes"])
        training.update(
            wall_s=train_wall,
            train_s=sisa_metrics["cost"]["train_seconds"],
            sample_passes=sisa_passes,
            test_accuracy=sisa_metrics["test"]["accuracy"],
            constituent_accuracy=statistics.fmean(
                c["test_accuracy"] for c in sisa_metrics["constituents"]
            ),
        )

        # 2. Deletions, one sisa and one retrain per slice position, on distinct files.
        rng = random.Random(seed)
        deletions: list[dict[str, Any]] = []
        for k in range(1, SLICES + 1):
            candidates = [row for row in current_manifest(model["id"]) if row[2] == k - 1]
            (sisa_file, shard, _), (retrain_file, _, _) = rng.sample(candidates, 2)
            sisa = delete_one(service, clock, model["id"], sisa_file, "sisa", quiet_s)
            sisa["shard"] = shard
            retrain = delete_one(service, clock, model["id"], retrain_file, "retrain", quiet_s)
            if sisa["restart_slices"] != [k - 1]:
                raise RuntimeError(f"slice {k}: sisa plan restarted at {sisa['restart_slices']}")
            deletions.append({"slice": k, "sisa": sisa, "retrain": retrain})
            print(
                f"slice {k}: sisa {sisa['wall_s']:.1f}s (train {sisa['train_s']:.1f}s), "
                f"retrain {retrain['wall_s']:.1f}s (train {retrain['train_s']:.1f}s); "
                f"other processes' CPU share {sisa.get('foreign_cpu')}, "
                f"{retrain.get('foreign_cpu')}",
                flush=True,
            )
        final_model = service.client.get(f"/v1/models/{model['id']}").json()
        training["final_accuracy"] = final_model["metrics"]["test"]["accuracy"]

        # 3. One model on all the data with the same budget of sample passes, via the service.
        mono_epochs = max(1, round(sisa_passes / n_train))
        with measured(clock, quiet_s) as mono:
            mono_model, mono_wall = service.train_model(
                model_spec("cifar-mono", dataset["id"], shards=1, slices=1, epochs=mono_epochs)
            )
        mono.update(
            wall_s=mono_wall,
            epochs=mono_epochs,
            train_s=mono_model["metrics"]["cost"]["train_seconds"],
            sample_passes=mono_model["metrics"]["cost"]["sample_passes"],
            test_accuracy=mono_model["metrics"]["test"]["accuracy"],
        )

    # 4. The plain loop on the same data and model, for the same number of sample passes.
    plain: dict[str, Any] = {"waited_for_quiet_s": round(wait_quiet(quiet_s), 1)}
    loop = PlainLoop(train_images, train_labels, len(classes))
    with contention(plain):
        plain_s = loop.run(sisa_passes)
    plain.update(
        loop_s=plain_s,
        sample_passes=sisa_passes,
        test_accuracy=accuracy(loop.net, test_images, test_labels),
    )

    # 5. The same comparison alternated slice by slice, robust to other jobs' load.
    wait_quiet(quiet_s)
    interleaved = interleaved_throughput(
        train_images, train_labels, epochs_per_slice=1, num_classes=len(classes)
    )
    plain["interleaved"] = interleaved
    return summarise(scale, seed, n_train, len(test_labels), training, deletions, mono, plain)


def parameters(scale: Scale, seed: int, **extra: Any) -> dict[str, Any]:
    """The recorded set-up of a run: what every result file of this benchmark names."""
    return {
        "dataset": "cifar10",
        "train_per_class": scale.train_per_class,
        "shards": SHARDS,
        "slices": SLICES,
        "epochs_per_slice": scale.epochs_per_slice,
        "architecture": "small_cnn",
        "image_size": IMAGE_SIZE,
        "recipe": RECIPE,
        "seed": seed,
        **extra,
    }


def run_throughput(scale: Scale, seed: int, quiet_s: float) -> dict[str, Any]:
    """Only item 2, alternated slice by slice (a few minutes instead of the full run)."""
    train_images, train_labels = decode_split(bench_data(scale, seed), "train")
    warm_up()
    waited = wait_quiet(quiet_s)
    result = interleaved_throughput(
        train_images,
        train_labels,
        epochs_per_slice=scale.epochs_per_slice,
        num_classes=int(train_labels.max()) + 1,
    )
    return {
        "parameters": parameters(
            scale, seed, n_train=int(train_images.shape[0]), torch_threads=torch.get_num_threads()
        ),
        "targets": {"throughput_ratio_min": 0.9},
        "waited_for_quiet_s": round(waited, 1),
        "interleaved": result,
    }


def summarise(
    scale: Scale,
    seed: int,
    n_train: int,
    n_test: int,
    training: dict[str, Any],
    deletions: list[dict[str, Any]],
    mono: dict[str, Any],
    plain: dict[str, Any],
) -> dict[str, Any]:
    positions = []
    for row in deletions:
        sisa, retrain, k = row["sisa"], row["retrain"], row["slice"]
        predicted = predicted_speedup(k)
        wall = retrain["wall_s"] / sisa["wall_s"]
        train = retrain["train_s"] / sisa["train_s"]
        positions.append(
            {
                "slice": k,
                "predicted": predicted,
                # The same ratio from the passes actually run (slices differ by a sample or two).
                "predicted_from_passes": retrain["sample_passes"] / sisa["sample_passes"],
                "sisa_wall_s": sisa["wall_s"],
                "retrain_wall_s": retrain["wall_s"],
                "sisa_train_s": sisa["train_s"],
                "retrain_train_s": retrain["train_s"],
                "sisa_fixed_s": sisa["wall_s"] - sisa["train_s"],
                "retrain_fixed_s": retrain["wall_s"] - retrain["train_s"],
                "speedup_wall": wall,
                "speedup_cpu": (retrain["cpu_s"] / sisa["cpu_s"])
                if sisa.get("cpu_s") and retrain.get("cpu_s")
                else None,
                "speedup_train": train,
                "ratio_wall": wall / predicted,
                "ratio_train": train / predicted,
            }
        )
    # The average is over the cost of a deletion at a uniformly random position, i.e. a
    # ratio of mean times, not a mean of per-position ratios.
    average_predicted = SHARDS * 3 * SLICES / (2 * SLICES + 1)
    mean = statistics.fmean
    avg_wall = mean(p["retrain_wall_s"] for p in positions) / mean(
        p["sisa_wall_s"] for p in positions
    )
    avg_train = mean(p["retrain_train_s"] for p in positions) / mean(
        p["sisa_train_s"] for p in positions
    )
    cpu_runs = [(r["sisa"].get("cpu_s"), r["retrain"].get("cpu_s")) for r in deletions]
    avg_cpu = (
        mean(c[1] for c in cpu_runs) / mean(c[0] for c in cpu_runs)
        if all(a and b for a, b in cpu_runs)
        else None
    )
    passes = training["sample_passes"]
    shard_wall = training["phases"].get("train_shard", training["train_s"])
    throughput = {
        "sisa_sample_passes": passes,
        "plain_sample_passes": plain["sample_passes"],
        "plain_loop_s": plain["loop_s"],
        "plain_passes_per_s": plain["sample_passes"] / plain["loop_s"],
        # Three views of SISA's time, from narrowest to widest.
        "sisa_train_s": training["train_s"],
        "sisa_train_shard_wall_s": shard_wall,
        "sisa_end_to_end_s": training["wall_s"],
        "sisa_passes_per_s_train": passes / training["train_s"],
        "sisa_passes_per_s_train_shard": passes / shard_wall,
        "sisa_passes_per_s_end_to_end": passes / training["wall_s"],
        "ratio_train": (passes / training["train_s"]) / (plain["sample_passes"] / plain["loop_s"]),
        "ratio_train_shard": (passes / shard_wall) / (plain["sample_passes"] / plain["loop_s"]),
        "ratio_end_to_end": (passes / training["wall_s"])
        / (plain["sample_passes"] / plain["loop_s"]),
        "mono_service_passes_per_s_train": mono["sample_passes"] / mono["train_s"],
        "ratio_mono_service": (mono["sample_passes"] / mono["train_s"])
        / (plain["sample_passes"] / plain["loop_s"]),
        "plain_foreign_cpu": plain.get("foreign_cpu"),
        "interleaved": plain.get("interleaved"),
        "sisa_foreign_cpu": training.get("foreign_cpu"),
    }
    return {
        "parameters": parameters(
            scale,
            seed,
            n_train=n_train,
            test_per_class=scale.test_per_class,
            n_test=n_test,
            device="cpu",
        ),
        "targets": {
            "deletion_ratio_min": 0.8,
            "throughput_ratio_min": 0.9,
            "average_predicted_speedup": average_predicted,
        },
        "deletion": {
            "positions": positions,
            "average": {
                "predicted": average_predicted,
                "speedup_wall": avg_wall,
                "speedup_train": avg_train,
                "ratio_wall": avg_wall / average_predicted,
                "ratio_train": avg_train / average_predicted,
                "speedup_cpu": avg_cpu,
            },
            "runs": deletions,
            "breakdown": [
                {"slice": row["slice"], "method": m, **breakdown(row[m])}
                for row in deletions
                for m in ("sisa", "retrain")
            ],
        },
        "training": training,
        "throughput": throughput,
        "accuracy": {
            "sisa_ensemble_test": training["test_accuracy"],
            "sisa_constituents_test": training["constituent_accuracy"],
            "sisa_after_deletions_test": training["final_accuracy"],
            "monolithic_test": mono["test_accuracy"],
            "monolithic_epochs": mono["epochs"],
            "plain_loop_test": plain["test_accuracy"],
        },
        "monolithic": mono,
        "plain_loop": plain,
    }


def breakdown(run: dict[str, Any]) -> dict[str, float]:
    """Where one deletion's wall time went, in disjoint parts that add up to the wall time."""
    phases: dict[str, float] = run["phases"]
    decode_train = phases.get("train_shard/decode", 0.0)
    decode_eval = phases.get("finalize/evaluate/decode", 0.0)
    evaluate = phases.get("finalize/evaluate", 0.0)
    return {
        "api": run["api_s"],
        "plan": phases.get("plan", 0.0),
        "decode": decode_train + decode_eval,
        "train_loops": run["train_s"],
        "train_shard_other": phases.get("train_shard", 0.0) - decode_train - run["train_s"],
        "evaluate": evaluate - decode_eval,
        "finalize_other": phases.get("finalize", 0.0) - evaluate,
        "complete": phases.get("complete", 0.0),
    }


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def table(result: dict[str, Any]) -> str:
    lines = [
        "| slice k | predicted | sisa wall s | retrain wall s | speed-up wall | ratio | "
        "sisa train s | retrain train s | speed-up train | ratio | speed-up CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in result["deletion"]["positions"]:
        lines.append(
            f"| {p['slice']} | {p['predicted']:.2f} | {p['sisa_wall_s']:.2f} | "
            f"{p['retrain_wall_s']:.2f} | {p['speedup_wall']:.2f} | {p['ratio_wall']:.2f} | "
            f"{p['sisa_train_s']:.2f} | {p['retrain_train_s']:.2f} | "
            f"{p['speedup_train']:.2f} | {p['ratio_train']:.2f} | {_num(p['speedup_cpu'])} |"
        )
    a = result["deletion"]["average"]
    lines.append(
        f"| average | {a['predicted']:.2f} | | | {a['speedup_wall']:.2f} | {a['ratio_wall']:.2f} "
        f"| | | {a['speedup_train']:.2f} | {a['ratio_train']:.2f} | {_num(a['speedup_cpu'])} |"
    )
    parts = list(breakdown(result["deletion"]["runs"][0]["sisa"]))
    lines += [
        "",
        "| deletion | wall s | " + " | ".join(parts) + " | other CPU |",
        "|---" * (len(parts) + 3) + "|",
    ]
    for row in result["deletion"]["runs"]:
        for method in ("sisa", "retrain"):
            run = row[method]
            cells = " | ".join(f"{v:.2f}" for v in breakdown(run).values())
            lines.append(
                f"| k={row['slice']} {method} | {run['wall_s']:.2f} | {cells} | "
                f"{run.get('foreign_cpu', float('nan')):.2f} |"
            )
    t = result["throughput"]
    acc = result["accuracy"]
    lines += [
        "",
        "| throughput (sample passes/s) | value | vs plain loop |",
        "|---|---|---|",
        f"| plain loop (other processes' CPU share {t['plain_foreign_cpu']}) | "
        f"{t['plain_passes_per_s']:.0f} | 1.00 |",
        f"| SISA, training loops (VersionShard.train_seconds) | "
        f"{t['sisa_passes_per_s_train']:.0f} | {t['ratio_train']:.2f} |",
        f"| SISA, train_shard wall (+ decode, checkpoints) | "
        f"{t['sisa_passes_per_s_train_shard']:.0f} | {t['ratio_train_shard']:.2f} |",
        f"| SISA, end to end (+ manifest, evaluation) | "
        f"{t['sisa_passes_per_s_end_to_end']:.0f} | {t['ratio_end_to_end']:.2f} |",
        f"| one model via the service, training loop (S=1, R=1) | "
        f"{t['mono_service_passes_per_s_train']:.0f} | {t['ratio_mono_service']:.2f} |",
        f"| (other processes' CPU share during SISA training: {t['sisa_foreign_cpu']}) | | |",
        f"| interleaved A/B: plain loop (other CPU {t['interleaved'].get('foreign_cpu')}) | "
        f"{t['interleaved']['plain_passes_per_s']:.0f} | 1.00 |",
        f"| interleaved A/B: SISA slices with train_epochs + checkpoint | "
        f"{t['interleaved']['sisa_passes_per_s']:.0f} | {t['interleaved']['ratio']:.2f} |",
        "",
        "| test accuracy | value |",
        "|---|---|",
        f"| SISA ensemble (S={SHARDS}, R={SLICES}) | {acc['sisa_ensemble_test']:.3f} |",
        f"| SISA constituents (mean) | {acc['sisa_constituents_test']:.3f} |",
        f"| SISA ensemble after the {2 * SLICES} deletions | {acc['sisa_after_deletions_test']:.3f} |",
        f"| one model, same budget ({acc['monolithic_epochs']} epochs, via the service) | "
        f"{acc['monolithic_test']:.3f} |",
        f"| plain loop, same budget | {acc['plain_loop_test']:.3f} |",
    ]
    return "\n".join(lines)


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
    result = run(scale, args.seed, args.wait_quiet)
    result["bench_wall_s"] = time.perf_counter() - began
    result["parameters"]["wait_quiet_s"] = args.wait_quiet
    path = write_result("sisa_deletion_quick" if args.quick else "sisa_deletion", result)
    print(table(result))
    print(f"\nwrote {path} in {result['bench_wall_s']:.0f}s")


if __name__ == "__main__":
    main()
