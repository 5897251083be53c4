"""Unit tests for the torch training engine (CPU only, tiny synthetic data)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from worker.device import resolve_device
from worker.training.architectures import architecture_names, build_model, register_architecture
from worker.training.data import load_images, to_model_input
from worker.training.evaluate import accuracy_summary, aggregate, per_sample_loss, predict_proba
from worker.training.trainer import (
    Recipe,
    checkpoint_bytes,
    load_checkpoint,
    make_optimizer,
    seed_everything,
    train_epochs,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


def _toy_dataset(n: int, *, size: int = 8, channels: int = 3, seed: int = 0):
    """Noise images where class c has a bright c-th horizontal band: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    images = rng.integers(0, 96, size=(n, channels, size, size)).astype(np.uint8)
    band = size // 3
    for i, label in enumerate(labels):
        images[i, :, label * band : (label + 1) * band, :] += 150
    return torch.from_numpy(images), torch.from_numpy(labels).long()


def _fresh_model_and_optimizer(seed: int = 0):
    seed_everything(seed)
    model = build_model("small_cnn", num_classes=3, in_channels=3, image_size=8)
    return model, make_optimizer(model, Recipe(lr=0.05))


# --- architectures -------------------------------------------------------------------------


def test_registry_lists_builtins_sorted() -> None:
    names = architecture_names()
    assert names == sorted(names)
    assert {"small_cnn", "resnet18"} <= set(names)


def test_registry_refuses_duplicate_name() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register_architecture("small_cnn")
        def _dup(*, num_classes: int, in_channels: int, image_size: int) -> torch.nn.Module:
            raise AssertionError("never called")


def test_registry_refuses_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"unknown architecture 'vgg99'.*resnet18.*small_cnn"):
        build_model("vgg99", num_classes=3, in_channels=3, image_size=32)
    with pytest.raises(KeyError):
        build_model("vgg99", num_classes=3, in_channels=3, image_size=32)


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_architectures_forward(name: str, size: int, channels: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=channels, image_size=size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 10)


@pytest.mark.parametrize("size", [8, 64])
def test_small_cnn_size_range(size: int) -> None:
    model = build_model("small_cnn", num_classes=4, in_channels=1, image_size=size)
    with torch.no_grad():
        assert model(torch.randn(1, 1, size, size)).shape == (1, 4)


def test_model_init_is_deterministic_under_seed() -> None:
    for name in ("small_cnn", "resnet18"):
        torch.manual_seed(7)
        a = build_model(name, num_classes=3, in_channels=1, image_size=28)
        torch.manual_seed(7)
        b = build_model(name, num_classes=3, in_channels=1, image_size=28)
        for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
            assert torch.equal(pa, pb)


