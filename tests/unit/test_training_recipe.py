"""The training recipe: its stored meaning, its bounds, and a converging engine that stays exact
under SISA (every slice restarts the schedule; resuming repeats a straight run bit for bit)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from app.api.schemas import ModelCreate, ModelImport
from app.core.recipe import RECOMMENDED, ModelRecipe, TrainingRecipe, parse_recipe
from worker.flows.training import engine_recipe
from worker.training import augment
from worker.training.architectures import build_model
from worker.training.data import to_model_input
from worker.training.evaluate import accuracy_summary, predict_proba
from worker.training.schedule import lr_at
from worker.training.trainer import (
    Recipe,
    checkpoint_bytes,
    epoch_permutation,
    load_checkpoint,
    make_optimizer,
    seed_everything,
    train_epochs,
)

CPU = torch.device("cpu")
HISTORICAL = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64}
NEW = Recipe(lr=0.1, schedule="onecycle", warmup=0.3, augment="crop_flip", label_smoothing=0.1)


def _toy(n: int, *, seed: int, size: int = 12):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    images = rng.integers(0, 96, size=(n, 3, size, size)).astype(np.uint8)
    band = size // 3
    for i, label in enumerate(labels):
        images[i, :, label * band : (label + 1) * band, :] += 150
    return torch.from_numpy(images), torch.from_numpy(labels).long()


def _net(seed: int, norm: str | None = "batch", recipe: Recipe = NEW):
    seed_everything(seed)
    net = build_model("small_cnn", num_classes=3, in_channels=3, image_size=12, norm=norm)
    return net, make_optimizer(net, recipe)


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


# --- the stored recipe ----------------------------------------------------------------------


def test_a_stored_recipe_without_the_new_fields_keeps_its_meaning_and_keys() -> None:
    stored = {"shards": 2, "slices": 2, "recipe": HISTORICAL}
    training = parse_recipe(stored).training
    assert (training.schedule, training.augment, training.label_smoothing, training.norm) == (
        "constant",
        "none",
        0.0,
        None,
    )
    assert training.identity() == HISTORICAL
    engine = engine_recipe(training)
    assert engine == Recipe(**HISTORICAL)  # the historical engine defaults
    # Stored again with every field written out, its keys still do not move.
    rewritten = parse_recipe(parse_recipe(stored).to_config()).training
    assert rewritten.identity() == HISTORICAL
    assert TrainingRecipe(**HISTORICAL, warmup=0.4).identity() == HISTORICAL


def test_every_new_field_that_changes_training_changes_the_key() -> None:
    base = TrainingRecipe(**HISTORICAL).identity()
    for change in (
        {"schedule": "onecycle"},
        {"augment": "crop"},
        {"label_smoothing": 0.1},
        {"norm": "batch"},
        {"norm": "group"},
    ):
        assert TrainingRecipe(**HISTORICAL, **change).identity() != base, change
    onecycle = TrainingRecipe(**HISTORICAL, schedule="onecycle", warmup=0.1).identity()
    assert onecycle != TrainingRecipe(**HISTORICAL, schedule="onecycle", warmup=0.3).identity()


def test_a_new_model_gets_its_architecture_recommendation_and_an_import_the_historical() -> None:
    created = ModelCreate(name="m", dataset=1, architecture="small_cnn").recipe()
    assert created.training == TrainingRecipe(**RECOMMENDED["small_cnn"])
    assert created.to_config()["recipe"]["norm"] == "batch"  # recorded with the model
    assert parse_recipe(created.to_config()) == created
    tuned = ModelCreate(name="m", dataset=1, lr=0.02, augment="crop").recipe().training
    assert (tuned.lr, tuned.augment, tuned.schedule) == (0.02, "crop", "onecycle")
    imported = ModelImport(name="m", dataset=1, class_names=["a"], state_dict_path="/x").recipe()
    assert imported.training.identity() == HISTORICAL
    assert imported.training.norm is None  # the imported weights keep the original layers


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lr", float("nan")),
        ("lr", float("inf")),
        ("warmup", float("nan")),
        ("warmup", 0.9),
        ("label_smoothing", float("inf")),
        ("label_smoothing", -0.1),
        ("label_smoothing", 0.6),
        ("momentum", float("nan")),
        ("weight_decay", float("-inf")),
        ("schedule", "step"),
        ("augment", "mixup"),
        ("norm", "layer"),
    ],
)
def test_recipe_fields_refuse_non_finite_and_out_of_range_values(field: str, value: object) -> None:
    for build in (
        lambda: ModelCreate(name="m", dataset=1, **{field: value}),
        lambda: TrainingRecipe(**{field: value}),
    ):
        with pytest.raises(ValidationError) as caught:
            build()
        assert [e["loc"][0] for e in caught.value.errors()] == [field]


def test_every_numeric_recipe_field_is_bounded() -> None:
    for model in (TrainingRecipe, ModelRecipe):
        for name, info in model.model_fields.items():
            if info.annotation in (int, float):
                bounds = {type(m).__name__ for m in info.metadata}
                assert bounds & {"Ge", "Gt"} and bounds & {"Le", "Lt"}, (model, name)


# --- schedules and augmentation -------------------------------------------------------------


def test_schedules_warm_up_peak_and_anneal_within_one_cycle() -> None:
    total, warmup = 100, 0.25
    one = [lr_at("onecycle", 0.1, step=s, total=total, warmup=warmup) for s in range(total)]
    assert one[0] == pytest.approx(0.1 / 25)
    assert max(one) == pytest.approx(0.1) and one.index(max(one)) == 25
    assert one[-1] == pytest.approx(0.1 / 1e4)
    cos = [lr_at("cosine", 0.1, step=s, total=total, warmup=warmup) for s in range(total)]
    assert 0 < cos[0] < cos[24] <= 0.1 and cos[-1] < 0.001
    assert all(math.isfinite(v) and v > 0 for v in one + cos)
    assert lr_at("constant", 0.1, step=7, total=total, warmup=warmup) == 0.1
    with pytest.raises(ValueError, match="outside"):
        lr_at("onecycle", 0.1, step=total, total=total, warmup=warmup)


def test_augmentation_draws_are_private_and_repeatable() -> None:
    state = torch.get_rng_state()
    a = augment.epoch_draws("crop_flip", 50, seed=3, epoch=1)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    b = augment.epoch_draws("crop_flip", 50, seed=3, epoch=1)
    c = augment.epoch_draws("crop_flip", 50, seed=3, epoch=2)
    assert a.offsets is not None and b.offsets is not None and c.offsets is not None
    assert torch.equal(a.offsets, b.offsets) and not torch.equal(a.offsets, c.offsets)
    assert int(a.offsets.min()) >= 0 and int(a.offsets.max()) <= 2 * augment.PAD
    assert augment.epoch_draws("flip", 5, seed=0, epoch=0).offsets is None
    assert augment.epoch_draws("none", 5, seed=0, epoch=0) == augment.EpochDraws(None, None)


def test_crop_and_flip_move_pixels_as_intended() -> None:
    images, _ = _toy(4, seed=0)
    centred = torch.full((4, 2), augment.PAD)
    assert torch.equal(augment.apply(images, centred, None), images)
    shifted = augment.apply(images, torch.tensor([[augment.PAD + 1, augment.PAD]] * 4), None)
    assert torch.equal(shifted[:, :, :-1], images[:, :, 1:])  # one row up
    assert int(shifted[:, :, -1].max()) == 0  # zero padding came in
    flips = torch.tensor([True, False, True, False])
    flipped = augment.apply(images, None, flips)
    assert torch.equal(flipped[0], images[0].flip(2)) and torch.equal(flipped[1], images[1])


# --- the engine -----------------------------------------------------------------------------


def test_the_historical_recipe_trains_exactly_as_the_historical_loop() -> None:
    """A stored model without the new fields retrains to the same bytes as before."""
    images, labels = _toy(150, seed=4)
    net, optimizer = _net(2, norm=None, recipe=Recipe())
    train_epochs(net, optimizer, images, labels, epochs=2, batch_size=32, seed=9, device=CPU)
    reference, ref_opt = _net(2, norm=None, recipe=Recipe())
    reference.train()
    for epoch in range(2):  # the loop as it was written before recipes had options
        for idx in epoch_permutation(150, seed=9, epoch=epoch).split(32):
            ref_opt.zero_grad(set_to_none=True)
            F.cross_entropy(reference(to_model_input(images[idx])), labels[idx]).backward()
            ref_opt.step()
    _assert_same_state(net, reference)


def test_original_small_cnn_layout_is_unchanged_without_norm() -> None:
    keys = list(build_model("small_cnn", num_classes=3, in_channels=3, image_size=12).state_dict())
    assert keys == [
        f"{layer}.{p}"
        for layer in ("features.0", "features.3", "features.6", "classifier")
        for p in ("weight", "bias")
    ]
    with_bn = build_model("small_cnn", num_classes=3, in_channels=3, image_size=12, norm="batch")
    assert any(k.endswith("running_mean") for k in with_bn.state_dict())
    group = build_model("resnet18", num_classes=3, in_channels=3, image_size=12, norm="group")
    assert group(torch.zeros(2, 3, 12, 12)).shape == (2, 3)
    with pytest.raises(ValueError, match="normalisation"):
        build_model("small_cnn", num_classes=3, in_channels=3, image_size=12, norm="layer")


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_a_shard_resumed_before_a_slice_equals_one_trained_from_scratch(norm: str) -> None:
    """SISA: slice 1 trains on slices 0..1 with its own seed and a fresh schedule cycle."""
    images, labels = _toy(130, seed=5)
    cut = 70

    def slice_(net, opt, end: int, seed: int) -> list[float]:  # type: ignore[no-untyped-def]
        return train_epochs(
            net, opt, images[:end], labels[:end], epochs=2, batch_size=32, seed=seed,
            device=CPU, recipe=NEW,
        )  # fmt: skip

    straight, straight_opt = _net(1, norm)
    first = slice_(straight, straight_opt, cut, seed=11)
    blob = checkpoint_bytes(straight, straight_opt)
    second = slice_(straight, straight_opt, 130, seed=12)

    resumed, resumed_opt = _net(999, norm)  # another global seed: nothing may depend on it
    load_checkpoint(blob, resumed, resumed_opt)
    assert slice_(resumed, resumed_opt, 130, seed=12) == second
    _assert_same_state(straight, resumed)
    assert len(first) == 2


def test_resuming_mid_cycle_follows_the_same_schedule() -> None:
    images, labels = _toy(100, seed=6)
    kwargs = {"batch_size": 32, "seed": 3, "device": CPU, "recipe": NEW, "cycle_epochs": 3}
    straight, straight_opt = _net(4)
    losses = train_epochs(straight, straight_opt, images, labels, epochs=3, **kwargs)
    part, part_opt = _net(4)
    head = train_epochs(part, part_opt, images, labels, epochs=1, **kwargs)
    blob = checkpoint_bytes(part, part_opt)
    resumed, resumed_opt = _net(77)
    load_checkpoint(blob, resumed, resumed_opt)
    tail = train_epochs(resumed, resumed_opt, images, labels, epochs=2, first_epoch=1, **kwargs)
    assert losses == head + tail
    _assert_same_state(straight, resumed)


def test_the_recommended_recipe_learns_the_toy_task() -> None:
    images, labels = _toy(300, seed=1)
    test_images, test_labels = _toy(150, seed=2)
    recipe = engine_recipe(TrainingRecipe(**RECOMMENDED["small_cnn"]))
    net, optimizer = _net(0, "batch", recipe)
    losses = train_epochs(
        net, optimizer, images, labels, epochs=6, batch_size=32, seed=0, device=CPU, recipe=recipe
    )
    assert losses[-1] < losses[0]
    proba = predict_proba(net, test_images, device=CPU)
    assert accuracy_summary(proba, test_labels, ["a", "b", "c"])["accuracy"] > 0.8
