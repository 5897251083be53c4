"""Every registered unlearning method against the one interface, on a tiny CNN and a toy task."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pydantic
import pytest
import torch
from torch import nn

from app.core.methods import MethodSpec, register
from app.core.methods import get_method as get_spec
from app.core.methods.base import Miss
from app.core.methods.weight_filtering import FilterTrainingConfig
from worker.unlearning import (
    MethodResult,
    Runner,
    Target,
    UnlearningInputs,
    _ops,
    all_methods,
    get_method,
    register_runner,
)
from worker.unlearning.filtering import (
    FilterSet,
    _keep_targets,
    apply_filters,
    filter_epochs,
    per_sample_filters,
    train_filters,
)
from worker.unlearning.metrics import layer_distances, prediction_distribution, relearn_epochs
from worker.unlearning.registry import validate_config

REPO = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")
NUM_CLASSES = 3
FORGET = [1]

# small configs so the whole contract test runs in seconds; unknown (new) methods use defaults
SMALL_CONFIGS: dict[str, dict] = {
    "finetune": {"epochs": 1, "batch_size": 32},
    "random_label": {"epochs": 1, "batch_size": 32},
    "neggrad_plus": {"epochs": 1, "batch_size": 32, "alpha": 0.9},
    "l1_sparse": {"epochs": 1, "batch_size": 32, "l1_weight": 1e-3},
    "ssd": {"batch_size": 32, "alpha": 1.0},
    "unsir": {
        "noise_batch_size": 16,
        "noise_epochs": 2,
        "noise_steps": 2,
        "noise_repeats": 2,
        "retain_per_class": 40,
        "batch_size": 32,
    },
    "adversarial": {"epochs": 2, "batch_size": 32, "disc_hidden": 16, "eval_max_samples": 64},
    "pruning": {"epochs": 1, "batch_size": 32, "ratio": 0.3},
    "dummy_labels": {"epochs": 1, "batch_size": 32},
    "scrub": {"epochs": 2, "max_steps": 1, "batch_size": 32, "forget_batch_size": 16},
    "salun": {"epochs": 1, "batch_size": 32, "mask_ratio": 0.5},
    "kodge": {"samples": 60, "max_patches": 2000},
}
# Filter training for weight_filtering on the toy task (its requests take no configuration).
# The default cosine step size moves the entries less in all than a constant one: the toy
# needs 20 epochs with it (10 with a constant step).
TOY_FILTERS = FilterTrainingConfig(
    epochs=20, min_steps=0, batch_size=16, lr=0.05, lambda_unlearn=1.0, lambda_reg=1.0
)

MODEL_METHODS = [s.name for s in all_methods() if s.runner is Runner.MODEL]
# every (method, target) pair a method declares: the contract holds for each
MODEL_PAIRS = [
    pytest.param(s.name, t, id=f"{s.name}-{t.value}")
    for s in all_methods()
    if s.runner is Runner.MODEL
    for t in (Target.CLASSES, Target.FILES)
    if t in s.targets
]
SISA_METHODS = [s.name for s in all_methods() if s.runner is Runner.SISA]


# --- toy task -----------------------------------------------------------------------------


def make_toy(n_per_class: int, num_classes: int, seed: int, noise: float = 40.0):
    """uint8 [N, 3, 8, 8] images: a fixed random template per class plus Gaussian noise."""
    templates = torch.rand(num_classes, 3, 8, 8, generator=torch.Generator().manual_seed(1234))
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    x = templates[labels] * 255 + noise * torch.randn(len(labels), 3, 8, 8, generator=gen)
    return x.clamp(0, 255).round().to(torch.uint8), labels


def tiny_cnn(num_classes: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )


def pretrain(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> nn.Module:
    gen = _ops.seed_all(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(epochs):
        for idx in _ops.batch_indices(len(y), 32, gen):
            xb, yb = _ops.load_batch(x, y, idx, CPU)
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def per_class_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    pred = _ops.predict(model, x, CPU)
    return [float((pred[y == c] == c).float().mean()) for c in range(int(y.max()) + 1)]


@pytest.fixture(scope="module")
def toy():
    torch.set_num_threads(2)
    x, y = make_toy(60, NUM_CLASSES, seed=0)
    model = pretrain(tiny_cnn(NUM_CLASSES), x, y, epochs=4)
    assert min(per_class_accuracy(model, x, y)) > 0.9
    forget = torch.isin(y, torch.tensor(FORGET))
    return model, x[forget], y[forget], x[~forget], y[~forget]


@pytest.fixture(scope="module")
def toy_files(toy):
    """The same model, forgetting a random 10% of its training samples (every class kept)."""
    model, fx, fy, rx, ry = toy
    x, y = torch.cat([fx, rx]), torch.cat([fy, ry])
    forget = torch.zeros(len(y), dtype=torch.bool)
    forget[torch.randperm(len(y), generator=torch.Generator().manual_seed(5))[: len(y) // 10]] = (
        True
    )
    return model, x[forget], y[forget], x[~forget], y[~forget]


@pytest.fixture(scope="module")
def toy_filters(toy) -> FilterSet:
    """Per-class weight filters trained for the toy model on its own training data."""
    model, fx, fy, rx, ry = toy
    x, y = torch.cat([fx, rx]), torch.cat([fy, ry])
    return train_filters(copy.deepcopy(model), x, y, NUM_CLASSES, TOY_FILTERS, CPU, seed=0)


def filters_for(name: str, toy_filters: FilterSet) -> FilterSet | None:
    return toy_filters if get_method(name).uses_weight_filters else None


def case(target: Target, toy, toy_files) -> tuple[Any, list[int]]:
    """The toy split and the forget classes for a target."""
    return (toy, list(FORGET)) if target is Target.CLASSES else (toy_files, [])


class Untouchable:
    """Stands in for the forget tensors of zero-glance methods: any use is recorded and raises."""

    def __init__(self, log: list[str]) -> None:
        object.__setattr__(self, "_log", log)

    def _touch(self, what: str):
        self._log.append(what)
        raise AssertionError(f"forget data touched: {what}")

    def __getattr__(self, name):
        return self._touch(f"attribute {name}")

    def __setattr__(self, name, value):
        self._touch(f"set {name}")

    def __getitem__(self, key):
        return self._touch("getitem")

    def __len__(self):
        return self._touch("len")

    def __iter__(self):
        return self._touch("iter")

    def __bool__(self):
        return self._touch("bool")

    def __array__(self, *a, **k):
        return self._touch("array")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        for a in args:
            if isinstance(a, Untouchable):
                return a._touch(f"torch {func}")
        raise AssertionError("forget data touched by torch")


# --- registry -----------------------------------------------------------------------------


def test_registry_lists_the_built_in_methods():
    names = [s.name for s in all_methods()]
    assert names == sorted(names)
    expected = {"finetune", "random_label", "neggrad_plus", "l1_sparse", "ssd", "unsir"}
    expected |= {"pruning", "dummy_labels", "scrub", "salun"}
    assert expected | {"adversarial", "sisa", "retrain"} <= set(names)
    for spec in all_methods():
        assert spec.summary and spec.targets
        assert (spec.run is None) == (spec.runner is Runner.SISA)
    assert get_method("unsir").reads_forget_images is False
    assert get_method("unsir").targets == frozenset({Target.CLASSES})
    assert get_method("adversarial").targets == frozenset({Target.CLASSES})


def test_registry_refuses_duplicates():
    spec = get_spec("finetune")
    with pytest.raises(ValueError, match="already registered"):
        register(spec)
    clone = MethodSpec(
        name="finetune",
        summary="x",
        paper=None,
        targets=frozenset({Target.FILES}),
        runner=Runner.SISA,
        exact=True,
        config_model=get_spec("sisa").config_model,
    )
    with pytest.raises(ValueError, match="already registered"):
        register(clone)
    assert get_spec("finetune") is spec
    implementation = get_method("finetune").run
    assert implementation is not None
    with pytest.raises(ValueError, match="already has an implementation"):
        register_runner("finetune", implementation)
    assert get_method("finetune").run is implementation


def test_get_method_unknown_lists_names():
    with pytest.raises(ValueError) as err:
        get_method("no-such-method")
    for name in ("unsir", "sisa", "finetune"):
        assert name in str(err.value)


def test_spec_rejects_inconsistent_definitions():
    implementation = get_method("finetune").run
    assert implementation is not None
    # A SISA-engine method takes no in-memory implementation.
    with pytest.raises(ValueError, match="SISA engine"):
        register_runner("sisa", implementation)

    class Loose(pydantic.BaseModel):
        a: int = 1

    with pytest.raises(ValueError, match="extra='forbid'"):
        MethodSpec("x", "x", None, frozenset({Target.FILES}), Runner.SISA, True, Loose)


def test_validate_config():
    assert validate_config("unsir", None).model_dump()["impair_lr"] == 0.004
    with pytest.raises(pydantic.ValidationError):
        validate_config("unsir", {"impair_lr": -1})
    with pytest.raises(ValueError, match="known methods"):
        validate_config("nope", {})
    ssd: Any = validate_config("ssd", {"lambda": 2.0, "alpha": 5})
    assert ssd.lambda_ == 2.0 and ssd.alpha == 5
    assert ssd.model_dump()["lambda"] == 2.0
    assert validate_config("ssd", {"lambda_": 3.0}).model_dump()["lambda"] == 3.0


def test_registry_import_is_torch_free():
    code = textwrap.dedent(
        """
        import sys
        import worker.unlearning.registry as r
        specs = r.all_methods()
        for s in specs:
            s.config_model()
        r.validate_config("unsir", {"impair_lr": 0.05})
        bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert not bad, bad
        print(len(specs))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 9


