"""What each method added for file forgetting promises beyond the shared contract: pruning keeps
its zeros, dummy labels are the model's best wrong guesses, SalUn only moves salient weights,
SCRUB's divergence is the official one."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.unit.test_unlearning_methods import CPU, NUM_CLASSES, make_toy, pretrain, tiny_cnn
from worker.unlearning import Target, UnlearningInputs, _masks, _ops, get_method
from worker.unlearning._ops import distill_kl
from worker.unlearning.methods.dummy_labels import best_wrong_labels
from worker.unlearning.registry import validate_config


@pytest.fixture(scope="module")
def split():
    torch.set_num_threads(2)
    x, y = make_toy(60, NUM_CLASSES, seed=0)
    model = pretrain(tiny_cnn(NUM_CLASSES), x, y, epochs=4)
    forget = torch.zeros(len(y), dtype=torch.bool)
    forget[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))[:18]] = True
    return model, x[forget], y[forget], x[~forget], y[~forget]


def run(name: str, split, config: dict, model=None):
    base, fx, fy, rx, ry = split
    model = copy.deepcopy(base) if model is None else model
    method = get_method(name)
    assert method.run is not None
    result = method.run(
        UnlearningInputs(model, fx, fy, rx, ry, NUM_CLASSES, [], CPU, 0),
        validate_config(name, config),
    )
    return model, result.details


def test_file_targets_are_declared():
    for name in ("finetune", "neggrad_plus", "l1_sparse", "random_label"):
        assert Target.FILES in get_method(name).targets
    for name in ("pruning", "dummy_labels", "scrub", "salun"):
        assert get_method(name).targets == {Target.FILES, Target.CLASSES}
        assert get_method(name).exact is False


def test_global_top_mask_keeps_the_fraction():
    scores = {"a": torch.arange(10.0), "b": torch.arange(10.0, 20.0).reshape(2, 5)}
    mask = _masks.global_top_mask(scores, 0.25)
    assert int(mask["a"].sum()) == 0 and int(mask["b"].sum()) == 5
    assert mask["b"][1].all() and not mask["b"][0].any()
    assert _masks.kept_fraction(mask) == 0.25
    assert _masks.kept_fraction(_masks.global_top_mask(scores, 1.0)) == 1.0
    assert _masks.kept_fraction(_masks.global_top_mask(scores, 0.0)) == 0.0


def test_pruning_keeps_the_pruned_weights_at_zero(split):
    model, details = run("pruning", split, {"epochs": 2, "batch_size": 32, "ratio": 0.4})
    weights = _masks.prunable_weights(model)
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    total = sum(w.numel() for w in weights.values())
    assert zeros / total == pytest.approx(0.4, abs=0.01)
    assert details["pruned_fraction"] == pytest.approx(0.4, abs=0.01)
    # the zeros are where the smallest weights of the original model were
    base = _masks.prunable_weights(split[0])
    flat = torch.cat([w.detach().abs().reshape(-1) for w in base.values()])
    threshold = flat.kthvalue(int(0.4 * flat.numel())).values
    for name, w in weights.items():
        assert ((base[name].detach().abs() < threshold) <= (w == 0)).all()


def test_dummy_labels_are_the_best_wrong_guesses(split):
    model, fx, fy, *_ = split
    dummy = best_wrong_labels(model, fx, fy, CPU)
    assert (dummy != fy).all()
    with torch.no_grad():
        logits = model.eval()(((fx.float() / 255.0) - 0.5) / 0.5)
    logits[torch.arange(len(fy)), fy] = float("-inf")
    assert torch.equal(dummy, logits.argmax(1))


def test_salun_moves_only_the_salient_weights(split):
    config = {"epochs": 2, "batch_size": 32, "mask_ratio": 0.3, "weight_decay": 0.0}
    model, details = run("salun", split, config)
    assert details["mask_fraction"] == pytest.approx(0.3, abs=0.02)
    before = dict(split[0].named_parameters())
    moved = sum(int((p != before[n]).sum()) for n, p in model.named_parameters())
    total = sum(p.numel() for p in model.parameters())
    assert 0 < moved <= 0.3 * total + 1


def test_salun_keeps_the_masked_out_weights_despite_weight_decay(split):
    """The official code restores masked-out weights after each step: weight decay (inside
    SGD's step) and momentum must not move them either."""
    config = {"epochs": 2, "batch_size": 32, "mask_ratio": 0.3, "weight_decay": 0.01}
    model, details = run("salun", split, config)
    assert details["mask_fraction"] == pytest.approx(0.3, abs=0.02)
    before = dict(split[0].named_parameters())
    moved = sum(int((p != before[n]).sum()) for n, p in model.named_parameters())
    total = sum(p.numel() for p in model.parameters())
    assert 0 < moved <= 0.3 * total + 1


def test_salun_forgets_a_class():
    """The class-wise setting: the forget set is a whole class, relabelled at random."""
    x, y = make_toy(40, NUM_CLASSES, seed=0)
    base = pretrain(tiny_cnn(NUM_CLASSES), x, y, epochs=4)
    gone = y == 0
    model = copy.deepcopy(base)
    get_method("salun").run(  # type: ignore[misc]
        UnlearningInputs(model, x[gone], y[gone], x[~gone], y[~gone], NUM_CLASSES, [0], CPU, 0),
        validate_config("salun", {"epochs": 3, "batch_size": 32, "lr": 0.05}),
    )
    before = float((_ops.predict(base, x[gone], CPU) == 0).float().mean())
    after = float((_ops.predict(model, x[gone], CPU) == 0).float().mean())
    assert before > 0.9 and after < before - 0.3


def test_scrub_divergence_is_the_official_kl():
    a = torch.randn(4, 3)
    assert float(distill_kl(a, a, 4.0)) == pytest.approx(0.0, abs=1e-6)
    b = torch.randn(4, 3)
    p_t = torch.softmax(b / 4, 1)
    expected = (p_t * (p_t.log() - torch.log_softmax(a / 4, 1))).sum() * 16 / 4
    assert float(distill_kl(a, b, 4.0)) == pytest.approx(float(expected), rel=1e-5)


def test_scrub_without_max_steps_is_distillation(split):
    _, details = run("scrub", split, {"epochs": 1, "max_steps": 0, "batch_size": 32})
    assert details["final_max_loss"] is None and details["final_min_loss"] is not None
