"""Membership-inference attacks used by the audit report (synthetic data, no torch)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from worker.audit.mia import (
    FEATURE_NAMES,
    AttackResult,
    attack_result_from_dict,
    features_from_proba,
    logistic_regression_attack,
    loss_threshold_attack,
    reference_model_test,
)


def _check_result(r: AttackResult) -> None:
    assert 0.0 <= r.auc <= 1.0
    assert r.auc_ci[0] <= r.auc_ci[1]
    assert 0.0 <= r.advantage <= 1.0
    assert 0.0 <= r.tpr_at_1pct_fpr <= 1.0
    assert 0.0 <= r.tpr_ci[0] <= r.tpr_ci[1] <= 1.0
    assert len(r.roc["fpr"]) == len(r.roc["tpr"]) <= 101
    assert r.roc["fpr"][0] == 0.0 and r.roc["fpr"][-1] == 1.0
    assert r.interpretation
    d = r.to_dict()
    json.dumps(d, allow_nan=False)
    assert attack_result_from_dict(d).auc == pytest.approx(r.auc)


def test_loss_threshold_separable_members() -> None:
    rng = np.random.default_rng(1)
    members = rng.exponential(0.1, 400)  # training data: low loss
    nonmembers = rng.exponential(1.0, 1500)
    r = loss_threshold_attack(members, nonmembers, n_bootstrap=100, seed=3)
    _check_result(r)
    assert r.attack == "loss_threshold"
    assert r.auc > 0.8
    assert r.auc_ci[0] > 0.5  # CI excludes chance
    assert r.advantage > 0.4
    assert r.n_members == 400 and r.n_nonmembers == 1500
    assert "separates" in r.interpretation


def test_loss_threshold_identical_distributions_is_chance() -> None:
    rng = np.random.default_rng(2)
    members = rng.exponential(1.0, 500)
    nonmembers = rng.exponential(1.0, 1000)
    r = loss_threshold_attack(members, nonmembers, n_bootstrap=200, seed=0)
    _check_result(r)
    assert abs(r.auc - 0.5) < 0.05
    assert r.auc_ci[0] <= 0.5 <= r.auc_ci[1]
    assert "cannot reliably tell" in r.interpretation


def test_loss_threshold_is_seeded_and_handles_edge_cases() -> None:
    rng = np.random.default_rng(3)
    m, n = rng.normal(1, 1, 50), rng.normal(1.2, 1, 60)
    a = loss_threshold_attack(m, n, n_bootstrap=50, seed=7)
    b = loss_threshold_attack(m, n, n_bootstrap=50, seed=7)
    assert a.to_dict() == b.to_dict()
    # higher-loss members: AUC below 0.5 (over-forgetting)
    r = loss_threshold_attack(rng.exponential(3.0, 300), rng.exponential(0.3, 300), seed=1)
    assert r.auc < 0.2 and r.auc_ci[1] < 0.5
    assert "higher loss" in r.interpretation
    # infinite losses are ordered, not fatal; NaN is refused
    r = loss_threshold_attack(np.array([0.1, np.inf, 0.2]), np.array([1.0, 2.0]), n_bootstrap=10)
    _check_result(r)
    with pytest.raises(ValueError):
        loss_threshold_attack(np.array([np.nan, 1.0]), np.array([1.0]))
    with pytest.raises(ValueError):
        loss_threshold_attack(np.array([]), np.array([1.0]))
    # no bootstrap: intervals are unknown, and serialize as None
    r = loss_threshold_attack(m, n, n_bootstrap=0)
    assert r.to_dict()["auc_ci"] == [None, None]
    json.dumps(r.to_dict(), allow_nan=False)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_threshold_metrics_follow_sklearn_roc(seed: int) -> None:
    """The attack's own ROC code gives sklearn's curve, AUC and advantage, ties included."""
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(seed)
    members = np.round(rng.exponential(0.5, 80), 1)  # rounding makes many tied losses
    nonmembers = np.round(rng.exponential(1.0, 150), 1)
    r = loss_threshold_attack(members, nonmembers, n_bootstrap=0)
    y = np.r_[np.ones(members.size), np.zeros(nonmembers.size)]
    scores = -np.r_[members, nonmembers]
    fpr, tpr, _ = roc_curve(y, scores)
    assert r.auc == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert r.advantage == pytest.approx(float(np.max(tpr - fpr)), abs=1e-12)
    assert r.roc["fpr"] == [round(float(v), 6) for v in fpr]
    assert r.roc["tpr"] == [round(float(v), 6) for v in tpr]


def test_features_from_proba() -> None:
    proba = np.array([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    labels = np.array([0, 0, 2])
    f = features_from_proba(proba, labels)
    assert f.shape == (3, len(FEATURE_NAMES))
    assert f[0, 0] == pytest.approx(-np.log(0.7))
    assert np.all(np.isfinite(f))  # p = 0 is clipped
    assert f[1, 1] == pytest.approx(1.0)
    assert f[2, 2] == pytest.approx(np.log(3))
    assert f[0, 3] == pytest.approx(0.7)
    with pytest.raises(ValueError):
        features_from_proba(proba, np.array([0, 1, 3]))


def _proba(rng: np.random.Generator, n: int, classes: int, sharp: float) -> tuple:
    labels = rng.integers(0, classes, n)
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), labels] += sharp
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True), labels


def test_logistic_attack_small_imbalanced_sets() -> None:
    rng = np.random.default_rng(4)
    pm, lm = _proba(rng, 20, 10, sharp=6.0)  # members: confident and right
    pn, ln = _proba(rng, 200, 10, sharp=1.0)
    r = logistic_regression_attack(
        features_from_proba(pm, lm), features_from_proba(pn, ln), n_bootstrap=100, seed=0
    )
    _check_result(r)
    assert r.attack == "logistic_regression"
    assert r.n_members == 20 and r.n_nonmembers == 200
    assert r.auc > 0.8 and r.auc_ci[0] > 0.5
    assert r.details["folds"] == 5
    assert r.details["features"] == list(FEATURE_NAMES)
    assert "little power" in r.interpretation  # only 20 members


def test_logistic_attack_reduces_folds_and_accepts_1d() -> None:
    rng = np.random.default_rng(5)
    r = logistic_regression_attack(rng.normal(0, 1, 3), rng.normal(0, 1, 50), n_bootstrap=20)
    assert r.details["folds"] == 3
    _check_result(r)
    with pytest.raises(ValueError):
        logistic_regression_attack(rng.normal(0, 1, (1, 4)), rng.normal(0, 1, (10, 4)))


def test_logistic_attack_no_signal() -> None:
    rng = np.random.default_rng(6)
    f = rng.normal(0, 1, (600, 4))
    r = logistic_regression_attack(f[:200], f[200:], n_bootstrap=100, seed=1)
    assert abs(r.auc - 0.5) < 0.1


def test_reference_model_test_never_seen_vs_member() -> None:
    rng = np.random.default_rng(7)
    n, k = 400, 7
    out = rng.lognormal(0.0, 0.5, (n, k))
    never_seen = rng.lognormal(0.0, 0.5, n)
    res = reference_model_test(never_seen, out)
    assert res["n_samples"] == n and res["n_reference_models"] == k
    assert 40 <= res["mean_percentile"] <= 60
    assert abs(res["fraction_flagged"] - res["expected_fraction_flagged"]) < 0.06
    assert res["status"] == "indistinguishable"
    assert "consistent with a model that never saw" in res["interpretation"]
    json.dumps(res, allow_nan=False)

    member = out.min(axis=1) * 0.3  # the audited model fits them far better
    res = reference_model_test(member, out)
    assert res["fraction_flagged"] > 0.9
    assert res["mean_percentile"] < 5
    assert res["mean_z"] < -1
    assert res["status"] == "residual_signal"

    worse = out.max(axis=1) * 3
    assert reference_model_test(worse, out)["status"] == "over_forgetting"


def test_reference_model_test_few_models_and_shapes() -> None:
    rng = np.random.default_rng(8)
    out = rng.normal(1, 0.2, (100, 1))
    res = reference_model_test(rng.normal(1, 0.2, 100), out)
    assert res["n_reference_models"] == 1 and res["mean_z"] is None
    assert 0.3 < res["expected_fraction_flagged"] < 0.7  # with one model, 5th pct = that value
    assert "coarse" in res["interpretation"]
    with pytest.raises(ValueError):
        reference_model_test(np.ones(3), np.ones((4, 2)))