# --- the contract, for every method -------------------------------------------------------


@pytest.mark.parametrize("name", SISA_METHODS)
def test_sisa_runner_specs(name):
    spec = get_method(name)
    assert spec.run is None
    assert spec.exact is True
    assert validate_config(name, {}) == spec.config_model()
    with pytest.raises(pydantic.ValidationError):
        validate_config(name, {"epochs": 3})


@pytest.mark.parametrize(("name", "target"), MODEL_PAIRS)
def test_method_contract(name, target, toy, toy_files, toy_filters):
    spec = get_method(name)
    assert spec.run is not None
    # config: the defaults validate, an unknown field is refused
    assert isinstance(validate_config(name, {}), spec.config_model)
    with pytest.raises(pydantic.ValidationError):
        validate_config(name, {"definitely_not_a_field": 1})
    config = validate_config(name, SMALL_CONFIGS.get(name, {}))

    (base, fx, fy, rx, ry), forget_classes = case(target, toy, toy_files)
    model = copy.deepcopy(base)
    before = copy.deepcopy(base.state_dict())
    touched: list[str] = []
    if spec.reads_forget_images:
        forget_x, forget_y = fx.clone(), fy.clone()
    else:
        forget_x, forget_y = Untouchable(touched), Untouchable(touched)  # type: ignore[assignment]
    calls: list[tuple[float, str]] = []
    inputs = UnlearningInputs(
        model=model,
        forget_images=forget_x,
        forget_labels=forget_y,
        retain_images=rx.clone(),
        retain_labels=ry.clone(),
        num_classes=NUM_CLASSES,
        forget_classes=forget_classes,
        device=CPU,
        seed=7,
        progress=lambda f, phase: calls.append((f, phase)),
        filters=filters_for(name, toy_filters),
    )
    result = spec.run(inputs, config)

    assert isinstance(result, MethodResult)
    json.dumps(result.details, allow_nan=False)
    assert touched == []
    assert len(calls) >= 2
    assert all(0.0 <= f <= 1.0 and isinstance(p, str) and p for f, p in calls)
    assert calls[-1][0] == 1.0
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions)
    after = model.state_dict()
    assert any(
        not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point()
    ), f"{name} left the weights unchanged"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # the inputs were not modified and the model's mode is restored
    assert torch.equal(inputs.retain_images, rx)
    assert model.training is False
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, NUM_CLASSES)


