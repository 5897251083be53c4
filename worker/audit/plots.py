"""Figures for the audit report, returned as PNG bytes.

matplotlib's non-interactive "Agg" backend is selected before anything else of matplotlib is
used. The figures are drawn with the object-oriented API (``Figure`` + ``FigureCanvasAgg``),
never through ``pyplot``, so no global figure state is kept, nothing leaks between calls and
the functions are safe to call from worker threads.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "loss_histograms",
    "per_class_accuracy_plot",
    "prediction_distribution_plot",
    "roc_plot",
]

_DPI = 100
_STAGE_STYLE: dict[str, dict[str, Any]] = {
    "before": {"color": "#b03a2e", "linestyle": "-"},
    "after": {"color": "#1f618d", "linestyle": "-"},
    "retrain": {"color": "#1e8449", "linestyle": "--"},
}
_SET_COLORS = {"forget": "#b03a2e", "retain": "#1e8449", "test": "#1f618d"}
_FALLBACK_COLORS = ["#7d3c98", "#b9770e", "#566573", "#117a65", "#a04000"]


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()


def _as_dict(result: Any) -> dict | None:
    if result is None:
        return None
    if hasattr(result, "to_dict"):
        return result.to_dict()
    return dict(result)


# --------------------------------------------------------------------------- ROC


def roc_plot(
    before: Mapping[str, Any] | Any | None,
    after: Mapping[str, Any] | Any | None,
    *,
    retrain: Mapping[str, Any] | Any | None = None,
    title: str | None = None,
) -> bytes:
    """ROC curves of one membership-inference attack before / after unlearning (and retrain).

    Each argument is an ``AttackResult`` or its ``to_dict()``; ``None`` stages are skipped.
    The axes are linear; the chance diagonal is drawn for reference.
    """
    fig = _new_figure(5.2, 4.6)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#999999", linewidth=1, linestyle=":", label="chance (AUC 0.5)")
    attack = None
    for stage, res in (("before", before), ("after", after), ("retrain", retrain)):
        d = _as_dict(res)
        if not d:
            continue
        attack = attack or d.get("attack")
        roc = d.get("roc") or {}
        fpr, tpr = roc.get("fpr") or [], roc.get("tpr") or []
        if not fpr:
            continue
        auc = d.get("auc")
        auc_text = f"AUC {auc:.2f}" if isinstance(auc, int | float) else "AUC n/a"
        label = {"before": "before unlearning", "after": "after unlearning"}.get(
            stage, "retrained without the data"
        )
        ax.plot(fpr, tpr, label=f"{label} ({auc_text})", linewidth=2, **_STAGE_STYLE[stage])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (test samples called members)")
    ax.set_ylabel("true positive rate (forgotten samples called members)")
    ax.set_title(title or f"Membership inference ROC: {attack or 'attack'}", fontsize=11)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


# --------------------------------------------------------------------------- loss histograms


def _is_nested(d: Mapping[str, Any]) -> bool:
    return bool(d) and all(isinstance(v, Mapping) for v in d.values())


def loss_histograms(
    losses: Mapping[str, Any],
    *,
    title: str | None = None,
) -> bytes:
    """Histograms of per-sample losses.

    ``losses`` is either ``{stage: {set_name: array}}`` — e.g.
    ``{"before": {"forget": ..., "retain": ..., "test": ...}, "after": {...}}`` — drawn as one
    panel per stage with shared axes, or a flat ``{name: array}`` drawn in a single panel.
    The x axis is logarithmic (losses of training data cluster near 0) and each histogram shows
    the fraction of its set per bin, so sets of different sizes compare.
    """
    panels: dict[str, dict[str, np.ndarray]]
    if _is_nested(losses):
        panels = {str(s): {str(k): _arr(v) for k, v in sets.items()} for s, sets in losses.items()}
    else:
        panels = {"": {str(k): _arr(v) for k, v in losses.items()}}
    allv = [a for sets in panels.values() for a in sets.values() if a.size]
    fig = _new_figure(4.2 * max(1, len(panels)), 3.6)
    if not allv:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no losses", ha="center", va="center")
        ax.set_axis_off()
        return _png(fig)
    pooled = np.concatenate(allv)
    lo = max(float(np.min(pooled)), 1e-6)
    hi = max(float(np.max(pooled)), lo * 10)
    bins = np.geomspace(lo, hi, 41)
    axes = fig.subplots(1, len(panels), sharex=True, sharey=True, squeeze=False)[0]
    for ax, (stage, sets) in zip(axes, panels.items(), strict=True):
        for i, (name, arr) in enumerate(sets.items()):
            if not arr.size:
                continue
            color = _SET_COLORS.get(name.lower(), _FALLBACK_COLORS[i % len(_FALLBACK_COLORS)])
            ax.hist(
                np.clip(arr, lo, hi),
                bins=bins,
                weights=np.full(arr.size, 1.0 / arr.size),
                histtype="stepfilled",
                alpha=0.35,
                color=color,
                edgecolor=color,
                linewidth=1.2,
                label=f"{name} (n={arr.size})",
            )
        ax.set_xscale("log")
        ax.set_xlabel("per-sample loss (log scale)")
        if stage:
            ax.set_title(f"{stage}", fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of samples")
    if title:
        fig.suptitle(title, fontsize=11)
    return _png(fig)


def _arr(v: Any) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    return a[np.isfinite(a)]


# --------------------------------------------------------------------------- bar charts


def _grouped_bars(
    series: Mapping[str, Mapping[str, Any]],
    *,
    ylabel: str,
    title: str,
    highlight: Iterable[str] = (),
    ylim: tuple[float, float] | None = (0.0, 1.0),
) -> bytes:
    classes: list[str] = []
    for values in series.values():
        for c in values:
            if str(c) not in classes:
                classes.append(str(c))
    n = max(len(classes), 1)
    width_in = min(max(5.0, 0.45 * n * max(1, len(series)) + 1.5), 16.0)
    fig = _new_figure(width_in, 4.0)
    ax = fig.add_subplot()
    x = np.arange(len(classes))
    k = max(len(series), 1)
    bar_w = 0.8 / k
    palette = ["#b03a2e", "#1f618d", "#1e8449", "#7d3c98", "#b9770e"]
    for i, (stage, values) in enumerate(series.items()):
        vals = {str(c): v for c, v in values.items()}
        ys = [float(v) if (v := vals.get(c)) is not None else np.nan for c in classes]
        color = _STAGE_STYLE.get(stage, {}).get("color", palette[i % len(palette)])
        ax.bar(x - 0.4 + bar_w * (i + 0.5), ys, width=bar_w, label=stage, color=color)
    ax.set_xticks(x)
    fontsize = 8 if n <= 20 else (6 if n <= 50 else 4)
    ax.set_xticklabels(
        classes, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center", fontsize=fontsize
    )
    hl = {str(h) for h in highlight}
    for label in ax.get_xticklabels():
        if label.get_text() in hl:
            label.set_fontweight("bold")
            label.set_color("#b03a2e")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def per_class_accuracy_plot(
    before: Mapping[str, float | None],
    after: Mapping[str, float | None],
    *,
    retrain: Mapping[str, float | None] | None = None,
    highlight: Iterable[str] = (),
    title: str = "Per-class test accuracy",
) -> bytes:
    """Grouped bars: class -> accuracy (0..1) before / after (and retrain). ``highlight`` marks
    forgotten classes in bold red."""
    series: dict[str, Mapping[str, float | None]] = {"before": before, "after": after}
    if retrain is not None:
        series["retrain"] = retrain
    return _grouped_bars(series, ylabel="accuracy", title=title, highlight=highlight)


def prediction_distribution_plot(
    distribution: Mapping[str, float] | Mapping[str, Mapping[str, float]],
    *,
    highlight: Iterable[str] = (),
    title: str = "Where the forgotten samples' predictions go",
) -> bytes:
    """Bars of class -> fraction of the forgotten samples predicted as that class.

    Either a flat ``{class: fraction}`` or ``{stage: {class: fraction}}`` (e.g. before / after /
    retrain) for grouped bars.
    """
    series: dict[str, Mapping[str, Any]]
    if _is_nested(distribution):
        series = {str(k): v for k, v in distribution.items()}  # type: ignore[misc]
    else:
        series = {"fraction": distribution}
    return _grouped_bars(
        series, ylabel="fraction of forgotten samples", title=title, highlight=highlight
    )