def test_architectures_module_is_torch_free() -> None:
    code = (
        "import sys, worker.training.architectures as a, worker.device\n"
        "assert 'small_cnn' in a.architecture_names()\n"
        "print('torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "False"


# --- device --------------------------------------------------------------------------------


def test_resolve_device() -> None:
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type in {"cpu", "cuda"}
    with pytest.raises(ValueError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


# --- data ----------------------------------------------------------------------------------


def _write_pngs(tmp_path: Path) -> list[Path]:
    rgb = np.zeros((10, 10, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # pure-ish red
    paths = [tmp_path / "rgb.png", tmp_path / "gray.png", tmp_path / "small.png"]
    Image.fromarray(rgb, "RGB").save(paths[0])
    Image.fromarray(np.full((10, 10), 50, dtype=np.uint8), "L").save(paths[1])
    Image.fromarray(np.full((4, 4, 3), 255, dtype=np.uint8), "RGB").save(paths[2])
    return paths


def test_load_images_rgb_and_gray(tmp_path: Path) -> None:
    paths = _write_pngs(tmp_path)
    rgb = load_images(paths, image_size=10, channels=3)
    assert rgb.dtype == torch.uint8 and rgb.shape == (3, 3, 10, 10)
    assert rgb[0, 0].eq(200).all() and rgb[0, 1:].eq(0).all()
    assert rgb[1].eq(50).all()  # gray expanded to 3 equal channels
    assert rgb[2].eq(255).all()  # resized 4 -> 10 px, constant image stays constant
    gray = load_images(paths, image_size=6, channels=1)
    assert gray.shape == (3, 1, 6, 6)
    assert gray[1].eq(50).all() and gray[2].eq(255).all()


def test_load_images_cache_round_trip(tmp_path: Path) -> None:
    paths = _write_pngs(tmp_path)
    cache = tmp_path / "cache"
    first = load_images(paths, image_size=8, channels=3, cache_dir=cache, cache_key="train")
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy"  # no temp files left behind
    for p in paths:
        p.unlink()  # a second load can only succeed from the cache
    second = load_images(paths, image_size=8, channels=3, cache_dir=cache, cache_key="train")
    assert torch.equal(first, second)


def test_to_model_input_range() -> None:
    x = to_model_input(torch.tensor([0, 255, 127], dtype=torch.uint8))
    assert x.dtype == torch.float32
    assert torch.allclose(x, torch.tensor([-1.0, 1.0, (127 / 255 - 0.5) / 0.5]))


# --- training ------------------------------------------------------------------------------


def test_training_learns_toy_task() -> None:
    images, labels = _toy_dataset(300, seed=1)
    test_images, test_labels = _toy_dataset(150, seed=2)
    model, optimizer = _fresh_model_and_optimizer()
    calls: list[tuple[int, int]] = []
    losses = train_epochs(
        model,
        optimizer,
        images,
        labels,
        epochs=8,
        batch_size=32,
        seed=0,
        device=CPU,
        on_batch=lambda done, total: calls.append((done, total)),
    )
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert calls[-1] == (80, 80) and len(calls) == 80
    proba = predict_proba(model, test_images, device=CPU, batch_size=64)
    summary = accuracy_summary(proba, test_labels, ["a", "b", "c"])
    assert summary["count"] == 150
    assert summary["accuracy"] > 0.8, summary


def test_resume_from_checkpoint_is_bit_identical() -> None:
    images, labels = _toy_dataset(200, seed=3)

    straight, straight_opt = _fresh_model_and_optimizer(seed=5)
    straight_losses = train_epochs(
        straight, straight_opt, images, labels, epochs=2, batch_size=32, seed=11, device=CPU
    )

    first, first_opt = _fresh_model_and_optimizer(seed=5)
    first_losses = train_epochs(
        first, first_opt, images, labels, epochs=1, batch_size=32, seed=11, device=CPU
    )
    blob = checkpoint_bytes(first, first_opt)

    # Fresh objects under a different global seed: resumption must not depend on global RNG.
    resumed, resumed_opt = _fresh_model_and_optimizer(seed=999)
    load_checkpoint(blob, resumed, resumed_opt)
    resumed_losses = train_epochs(
        resumed,
        resumed_opt,
        images,
        labels,
        epochs=1,
        batch_size=32,
        seed=11,
        device=CPU,
        first_epoch=1,
    )

    assert straight_losses == first_losses + resumed_losses
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_load_checkpoint_without_optimizer_state_rejects_optimizer() -> None:
    model, optimizer = _fresh_model_and_optimizer()
    blob = checkpoint_bytes(model, None)
    load_checkpoint(blob, model)  # model-only restore is fine
    with pytest.raises(ValueError, match="no optimizer state"):
        load_checkpoint(blob, model, optimizer)


# --- evaluation ----------------------------------------------------------------------------


def test_aggregate_vote_vs_mean_softmax() -> None:
    # Two constituents confidently say class 0; one says class 1 with near-certainty.
    a = torch.tensor([[0.6, 0.4]])
    b = torch.tensor([[0.6, 0.4]])
    c = torch.tensor([[0.0, 1.0]])
    mean = aggregate([a, b, c], "mean_softmax")
    assert torch.allclose(mean, torch.tensor([[0.4, 0.6]]))
    assert mean.argmax(1).item() == 1
    vote = aggregate([a, b, c], "vote")
    assert torch.allclose(vote, torch.tensor([[2 / 3, 1 / 3]]), atol=1e-5)
    assert vote.argmax(1).item() == 0


def test_aggregate_vote_tie_broken_by_mean_softmax() -> None:
    a = torch.tensor([[0.9, 0.1]])
    b = torch.tensor([[0.45, 0.55]])
    vote = aggregate([a, b], "vote")
    assert vote.argmax(1).item() == 0  # 1:1 vote, class 0 has higher mean softmax
    with pytest.raises(ValueError):
        aggregate([a, b], "median")  # type: ignore[arg-type]


def test_per_sample_loss_clamped() -> None:
    proba = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    loss = per_sample_loss(proba, torch.tensor([1, 0]))
    assert torch.isfinite(loss).all()
    assert loss[1].item() == pytest.approx(np.log(2.0))
    assert loss[0].item() > 20


def test_accuracy_summary_handles_empty_class() -> None:
    pred = torch.tensor([0, 1, 1, 0])
    labels = torch.tensor([0, 1, 0, 0])
    summary = accuracy_summary(pred, labels, ["cat", "dog", "eel"])
    assert summary == {
        "accuracy": 0.75,
        "count": 4,
        "per_class": {"cat": pytest.approx(2 / 3), "dog": 1.0, "eel": None},
    }