@pytest.mark.parametrize(("name", "target"), MODEL_PAIRS)
def test_method_is_seeded(name, target, toy, toy_files, toy_filters):
    spec = get_method(name)
    (base, fx, fy, rx, ry), forget_classes = case(target, toy, toy_files)
    if not spec.reads_forget_images:  # callers give zero-glance methods empty forget tensors
        fx, fy = fx[:0], fy[:0]
    config = validate_config(name, SMALL_CONFIGS.get(name, {}))
    assert spec.run is not None
    runs = []
    for _ in range(2):
        model = copy.deepcopy(base)
        inputs = UnlearningInputs(model, fx, fy, rx, ry, NUM_CLASSES, forget_classes, CPU, 3)
        inputs.filters = filters_for(name, toy_filters)
        result = spec.run(inputs, config)
        runs.append((model.state_dict(), json.dumps(result.details, sort_keys=True)))
    (sd_a, details_a), (sd_b, details_b) = runs
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert details_a == details_b


def test_untouchable_sentinel_catches_uses():
    log: list[str] = []
    x = Untouchable(log)
    uses = (lambda: x[0], lambda: x.shape, lambda: len(x), lambda: torch.cat([x, x]))  # type: ignore[list-item]
    for use in uses:
        with pytest.raises((AssertionError, TypeError)):
            use()
    assert len(log) >= 3


