"""Membership-inference attacks for the audit report (numpy + scikit-learn, no torch).

The attacks ask: given per-sample losses (or confidence features) of a model, can an attacker
tell *members* (in the audit: the samples that were to be forgotten) from *non-members* (samples
of the held-out test set that the model never saw)? A ROC AUC of 0.5 is chance: the attacker
cannot tell them apart. After unlearning, the AUC should be close to what a model retrained
without the data gives (about 0.5, up to the usual train/test gap of the other classes).

All randomness is seeded; the same inputs and seed give the same numbers.

Confidence intervals are percentile bootstrap intervals (95 %) obtained by resampling members
and non-members separately, with replacement. For the logistic-regression attack the
out-of-fold scores are resampled (the attack is not refitted), so its intervals cover the
evaluation noise, not the variance of fitting the attack.

ROC curves are computed with numpy, point for point as ``sklearn.metrics.roc_curve`` draws
them: its per-call input checks cost more than the small curves of a bootstrap themselves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = [
    "FEATURE_NAMES",
    "AttackResult",
    "attack_result_from_dict",
    "features_from_proba",
    "interpret_attack",
    "logistic_regression_attack",
    "loss_threshold_attack",
    "reference_model_test",
]

FEATURE_NAMES = ("loss", "max_confidence", "entropy", "true_class_confidence")
MAX_ROC_POINTS = 101
_PROBA_EPS = 1e-12


def _finite_or_none(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


@dataclass
class AttackResult:
    """Outcome of one membership-inference attack (members vs. non-members)."""

    attack: str
    auc: float
    auc_ci: tuple[float, float]
    advantage: float
    advantage_ci: tuple[float, float]
    tpr_at_1pct_fpr: float
    tpr_ci: tuple[float, float]
    n_members: int
    n_nonmembers: int
    roc: dict = field(default_factory=dict)  # {"fpr": [...], "tpr": [...]}, <= 101 points
    interpretation: str = ""
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain JSON types; non-finite numbers (e.g. CIs with n_bootstrap=0) become None."""
        return {
            "attack": self.attack,
            "auc": _finite_or_none(self.auc),
            "auc_ci": [_finite_or_none(v) for v in self.auc_ci],
            "advantage": _finite_or_none(self.advantage),
            "advantage_ci": [_finite_or_none(v) for v in self.advantage_ci],
            "tpr_at_1pct_fpr": _finite_or_none(self.tpr_at_1pct_fpr),
            "tpr_ci": [_finite_or_none(v) for v in self.tpr_ci],
            "n_members": int(self.n_members),
            "n_nonmembers": int(self.n_nonmembers),
            "roc": {
                "fpr": [float(v) for v in self.roc.get("fpr", [])],
                "tpr": [float(v) for v in self.roc.get("tpr", [])],
            },
            "interpretation": self.interpretation,
            "details": _jsonable(self.details),
        }


def attack_result_from_dict(d: Mapping[str, Any]) -> AttackResult:
    """Inverse of :meth:`AttackResult.to_dict` (None becomes NaN)."""

    def f(v: Any) -> float:
        return float("nan") if v is None else float(v)

    def pair(v: Any) -> tuple[float, float]:
        v = list(v) if v is not None else [None, None]
        return (f(v[0]), f(v[1]))

    return AttackResult(
        attack=str(d["attack"]),
        auc=f(d.get("auc")),
        auc_ci=pair(d.get("auc_ci")),
        advantage=f(d.get("advantage")),
        advantage_ci=pair(d.get("advantage_ci")),
        tpr_at_1pct_fpr=f(d.get("tpr_at_1pct_fpr")),
        tpr_ci=pair(d.get("tpr_ci")),
        n_members=int(d.get("n_members", 0)),
        n_nonmembers=int(d.get("n_nonmembers", 0)),
        roc=dict(d.get("roc") or {}),
        interpretation=str(d.get("interpretation", "")),
        details=dict(d.get("details") or {}),
    )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _finite_or_none(obj)
    return obj


# --------------------------------------------------------------------------- input hygiene


