"""Heads on a public backbone vs SISA from scratch, on CIFAR-10.

The training images are split in two halves by a seeded draw: a "public" half trains a
torchvision resnet18 adapted to 32 px (3x3 first convolution, no max-pool) inside this
benchmark, which is registered over HTTP as a backbone; the other half is the private
dataset. On the same private data and test split it compares SISA heads (S=5, R=4) with one
head on all private data and with SISA ``small_cnn`` from scratch, then times a single-file
deletion from the heads model (warm embedding cache) against a full retrain of the heads.

    python -m bench.backbone_heads            # the quick scale (2 shared CPU cores)
    python -m bench.backbone_heads --scale medium   # a 5,000-image backbone (quiet CPU)
    python -m bench.backbone_heads --full     # all of CIFAR-10 (a GPU)

The trained backbone is kept under .cache/bench/backbone_heads/, so re-runs skip training it.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.harness import PROJECT_ROOT, in_process_service, unpack, write_result

WORK = PROJECT_ROOT / ".cache" / "bench" / "backbone_heads"
SHARDS, SLICES = 5, 4
PEAK_LR = 2e-3
TRAINED_ON = (
    "CIFAR-10 training images of the public half (a seeded draw; disjoint from the private half)"
)


@dataclass(frozen=True)
class Scale:
    public_per_class: int | None
    private_per_class: int | None
    test_per_class: int | None
    backbone_epochs: int
    head_epochs_per_slice: int
    scratch_epochs_per_slice: int


QUICK = Scale(100, 100, 30, 2, 8, 4)
# A quiet 2-core CPU: a backbone on 5,000 public images, 100 private images per class.
MEDIUM = Scale(500, 100, 30, 4, 8, 4)
FULL = Scale(None, None, None, 30, 10, 10)
SCALES = {"quick": QUICK, "medium": MEDIUM, "full": FULL}


def split_halves(scale: Scale, seed: int) -> tuple[list[tuple[Path, int]], Path]:
    """The public half as (file, label) pairs and the private dataset folder (a copy)."""
    source = unpack("cifar10")
    rng = random.Random(seed)
    private = WORK / "data" / "private"
    if private.exists():
        shutil.rmtree(private)
    public: list[tuple[Path, int]] = []
    classes = sorted(p.name for p in (source / "train").iterdir() if p.is_dir())
    for label, name in enumerate(classes):
        files = sorted((source / "train" / name).iterdir())
        rng.shuffle(files)
        half = len(files) // 2
        pub, priv = files[:half], files[half:]
        public += [(f, label) for f in pub[: scale.public_per_class]]
        _copy(priv[: scale.private_per_class], private / "train" / name)
        tests = sorted((source / "test" / name).iterdir())
        _copy(
            rng.sample(tests, min(scale.test_per_class or len(tests), len(tests))),
            private / "test" / name,
        )
    return public, private


def _copy(files: list[Path], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copy2(path, target / path.name)


def small_resnet18(num_classes: int = 10) -> Any:
    import torch
    import torchvision

    net = torchvision.models.resnet18(num_classes=num_classes)
    net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = torch.nn.Identity()
    return net


def train_backbone(public: list[tuple[Path, int]], scale: Scale, seed: int) -> tuple[bytes, dict]:
    """The public backbone's state_dict bytes (cached by scale and seed) and how it was made."""
    import torch

    from worker.training.augment import apply, epoch_draws
    from worker.training.data import load_images, to_model_input
    from worker.training.schedule import lr_at

    cached = WORK / f"backbone-{scale.public_per_class}-{scale.backbone_epochs}-{seed}.pt"
    info = {
        "images": len(public),
        "epochs": scale.backbone_epochs,
        "optimizer": f"adam, one-cycle to {PEAK_LR}, crop+flip, batch 128",
        "cached": cached.is_file(),
    }
    if cached.is_file():
        return cached.read_bytes(), info
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images = load_images([p for p, _ in public], image_size=32, channels=3)
    labels = torch.tensor([y for _, y in public])
    torch.manual_seed(seed)
    net = small_resnet18().to(dev)
    # Adam: robust over the few hundred steps of the quick scale (SGD at 0.1 diverged there).
    opt = torch.optim.Adam(net.parameters(), lr=PEAK_LR)
    batch, n = 128, len(public)
    steps = scale.backbone_epochs * -(-n // batch)
    began, step = time.perf_counter(), 0
    net.train()
    for epoch in range(scale.backbone_epochs):
        order = torch.randperm(n)
        draws = epoch_draws("crop_flip", n, seed=seed, epoch=epoch)
        for b, idx in enumerate(order.split(batch)):
            for group in opt.param_groups:
                group["lr"] = lr_at("onecycle", PEAK_LR, step=step, total=steps, warmup=0.25)
            sl = slice(b * batch, b * batch + idx.numel())
            assert draws.offsets is not None and draws.flips is not None
            x = apply(images[idx].to(dev), draws.offsets[sl].to(dev), draws.flips[sl].to(dev))
            loss = torch.nn.functional.cross_entropy(net(to_model_input(x)), labels[idx].to(dev))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        print(
            f"backbone epoch {epoch + 1}/{scale.backbone_epochs} loss {loss.item():.3f}", flush=True
        )
    info["train_seconds"] = round(time.perf_counter() - began, 1)
    buffer = io.BytesIO()
    torch.save({k: v.cpu() for k, v in net.state_dict().items()}, buffer)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(buffer.getvalue())
    return buffer.getvalue(), info


def _accuracy(model: dict[str, Any]) -> float:
    return round(float(model["metrics"]["test"]["accuracy"]), 4)


def _victim(private: Path, index: int) -> str:
    """A training file of the first class (each request erases its file from the dataset)."""
    first_class = sorted((private / "train").iterdir())[0]
    return f"train/{first_class.name}/{sorted(first_class.iterdir())[index].name}"


def run(scale: Scale, seed: int) -> dict[str, Any]:
    load_before = os.getloadavg()
    public, private = split_halves(scale, seed)
    weights, backbone_info = train_backbone(public, scale, seed)
    with in_process_service(WORK / "home", data_roots=[WORK / "data"]) as service:
        client = service.client
        began = time.perf_counter()
        registered = client.post(
            "/v1/backbones",
            data={
                "name": "cifar-public-r18",
                "architecture": "resnet18",
                "trained_on": TRAINED_ON,
                "image_size": "32",
                "mean": "0.5,0.5,0.5",
                "std": "0.5,0.5,0.5",
            },
            files={"file": ("backbone.pt", weights)},
        )
        registered.raise_for_status()
        backbone_info["register_seconds"] = round(time.perf_counter() - began, 2)
        dataset = service.register_dataset(private, "cifar-private")
        base = {"dataset": dataset["id"], "seed": seed, "image_size": 32}
        heads_spec = {
            **base,
            "backbone": "cifar-public-r18",
            "epochs_per_slice": scale.head_epochs_per_slice,
        }
        heads, heads_cold_s = service.train_model(
            {"name": "heads", "shards": SHARDS, "slices": SLICES, **heads_spec}
        )
        one_head, one_head_s = service.train_model(
            {"name": "one-head", "shards": 1, "slices": 1, **heads_spec}
        )
        scratch, scratch_s = service.train_model(
            {
                "name": "scratch",
                "shards": SHARDS,
                "slices": SLICES,
                "architecture": "small_cnn",
                "epochs_per_slice": scale.scratch_epochs_per_slice,
                **base,
            }
        )
        heads_warm, heads_warm_s = service.train_model(
            {"name": "heads-again", "shards": SHARDS, "slices": SLICES, **heads_spec}
        )
        # The deletions run on a model alone on its own copy of the data: on a shared dataset a
        # file is erased only once every model trained on it has forgotten it (three more here).
        alone = WORK / "data" / "deletion"
        shutil.rmtree(alone, ignore_errors=True)
        shutil.copytree(private, alone)
        own = service.register_dataset(alone, "cifar-deletion")
        deleting, _ = service.train_model(
            {"name": "heads-deletion", "shards": SHARDS, "slices": SLICES}
            | {**heads_spec, "dataset": own["id"]}
        )
        sisa, sisa_s = service.forget(
            {"model": deleting["id"], "filenames": [_victim(alone, 0)], "method": "sisa"}
        )
        retrain, retrain_s = service.forget(
            {"model": deleting["id"], "filenames": [_victim(alone, 1)], "method": "retrain"}
        )
    summary = _summary(scale, seed, backbone_info, registered.json(), locals())
    summary["load_average_at_start"] = load_before
    return summary


def _summary(
    scale: Scale, seed: int, backbone: dict, registered: dict, r: dict[str, Any]
) -> dict[str, Any]:
    heads, one, scratch = _accuracy(r["heads"]), _accuracy(r["one_head"]), _accuracy(r["scratch"])
    sisa_s, retrain_s = r["sisa_s"], r["retrain_s"]
    return {
        "scale": asdict(scale),
        "shards": SHARDS,
        "slices": SLICES,
        "seed": seed,
        "backbone": {
            **backbone,
            "sha256": registered["sha256"],
            "feature_dim": registered["feature_dim"],
            "stem": registered["stem"],
            "trained_on": registered["trained_on"],
        },
        "accuracy": {
            "sisa_heads": heads,
            "one_head": one,
            "sisa_small_cnn_scratch": scratch,
            "sisa_heads_again_warm_cache": _accuracy(r["heads_warm"]),
        },
        "targets": {
            "heads_within_1.5_points_of_one_head": {
                "gap_points": round(100 * (one - heads), 2),
                "met": one - heads <= 0.015,
            },
            "heads_10_points_over_scratch": {
                "gain_points": round(100 * (heads - scratch), 2),
                "met": heads - scratch >= 0.10,
            },
            "deletion_under_10_s": {"wall_s": round(sisa_s, 2), "met": sisa_s < 10},
        },
        "train_seconds": {
            "sisa_heads_cold_cache": round(r["heads_cold_s"], 2),
            "sisa_heads_warm_cache": round(r["heads_warm_s"], 2),
            "one_head": round(r["one_head_s"], 2),
            "sisa_small_cnn_scratch": round(r["scratch_s"], 2),
        },
        "deletion": {
            "sisa_request_wall_s": round(sisa_s, 2),
            "sisa_status": r["sisa"]["status"],
            "sisa_phases": r["sisa"].get("timings"),
            "full_retrain_request_wall_s": round(retrain_s, 2),
            "retrain_status": r["retrain"]["status"],
            "speedup_over_full_retrain_request": round(retrain_s / sisa_s, 2) if sisa_s else None,
            "speedup_over_heads_training_warm_cache": round(r["heads_warm_s"] / sisa_s, 2)
            if sisa_s
            else None,
        },
        "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="all of CIFAR-10 (use a GPU)")
    parser.add_argument("--scale", choices=sorted(SCALES), help="quick (default), medium or full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="backbone_heads")
    args = parser.parse_args()
    scale = FULL if args.full else SCALES[args.scale or "quick"]
    result = run(scale, args.seed)
    print(write_result(args.out, result))


if __name__ == "__main__":
    main()