@pytest.mark.parametrize("repair_distill", [0.0, 1.0], ids=["labels", "distilled"])
def test_unsir_forgets_the_class_and_keeps_the_others(repair_distill: float):
    torch.set_num_threads(2)
    k, forget = 4, 2
    x, y = make_toy(300, k, seed=0)
    test_x, test_y = make_toy(100, k, seed=1)
    model = pretrain(tiny_cnn(k), x, y, epochs=3)
    assert min(per_class_accuracy(model, test_x, test_y)) > 0.95
    keep = y != forget
    config = validate_config(
        "unsir",
        # The paper's step sizes: the defaults are sized for the service's small CNNs on real
        # images, and this toy net on 8x8 synthetic data needs the larger steps.
        {
            "noise_batch_size": 32,
            "noise_repeats": 4,
            "retain_per_class": 300,
            "batch_size": 32,
            "impair_lr": 0.02,
            "repair_lr": 0.01,
            "repair_distill": repair_distill,
        },
    )
    empty = torch.empty(0, 3, 8, 8, dtype=torch.uint8)
    run = get_method("unsir").run
    assert run is not None
    run(
        UnlearningInputs(
            model=model,
            forget_images=empty,
            forget_labels=torch.empty(0, dtype=torch.long),
            retain_images=x[keep],
            retain_labels=y[keep],
            num_classes=k,
            forget_classes=[forget],
            device=CPU,
            seed=0,
        ),
        config,
    )
    acc = per_class_accuracy(model, test_x, test_y)
    assert acc[forget] <= 0.05, acc
    assert min(a for c, a in enumerate(acc) if c != forget) >= 0.9, acc


def test_kodge_forgets_the_class_and_keeps_the_others():
    torch.set_num_threads(2)
    k, forget = 4, 2
    x, y = make_toy(300, k, seed=0)
    test_x, test_y = make_toy(100, k, seed=1)
    model = pretrain(tiny_cnn(k), x, y, epochs=3)
    assert min(per_class_accuracy(model, test_x, test_y)) > 0.95
    keep = y != forget
    run = get_method("kodge").run
    assert run is not None
    before = copy.deepcopy(model.state_dict())
    result = run(
        UnlearningInputs(model, x[~keep], y[~keep], x[keep], y[keep], k, [forget], CPU, 0),
        validate_config("kodge", {}),  # the official CIFAR-10 defaults
    )
    acc = per_class_accuracy(model, test_x, test_y)
    assert acc[forget] <= 0.05, acc
    assert min(a for c, a in enumerate(acc) if c != forget) >= 0.9, acc
    # gradient-free: only conv/linear weights move, never a bias or a BatchNorm statistic
    after = model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == {"0.weight", "4.weight", "8.weight"}, changed
    assert result.details["projected_layers"] == ["0", "4", "8"]
    assert result.details["retain_samples"] == 900


def _each_row_forgets_its_class_alone(model: nn.Module, filters: FilterSet) -> None:
    x, y = make_toy(40, NUM_CLASSES, seed=11)
    for c in range(NUM_CLASSES):
        filtered = copy.deepcopy(model)
        apply_filters(filtered, filters, [c])
        acc = per_class_accuracy(filtered, x, y)
        assert acc[c] <= 0.1, (c, acc)
        assert all(a >= 0.9 for k, a in enumerate(acc) if k != c), (c, acc)