def _as_1d(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    return _clean(arr, name)


def _clean(arr: np.ndarray, name: str) -> np.ndarray:
    """Reject NaN; map +/-inf to values beyond the finite range (order is what matters)."""
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    if np.isinf(arr).any():
        finite = arr[np.isfinite(arr)]
        lo = float(finite.min()) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 0.0
        span = max(hi - lo, 1.0)
        arr = np.where(arr == np.inf, hi + span, arr)
        arr = np.where(arr == -np.inf, lo - span, arr)
    return arr


# --------------------------------------------------------------------------- metrics


def _downsample_roc(fpr: np.ndarray, tpr: np.ndarray, k: int = MAX_ROC_POINTS) -> dict:
    if fpr.size > k:
        idx = np.unique(np.round(np.linspace(0, fpr.size - 1, k)).astype(int))
        fpr, tpr = fpr[idx], tpr[idx]
    return {
        "fpr": [round(float(v), 6) for v in fpr],
        "tpr": [round(float(v), 6) for v in tpr],
    }


def _roc(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FPR and TPR of every threshold, higher score = member; collinear points are dropped."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    s, t = scores[order], y[order].astype(np.float64)
    ends = np.r_[np.where(np.diff(s))[0], t.size - 1]
    tps = np.cumsum(t)[ends]
    fps = 1.0 + ends - tps
    if fps.size > 2:
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        tps, fps = tps[keep], fps[keep]
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    return fps / fps[-1], tps / tps[-1]


def _summary(fpr: np.ndarray, tpr: np.ndarray) -> tuple[float, float, float]:
    """ROC AUC (trapezoids), advantage max(TPR - FPR) and TPR at FPR <= 1 %."""
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    low = fpr <= 0.01 + 1e-12
    return auc, float(np.max(tpr - fpr)), float(tpr[low].max()) if low.any() else 0.0


def _bootstrap(
    members: np.ndarray, nonmembers: np.ndarray, n_bootstrap: int, seed: int
) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
    """95 % percentile intervals of AUC, advantage and TPR at 1 % FPR; NaN without draws."""
    if n_bootstrap == 0:
        nan = (float("nan"), float("nan"))
        return nan, nan, nan
    rng = np.random.default_rng(seed)
    n_m, n_n = members.size, nonmembers.size
    y = np.r_[np.ones(n_m, dtype=int), np.zeros(n_n, dtype=int)]
    draws = np.empty((n_bootstrap, 3))
    for i in range(n_bootstrap):
        bm = members[rng.integers(0, n_m, n_m)]
        bn = nonmembers[rng.integers(0, n_n, n_n)]
        draws[i] = _summary(*_roc(np.concatenate([bm, bn]), y))
    lo, hi = np.percentile(draws, [2.5, 97.5], axis=0)
    auc, advantage, tpr = [(float(a), float(b)) for a, b in zip(lo, hi, strict=True)]
    return auc, advantage, tpr


def _evaluate(
    attack: str,
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    *,
    n_bootstrap: int,
    seed: int,
    details: dict,
) -> AttackResult:
    """Metrics + bootstrap CIs for scores where *higher* means 'more likely a member'."""
    if n_bootstrap < 0:
        raise ValueError("n_bootstrap must be >= 0")
    n_m, n_n = member_scores.size, nonmember_scores.size
    scores = np.concatenate([member_scores, nonmember_scores])
    y = np.concatenate([np.ones(n_m, dtype=int), np.zeros(n_n, dtype=int)])
    fpr, tpr = _roc(scores, y)
    auc, adv, tpr1 = _summary(fpr, tpr)
    auc_ci, adv_ci, tpr_ci = _bootstrap(member_scores, nonmember_scores, n_bootstrap, seed)
    result = AttackResult(
        attack=attack,
        auc=auc,
        auc_ci=auc_ci,
        advantage=adv,
        advantage_ci=adv_ci,
        tpr_at_1pct_fpr=tpr1,
        tpr_ci=tpr_ci,
        n_members=int(n_m),
        n_nonmembers=int(n_n),
        roc=_downsample_roc(fpr, tpr),
        details={**details, "n_bootstrap": int(n_bootstrap), "seed": int(seed)},
    )
    result.interpretation = interpret_attack(result)
    return result


def interpret_attack(result: AttackResult | Mapping[str, Any]) -> str:
    """Plain-language reading of an attack result (used for every result)."""
    d = result.to_dict() if isinstance(result, AttackResult) else dict(result)
    auc = d.get("auc")
    lo, hi = [*(d.get("auc_ci") or []), None, None][:2]
    n_m = int(d.get("n_members") or 0)
    if auc is None:
        return "The attack produced no usable AUC."
    ci_text = f"95% CI {lo:.2f}-{hi:.2f}" if lo is not None and hi is not None else "no interval"
    head = f"ROC AUC {auc:.2f} ({ci_text}); 0.5 means chance."
    if lo is None or hi is None:
        if abs(auc - 0.5) < 0.05:
            body = "The attacker does about as well as guessing."
        elif auc > 0.5:
            body = "The attacker does better than guessing."
        else:
            body = "The members look less like training data than the non-members do."
    elif lo <= 0.5 <= hi:
        body = (
            "The attacker cannot reliably tell the members (the samples to be forgotten) from "
            "never-seen test samples."
        )
    elif lo > 0.5:
        strength = "weakly" if auc < 0.6 else ("clearly" if auc < 0.75 else "strongly")
        body = (
            f"The attacker {strength} separates the members from never-seen test samples: "
            "the model still treats them like training data."
        )
    else:
        body = (
            "The members have higher loss than never-seen test samples: the model treats them "
            "worse than data it never saw, which can itself reveal that they were unlearned "
            "(over-forgetting)."
        )
    tail = " Compare with the AUC a model retrained without the data gives."
    if n_m < 30:
        tail += f" With only {n_m} member sample(s) the test has little power."
    return f"{head} {body}{tail}"


# --------------------------------------------------------------------------- attacks


def loss_threshold_attack(
    member_losses: np.ndarray,
    nonmember_losses: np.ndarray,
    *,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> AttackResult:
    """Threshold attack on per-sample loss: score = -loss (members tend to have lower loss).

    Every threshold is tried (the ROC curve); reports ROC AUC, the attacker's advantage
    max(TPR - FPR), the TPR at FPR <= 1 %, and bootstrap 95 % intervals for the three.
    """
    m = _as_1d(member_losses, "member_losses")
    n = _as_1d(nonmember_losses, "nonmember_losses")
    if m.size < 1 or n.size < 1:
        raise ValueError("need at least one member and one non-member loss")
    return _evaluate(
        "loss_threshold",
        -m,
        -n,
        n_bootstrap=n_bootstrap,
        seed=seed,
        details={"score": "-loss"},
    )


def logistic_regression_attack(
    member_features: np.ndarray,
    nonmember_features: np.ndarray,
    *,
    n_bootstrap: int = 200,
    seed: int = 0,
    folds: int = 5,
    feature_names: tuple[str, ...] | list[str] | None = None,
) -> AttackResult:
    """Logistic-regression attack on per-sample features (e.g. :func:`features_from_proba`).

    The attack (StandardScaler + LogisticRegression, class_weight="balanced") is evaluated with
    stratified K-fold cross-validation: every sample is scored by a model that did not see it,
    and the metrics are computed on those out-of-fold scores. The number of folds is reduced to
    the size of the smaller group when that is smaller (at least 2 samples per group needed).
    """
    xm = np.asarray(member_features, dtype=np.float64)
    xn = np.asarray(nonmember_features, dtype=np.float64)
    if xm.ndim == 1:
        xm = xm.reshape(-1, 1)
    if xn.ndim == 1:
        xn = xn.reshape(-1, 1)
    if xm.ndim != 2 or xn.ndim != 2 or xm.shape[1] != xn.shape[1]:
        raise ValueError("member and non-member features must be [N, F] arrays with equal F")
    n_min = min(xm.shape[0], xn.shape[0])
    if n_min < 2:
        raise ValueError(
            "the logistic-regression attack needs at least 2 members and 2 non-members"
        )
    X = np.vstack([xm, xn])
    X = np.column_stack([_clean(X[:, j], f"feature {j}") for j in range(X.shape[1])])
    y = np.concatenate([np.ones(xm.shape[0], dtype=int), np.zeros(xn.shape[0], dtype=int)])
    k = max(2, min(int(folds), n_min))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(class_weight="balanced", max_iter=1000),
    )
    scores = cross_val_predict(model, X, y, cv=cv, method="predict_proba")[:, 1]
    names = list(feature_names) if feature_names is not None else None
    if names is None and X.shape[1] == len(FEATURE_NAMES):
        names = list(FEATURE_NAMES)
    details: dict[str, Any] = {"folds": k, "score": "out-of-fold P(member)"}
    if names is not None:
        details["features"] = names
    return _evaluate(
        "logistic_regression",
        scores[: xm.shape[0]],
        scores[xm.shape[0] :],
        n_bootstrap=n_bootstrap,
        seed=seed,
        details=details,
    )


def features_from_proba(proba: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample attack features from softmax probabilities ``[N, C]`` and true labels ``[N]``.

    Columns (see ``FEATURE_NAMES``): cross-entropy loss, max confidence, prediction entropy,
    true-class confidence. Probabilities are clipped to [1e-12, 1] so the loss stays finite.
    """
    p = np.asarray(proba, dtype=np.float64)
    lab = np.asarray(labels).reshape(-1)
    if p.ndim != 2 or p.shape[0] != lab.shape[0]:
        raise ValueError("proba must be [N, C] and labels [N]")
    if lab.size and (lab.min() < 0 or lab.max() >= p.shape[1]):
        raise ValueError("labels out of range for proba's class dimension")
    if np.isnan(p).any():
        raise ValueError("proba contains NaN")
    p = np.clip(p, _PROBA_EPS, 1.0)
    true_conf = p[np.arange(p.shape[0]), lab.astype(int)]
    loss = -np.log(true_conf)
    max_conf = p.max(axis=1)
    entropy = -(p * np.log(p)).sum(axis=1)
    return np.column_stack([loss, max_conf, entropy, true_conf])


# --------------------------------------------------------------------------- SISA reference test


def _null_flag_rate(k: int, q: float = 5.0, draws: int = 20000, seed: int = 12345) -> float:
    """P(target < q-th percentile of k iid draws) when the target is one more iid draw."""
    if k >= 200:
        return q / 100.0
    rng = np.random.default_rng(seed)
    x = rng.random((draws, k + 1))
    thr = np.percentile(x[:, 1:], q, axis=1)
    return float(np.mean(x[:, 0] < thr))


_REFERENCE_VERDICTS = {
    "residual_signal": " More samples are flagged than chance allows: the audited model fits them "
    "better than models that never saw them, a sign that they still influence it.",
    "over_forgetting": " The audited model fits them worse than models that never saw them "
    "(possible over-forgetting).",
    "indistinguishable": " This is consistent with a model that never saw these samples: it "
    "treats them like the reference models do.",
}


def _z_scores(t: np.ndarray, o: np.ndarray) -> tuple[float | None, float | None]:
    """Mean and median z-score of each target loss within its reference losses (needs K >= 2)."""
    if o.shape[1] < 2:
        return None, None
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (t - o.mean(axis=1)) / o.std(axis=1, ddof=1)
    z = z[np.isfinite(z)]
    return (float(z.mean()), float(np.median(z))) if z.size else (None, None)


def reference_model_test(target_losses: np.ndarray, out_losses: np.ndarray) -> dict:
    """Per-sample test against reference ("out") models that never saw the sample.

    ``target_losses[i]`` is sample i's loss under the audited model; ``out_losses[i, j]`` its loss
    under reference model j (for SISA: constituents of other shards, which never saw it). For each
    sample this computes the percentile of the target loss within its out losses (mid-rank, 0-100)
    and its z-score; a sample is *flagged* as a likely member when its target loss is below the
    5th percentile of its out losses. The fraction flagged is compared with the fraction expected
    if the audited model had never seen the samples either (which, with few reference models, is
    well above 5 %). ``status`` is "indistinguishable", "residual_signal" (more flagged than
    chance allows, and a mean percentile below 50) or "over_forgetting" (the audited model fits
    the samples worse than the reference models).
    """
    t = _as_1d(target_losses, "target_losses")
    o = np.asarray(out_losses, dtype=np.float64)
    if o.ndim == 1:
        o = o.reshape(-1, 1)
    if o.ndim != 2 or o.shape[0] != t.size:
        raise ValueError("out_losses must be [N, K] with N = len(target_losses)")
    n, k = o.shape
    if n < 1 or k < 1:
        raise ValueError("need at least one sample and one reference model")
    o = _clean(o.reshape(-1), "out_losses").reshape(n, k)

    below = (o < t[:, None]).sum(axis=1)
    ties = (o == t[:, None]).sum(axis=1)
    percentile = 100.0 * (below + 0.5 * ties) / k
    thr = np.percentile(o, 5.0, axis=1)
    flagged = t < thr
    frac = float(flagged.mean())
    expected = _null_flag_rate(k)
    mean_z, median_z = _z_scores(t, o)
    se = math.sqrt(max(expected * (1.0 - expected), 1e-12) / n)
    hist, _ = np.histogram(percentile, bins=10, range=(0.0, 100.0))
    mean_pct = float(percentile.mean())

    excess = frac - expected
    if excess > 2.0 * se + 0.02 and mean_pct < 50.0:
        status = "residual_signal"
    elif excess < -(2.0 * se + 0.02) or mean_pct > 75.0:
        status = "over_forgetting"
    else:
        status = "indistinguishable"
    lead = (
        f"{frac:.0%} of {n} sample(s) have a loss below the 5th percentile of their {k} reference "
        f"model(s) (expected about {expected:.0%} if the audited model never saw them); their "
        f"mean percentile is {mean_pct:.0f} (about 50 when never seen, near 0 for members)."
    )
    verdict = _REFERENCE_VERDICTS[status]
    if k < 5:
        verdict += f" With only {k} reference model(s) each per-sample test is coarse."
    if n < 30:
        verdict += f" With only {n} sample(s) the test has little power."

    return {
        "test": "reference_model_percentile",
        "n_samples": int(n),
        "n_reference_models": int(k),
        "fraction_flagged": frac,
        "expected_fraction_flagged": expected,
        "n_flagged": int(flagged.sum()),
        "mean_percentile": mean_pct,
        "median_percentile": float(np.median(percentile)),
        "mean_z": mean_z,
        "median_z": median_z,
        "percentile_histogram": {"bin_edges": list(range(0, 101, 10)), "counts": hist.tolist()},
        "status": status,
        "interpretation": lead + verdict,
    }
