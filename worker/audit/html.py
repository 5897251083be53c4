"""Human-readable rendering of a sealed audit report (one self-contained HTML page).

The page is written for a data-protection officer: a summary on top (what was asked, what was
done, whether it is exact, whether the lineage check passed, what the membership-inference
attacks say), then the evidence section by section. It has inline CSS only, images as
``data:`` URIs, and a Content-Security-Policy that forbids loading anything, so it can be
archived and opened offline.

The page is the Jinja2 template ``templates/report.html.j2``, rendered with autoescaping on:
every value taken from the report is escaped unless a filter here marks its own output safe.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

__all__ = ["PLOT_CAPTIONS", "render_report_html"]

PLOT_CAPTIONS = {
    "roc": "ROC curve of the membership-inference attack before and after unlearning. The "
    "diagonal is chance: a curve on it means the attacker cannot tell forgotten samples from "
    "never-seen test samples.",
    "loss_histograms": "Per-sample loss of the forgotten, retained and test samples. After "
    "successful unlearning the forgotten samples' losses look like the test samples' losses.",
    "per_class_accuracy": "Test accuracy per class before and after unlearning.",
    "prediction_distribution": "Which classes the model predicts for the forgotten samples.",
}

# The JSON report keeps every hash; the page lists this many and says how many more there are.
_MAX_HASHES_SHOWN = 1000
_DASH = Markup("&mdash;")
# Figures the sections place themselves; any other goes to "Additional figures".
_PLACED_FIGURES = {"loss_histograms", "per_class_accuracy", "prediction_distribution"}


# --------------------------------------------------------------------------- formatting filters


def _fmt(value: Any) -> Markup:
    """Display text for a scalar; compact JSON for containers."""
    if value is None:
        return _DASH
    if isinstance(value, bool):
        return Markup("yes") if value else Markup("no")
    if isinstance(value, int):
        return escape(f"{value:,}")
    if isinstance(value, float):
        return escape(f"{value:.4g}") if math.isfinite(value) else _DASH
    if isinstance(value, Mapping | list | tuple):
        return Markup('<span class="mono">{}</span>').format(json.dumps(value, ensure_ascii=False))
    return escape(str(value))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _pct(value: Any) -> Markup:
    return escape(f"{100.0 * value:.1f} %") if _finite(value) else _DASH


def _ci(pair: Any) -> Markup:
    if (
        isinstance(pair, Sequence)
        and len(pair) == 2
        and all(isinstance(v, int | float) for v in pair)
    ):
        return escape(f"[{pair[0]:.3f}, {pair[1]:.3f}]")
    return _DASH


def _num(value: Any, digits: int = 3) -> Markup:
    return escape(f"{value:.{digits}f}") if _finite(value) else _DASH


def _mapping(x: Any) -> dict[Any, Any]:
    """The value as a dict, or an empty one: a damaged report still renders."""
    return dict(x) if isinstance(x, Mapping) else {}


_STAGE_RANK = {"before": 0, "after": 1, "retrain": 2}


def _stage_order(keys: Any) -> list[str]:
    """before, after, retrain first (canonical JSON sorts keys alphabetically), then the rest."""
    return sorted(keys, key=lambda k: (_STAGE_RANK.get(k, 3), str(k)))


def _union_keys(tables: Mapping[str, Any], order: Sequence[str]) -> list[Any]:
    """Keys of ``tables[s]`` for s in ``order``, each once, in first-seen order."""
    keys: list[Any] = []
    for s in order:
        for k in _mapping(tables[s]):
            if k not in keys:
                keys.append(k)
    return keys


def _items_except(mapping: Mapping[str, Any], skip: Collection[str]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in mapping.items() if k not in skip]


def _items_in(mapping: Mapping[str, Any], keys: Sequence[str]) -> list[tuple[str, dict]]:
    """(key, value as a dict) for each of ``keys`` that holds something, in that order."""
    return [(k, _mapping(mapping.get(k))) for k in keys if mapping.get(k)]


def _any_has(tables: Iterable[Any], key: str) -> bool:
    return any(_mapping(t).get(key) is not None for t in tables)


def _attack_results(attacks: Mapping[str, Any]) -> list[tuple[str, str, dict, Any]]:
    """(attack, model label, result, its reading) for every stage an attack was run on."""
    rows = []
    for name, stages in attacks.items():
        for stage in ("before", "after", "retrain"):
            result = _mapping(_mapping(stages).get(stage))
            if result:
                label = "full retrain" if stage == "retrain" else stage
                rows.append((name, label, result, result.get("interpretation")))
    return rows


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("worker.audit", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=StrictUndefined,
        # The report's missing values are None; the page shows them as nothing.
        finalize=lambda value: "" if value is None else value,
    )
    env.filters.update(
        fmt=_fmt,
        pct=_pct,
        ci=_ci,
        num=_num,
        mapping=_mapping,
        items_except=_items_except,
        items_in=_items_in,
        any_has=_any_has,
        attack_results=_attack_results,
    )
    env.globals.update(
        stage_order=_stage_order, union_keys=_union_keys, max_hashes=_MAX_HASHES_SHOWN
    )
    return env


# --------------------------------------------------------------------------- figures


def _data_uri(data: bytes) -> str | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        mime = "image/png"
    elif data[:3] == b"\xff\xd8\xff":
        mime = "image/jpeg"
    else:
        return None
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _figures(plots: Mapping[str, bytes]) -> dict[str, Any]:
    """What the template needs about the figures: each non-empty one as a data URI (None when
    it is neither PNG nor JPEG), and which keys go where."""
    images = {k: _data_uri(bytes(v)) for k, v in plots.items() if v}
    is_roc = [k for k in plots if k == "roc" or k.startswith("roc_")]
    others = [k for k in plots if k not in _PLACED_FIGURES and k not in is_roc]
    return {
        "images": images,
        "captions": PLOT_CAPTIONS,
        "roc_keys": sorted(is_roc),
        "extra_keys": [k for k in sorted(others) if k in images],
    }


# --------------------------------------------------------------------------- entry point


def render_report_html(
    envelope: dict,
    plots: Mapping[str, bytes] | None = None,
    *,
    verification: list[str] | None = None,
) -> str:
    """Render a sealed report envelope as one self-contained HTML page.

    ``plots`` maps names to PNG bytes (see :func:`worker.audit.builder.build_plots`): ``roc`` or
    ``roc_<attack>`` and ``loss_histograms`` go to the membership-inference section,
    ``per_class_accuracy`` and ``prediction_distribution`` to efficacy, anything else to an
    "Additional figures" section. ``verification``, when given, is the result of
    :func:`app.audit.integrity.verify_envelope` (an empty list shows the signature as valid);
    without it the page says how to verify offline.
    """
    report = _mapping(envelope.get("report"))
    request = _mapping(report.get("request"))
    template = _environment().get_template("report.html.j2")
    return template.render(
        envelope=envelope,
        report=report,
        integrity=_mapping(envelope.get("integrity")),
        verification=verification,
        title=f"Audit report: deletion request {request.get('id', '?')}",
        raw=json.dumps(envelope, indent=2, sort_keys=True, ensure_ascii=False, default=str),
        **_figures(dict(plots or {})),
    )