def test_weight_filters_forget_each_class_alone_and_compose(toy, toy_filters):
    """Each class's row forgets that class and keeps the others, on held-out images; two rows
    multiplied forget both; the rows left after one is used still forget theirs."""
    model, *_ = toy
    x, y = make_toy(40, NUM_CLASSES, seed=11)
    _each_row_forgets_its_class_alone(model, toy_filters)
    first = copy.deepcopy(model)
    apply_filters(first, toy_filters, [0])
    left = toy_filters.without([0])
    assert left.classes == [1, 2]
    assert all(rows.shape[0] == 2 for rows in left.rows.values())
    apply_filters(first, left, [1])
    acc = per_class_accuracy(first, x, y)
    assert acc[0] <= 0.1 and acc[1] <= 0.1 and acc[2] >= 0.9, acc
    with pytest.raises(ValueError, match="no filter rows"):
        apply_filters(copy.deepcopy(model), left, [0])
    again = FilterSet.from_bytes(left.to_bytes())
    assert again.classes == left.classes
    assert all(torch.equal(again.rows[k], left.rows[k]) for k in left.rows)


@pytest.mark.parametrize("lr_schedule", ["constant", "cosine"])
def test_filters_trained_towards_the_parent_without_the_class_forget_it_too(toy, lr_schedule):
    """``keep_target: parent``: the kept classes' images are distilled from the frozen model
    with the filtered classes removed, rather than fitted to their labels (under either step
    size schedule)."""
    model, fx, fy, rx, ry = toy
    epochs = {"constant": 10, "cosine": 20}[lr_schedule]
    config = TOY_FILTERS.model_copy(
        update={"keep_target": "parent", "lr_schedule": lr_schedule, "epochs": epochs}
    )
    filters = train_filters(
        copy.deepcopy(model), torch.cat([fx, rx]), torch.cat([fy, ry]), NUM_CLASSES, config, CPU, 0
    )
    _each_row_forgets_its_class_alone(model, filters)


def test_filters_train_at_least_min_steps_on_a_small_constituent(toy):
    """A constituent with few images gets more epochs, up to ``min_steps`` optimizer steps;
    one with enough images keeps ``epochs``."""
    model, fx, fy, rx, ry = toy
    x, y = torch.cat([fx, rx]), torch.cat([fy, ry])
    per_epoch = _ops.steps_per_epoch(x.shape[0], 16)
    config = TOY_FILTERS.model_copy(update={"epochs": 1, "min_steps": 3 * per_epoch + 1})
    assert filter_epochs(x.shape[0], config) == 4
    assert filter_epochs(x.shape[0], config.model_copy(update={"min_steps": 0})) == 1
    assert filter_epochs(100 * x.shape[0], config) == 1
    phases: list[str] = []
    train_filters(
        copy.deepcopy(model), x, y, NUM_CLASSES, config, CPU, 0, lambda f, p: phases.append(p)
    )
    # a report at the start and after every optimizer step but the last (then "done")
    assert phases.count("filters") == 4 * per_epoch


def test_keep_targets_remove_each_images_filtered_classes():
    parent = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    target = _keep_targets(parent, torch.tensor([2, 0]), torch.tensor([-1, 1]))
    assert target[0].tolist() == [1.0, 2.0, float("-inf")]
    assert target[1].tolist() == [float("-inf"), float("-inf"), 1.0]
    assert parent[0, 2] == 3.0  # the frozen model's logits are left as they were


def test_applied_filters_equal_the_per_image_filters_they_were_trained_with(toy, toy_filters):
    """Training scales each output channel through a hook; materialising the row in the
    weights must give the same function."""
    model, fx, *_ = toy
    inputs = _ops.to_input(fx[:8])
    current = {name: rows[[2] * 8] for name, rows in toy_filters.rows.items()}
    with torch.no_grad(), _ops.eval_mode(model), per_sample_filters(model, current):
        hooked = model(inputs)
    filtered = copy.deepcopy(model)
    apply_filters(filtered, toy_filters, [2])
    with torch.no_grad():
        direct = filtered.eval()(inputs)
    assert torch.allclose(hooked, direct, atol=1e-5)


def test_weight_filtering_needs_filters(toy):
    model, fx, fy, rx, ry = toy
    spec = get_method("weight_filtering")
    assert spec.uses_weight_filters and spec.escalation == ()
    assert spec.run is not None
    inputs = UnlearningInputs(copy.deepcopy(model), fx, fy, rx, ry, NUM_CLASSES, [1], CPU, 0)
    with pytest.raises(ValueError, match="trained filters"):
        spec.run(inputs, validate_config("weight_filtering", {}))


def test_adversarial_details(toy):
    base, fx, fy, rx, ry = toy
    model = copy.deepcopy(base)
    config = validate_config("adversarial", {"epochs": 20, "batch_size": 32})
    run = get_method("adversarial").run
    assert run is not None
    res = run(UnlearningInputs(model, fx, fy, rx, ry, NUM_CLASSES, list(FORGET), CPU, 0), config)
    d = res.details
    for key in ("discriminator_score", "forget_misclassification_rate", "retain_accuracy"):
        assert 0.0 <= d[key] <= 1.0
    assert d["retain_accuracy"] >= 0.9
    assert d["forget_misclassification_rate"] >= 0.9


# --- metrics ------------------------------------------------------------------------------


def test_layer_distances():
    a, b = tiny_cnn(3), tiny_cnn(3)
    same = layer_distances(a, b)
    assert set(same) == {n for n, _ in a.named_parameters()}
    assert all(v == {"l2": 0.0, "relative": 0.0} for v in same.values())
    wa, wb = dict(a.named_parameters())["0.weight"], dict(b.named_parameters())["0.weight"]
    with torch.no_grad():
        wb.mul_(2.0)
    d = layer_distances(a, b)["0.weight"]
    assert d["l2"] == pytest.approx(float(wa.detach().norm()), rel=1e-5)
    assert d["relative"] == pytest.approx(0.5, rel=1e-5)
    with pytest.raises(ValueError):
        layer_distances(a, tiny_cnn(4))


def test_prediction_distribution():
    dist = prediction_distribution(torch.tensor([0, 2, 2, 2]), ["a", "b", "c"])
    assert dist == {"a": 0.25, "b": 0.0, "c": 0.75}
    assert prediction_distribution(torch.tensor([], dtype=torch.long), ["a"]) == {"a": 0.0}
    with pytest.raises(ValueError):
        prediction_distribution(torch.tensor([3]), ["a", "b"])


def test_relearn_epochs(toy):
    base, fx, fy, *_ = toy
    snapshot = copy.deepcopy(base.state_dict())
    kwargs: dict[str, Any] = {
        "max_epochs": 5,
        "lr": 0.01,
        "batch_size": 32,
        "seed": 0,
        "device": CPU,
    }
    # the trained model already knows the class
    assert relearn_epochs(base, fx, fy, target_accuracy=0.9, **kwargs) == 0
    # a model that has forgotten it (labels shifted) needs some epochs, or never gets there
    shifted = (fy + 1) % NUM_CLASSES
    n = relearn_epochs(base, fx, shifted, target_accuracy=0.9, **kwargs)
    assert n is None or 1 <= n <= 5
    assert relearn_epochs(base, fx, shifted, target_accuracy=1.01, **kwargs) is None
    after = base.state_dict()
    assert all(torch.equal(snapshot[k], after[k]) for k in snapshot)


def test_escalation_plans_are_valid_configurations():
    first = get_spec("unsir").steps[0]
    assert first.config == {"repair_epochs": 4} and first.when == set(Miss)
    assert get_spec("unsir").steps[1].when == {Miss.FORGET}
    assert get_spec("kodge").escalation
    for spec in all_methods():
        for step in spec.escalation:
            spec.config_model.model_validate(step.config)
    bad = (({"no_such_field": 1},),)
    with pytest.raises(pydantic.ValidationError):
        MethodSpec(
            "x",
            "x",
            None,
            frozenset({Target.CLASSES}),
            Runner.MODEL,
            False,
            get_spec("unsir").config_model,
            escalation=bad[0],
        )
