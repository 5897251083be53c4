"""Human-readable rendering of a sealed audit report (one self-contained HTML page).

The page is written for a data-protection officer: a summary on top (what was asked, what was
done, whether it is exact, whether the lineage check passed, what the membership-inference
attacks say), then the evidence section by section. It has inline CSS only, images as
``data:`` URIs, and a Content-Security-Policy that forbids loading anything, so it can be
archived and opened offline. Every value taken from the report is escaped with ``html.escape``.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

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

_MAX_HASHES_SHOWN = 1000

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1c2833;
max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #d5d8dc;padding-bottom:.2em;
margin-top:1.8em}h3{margin-top:1.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #d5d8dc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f2f3f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.summary{background:#f8f9f9;border:1px solid #d5d8dc;border-radius:6px;padding:1em 1.4em}
.summary li{margin:.3em 0}
.badge{display:inline-block;border-radius:4px;padding:.05em .5em;font-size:.85em;
font-weight:600;color:#fff}
.ok{background:#1e8449}.bad{background:#b03a2e}.warn{background:#b9770e}.na{background:#717d7e}
.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;word-break:break-all}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eaeded}
figcaption{font-size:.88em;color:#566573}
details{margin:.6em 0}pre{background:#f8f9f9;padding:.8em;overflow-x:auto;font-size:.8em}
.muted{color:#717d7e}
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


# --------------------------------------------------------------------------- formatting helpers


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _fmt(value: Any) -> str:
    """Escaped display text for a scalar; compact escaped JSON for containers."""
    if value is None:
        return "&mdash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return _e(f"{value:,}")
    if isinstance(value, float):
        if not math.isfinite(value):
            return "&mdash;"
        return _e(f"{value:.4g}")
    if isinstance(value, Mapping | list | tuple):
        return f'<span class="mono">{_e(json.dumps(value, ensure_ascii=False))}</span>'
    return _e(value)


def _pct(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return _e(f"{100.0 * value:.1f} %")
    return "&mdash;"


def _ci(pair: Any) -> str:
    if (
        isinstance(pair, Sequence)
        and len(pair) == 2
        and all(isinstance(v, int | float) for v in pair)
    ):
        return _e(f"[{pair[0]:.3f}, {pair[1]:.3f}]")
    return "&mdash;"


def _num(value: Any, digits: int = 3) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return _e(f"{value:.{digits}f}")
    return "&mdash;"


def _badge(text: str, kind: str) -> str:
    return f'<span class="badge {_e(kind)}">{_e(text)}</span>'


def _kv_table(rows: Sequence[tuple[str, str]]) -> str:
    """Rows are (escaped label, already formatted HTML)."""
    body = "".join(f"<tr><th>{label}</th><td>{value}</td></tr>" for label, value in rows)
    return f"<table>{body}</table>"


def _generic_table(d: Mapping[str, Any], skip: Sequence[str] = ()) -> str:
    rows = [(_e(k), _fmt(v)) for k, v in d.items() if k not in skip]
    return _kv_table(rows) if rows else ""


def _img(data: bytes, alt: str) -> str | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        mime = "image/png"
    elif data[:3] == b"\xff\xd8\xff":
        mime = "image/jpeg"
    else:
        return None
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:{mime};base64,{b64}">'


def _figure(plots: Mapping[str, bytes], key: str, caption: str | None = None) -> str:
    data = plots.get(key)
    if not data:
        return ""
    img = _img(bytes(data), caption or key)
    if img is None:
        return f'<p class="muted">Figure {_e(key)} omitted (not a PNG or JPEG image).</p>'
    cap = caption or PLOT_CAPTIONS.get(key) or key
    return f"<figure>{img}<figcaption>{_e(cap)}</figcaption></figure>"


_STAGE_RANK = {"before": 0, "after": 1, "retrain": 2}


def _stage_order(keys: Any) -> list[str]:
    """before, after, retrain first (canonical JSON sorts keys alphabetically), then the rest."""
    return sorted(keys, key=lambda k: (_STAGE_RANK.get(k, 3), str(k)))


def _d(x: Any) -> dict:
    return dict(x) if isinstance(x, Mapping) else {}


# --------------------------------------------------------------------------- sections


def _summary(report: dict, integrity: dict, verification: list[str] | None) -> str:
    req, method, versions = (
        _d(report.get("request")),
        _d(report.get("method")),
        _d(report.get("versions")),
    )
    lineage, eff = _d(report.get("lineage")), _d(report.get("efficacy"))
    mia, cost = _d(report.get("membership_inference")), _d(report.get("cost"))
    target = _d(req.get("target"))
    items: list[str] = []

    ext = f" (your reference: {_e(req['external_id'])})" if req.get("external_id") else ""
    when = f", received {_e(req.get('created_at'))}" if req.get("created_at") else ""
    done = f", completed {_e(req.get('completed_at'))}" if req.get("completed_at") else ""
    items.append(f"<b>Request</b> {_e(req.get('id'))}{ext}{when}{done}.")

    n = target.get("n_samples")
    if target.get("kind") == "class":
        classes = ", ".join(str(c) for c in target.get("class_names") or []) or "?"
        what = f"forget class(es) <b>{_e(classes)}</b> ({_fmt(n)} training samples)"
    else:
        what = f"forget <b>{_fmt(n)}</b> sample(s), identified by the sha256 of their content"
    before = _d(versions.get("before")).get("id")
    after = _d(versions.get("after")).get("id")
    model = versions.get("model_id", req.get("model_id"))
    items.append(
        f"<b>Target</b>: {what}, in model {_e(model)} (version {_e(before)} &rarr; "
        f"{_e(after) if after is not None else 'none'})."
    )

    exact = bool(method.get("exact"))
    kind = _badge("EXACT", "ok") if exact else _badge("APPROXIMATE", "warn")
    explain = (
        "the new model was trained without the deleted data"
        if exact
        else "the model was modified to suppress the data's influence; it is not a model that "
        "never saw it"
    )
    items.append(f"<b>Method</b>: {_e(method.get('name'))} {kind} &mdash; {explain}.")

    status = lineage.get("status") or (
        "verified" if lineage.get("verified") else ("failed" if lineage.get("exact") else "na")
    )
    badge = {
        "verified": _badge("VERIFIED", "ok"),
        "failed": _badge("FAILED", "bad"),
    }.get(status, _badge("NOT APPLICABLE", "na"))
    items.append(f"<b>Lineage check</b>: {badge} {_e(lineage.get('statement'))}")

    forget, test = _d(eff.get("forget")), _d(eff.get("test"))
    if forget or test:
        parts = []
        if forget:
            parts.append(
                f"accuracy on the forgotten samples {_pct(forget.get('before'))} &rarr; "
                f"{_pct(forget.get('after'))}"
            )
        if test:
            parts.append(
                f"test accuracy {_pct(test.get('before'))} &rarr; {_pct(test.get('after'))}"
            )
        items.append(f"<b>Efficacy</b>: {'; '.join(parts)}.")

    verdicts = mia.get("verdicts") or []
    if verdicts:
        lines = "".join(f"<li>{_verdict_badge(v)} {_e(_d(v).get('text'))}</li>" for v in verdicts)
        items.append(f"<b>Membership inference</b>:<ul>{lines}</ul>")
    elif mia.get("interpretation"):
        items.append(f"<b>Membership inference</b>: {_e(mia['interpretation'])}")

    cparts = []
    if cost.get("wall_time_s") is not None:
        cparts.append(f"{_fmt(cost['wall_time_s'])} s of work")
    if cost.get("speedup") is not None:
        cparts.append(f"{_fmt(cost['speedup'])}&times; cheaper than a full retrain")
    if cparts:
        items.append(f"<b>Cost</b>: {', '.join(cparts)}.")

    if verification is None:
        sig = (
            "signed with Ed25519 key "
            f'<span class="mono">{_e(integrity.get("key_id"))}</span>; verify offline with '
            '<span class="mono">forgetd verify-report</span> and the published public key.'
        )
    elif not verification:
        sig = f"{_badge('SIGNATURE VALID', 'ok')} checked against the service's public key."
    else:
        sig = f"{_badge('SIGNATURE INVALID', 'bad')} " + "; ".join(_e(p) for p in verification)
    items.append(f"<b>Integrity</b>: {sig}")
    return '<div class="summary"><ul>' + "".join(f"<li>{i}</li>" for i in items) + "</ul></div>"


def _verdict_badge(verdict: Any) -> str:
    status = str(_d(verdict).get("status", ""))
    kind = {
        "indistinguishable": "ok",
        "consistent_with_retrain": "ok",
        "residual_signal": "bad",
        "differs_from_retrain": "warn",
        "over_forgetting": "warn",
    }.get(status, "na")
    return _badge(status.replace("_", " ") or "n/a", kind)


def _request_section(report: dict) -> str:
    req = _d(report.get("request"))
    target = _d(req.get("target"))
    rows = [
        ("Request id", _fmt(req.get("id"))),
        ("External id", _fmt(req.get("external_id"))),
        ("Model", _fmt(req.get("model_name") or req.get("model_id"))),
        ("Received", _fmt(req.get("created_at"))),
        ("Started", _fmt(req.get("started_at"))),
        ("Completed", _fmt(req.get("completed_at"))),
        ("Target kind", _fmt(target.get("kind"))),
        ("Samples deleted", _fmt(target.get("n_samples"))),
    ]
    if target.get("class_names"):
        rows.append(("Forgotten class(es)", _fmt(", ".join(map(str, target["class_names"])))))
    if target.get("counts_by_class"):
        rows.append(("Deleted per class", _fmt(target["counts_by_class"])))
    if req.get("coalesced_with"):
        rows.append(("Served together with", _fmt(req["coalesced_with"])))
    out = [_kv_table(rows)]
    hashes = list(target.get("sample_sha256") or [])
    if hashes:
        shown = hashes[:_MAX_HASHES_SHOWN]
        more = (
            f"<p class='muted'>{len(hashes) - len(shown)} more in the JSON report.</p>"
            if len(hashes) > len(shown)
            else ""
        )
        out.append(
            f"<details><summary>sha256 of the {len(hashes)} deleted sample(s)</summary>"
            f'<div class="mono">{"<br>".join(_e(h) for h in shown)}</div>{more}</details>'
        )
    out.append(
        '<p class="muted">Samples are identified by the hash of their content only; file names '
        "are not part of this report.</p>"
    )
    return "<h2 id='request'>Request</h2>" + "".join(out)


def _method_section(report: dict) -> str:
    method, versions = _d(report.get("method")), _d(report.get("versions"))
    rows = [
        ("Method", _fmt(method.get("name"))),
        ("Exact", _fmt(method.get("exact"))),
        ("Requested as", _fmt(method.get("requested"))),
        ("Description", _fmt(method.get("description"))),
    ]
    params = method.get("parameters")
    if params:
        rows.append(("Parameters", _fmt(params)))
    out = [_kv_table(rows), "<h3>Model versions</h3>"]
    vrows = [
        ("Model", _fmt(versions.get("model_id"))),
        ("Architecture", _fmt(versions.get("architecture"))),
    ]
    for label, key in (("Before", "before"), ("After", "after")):
        v = _d(versions.get(key))
        text = f"id {_fmt(v.get('id'))}"
        if v.get("number") is not None:
            text += f", version {_fmt(v.get('number'))}"
        if v.get("manifest_sha256"):
            text += f', manifest <span class="mono">{_e(v["manifest_sha256"])}</span>'
        vrows.append((label, text if v else "&mdash;"))
    out.append(_kv_table(vrows))
    return "<h2 id='method'>Method and model versions</h2>" + "".join(out)


def _lineage_section(report: dict) -> str:
    lin = _d(report.get("lineage"))
    out = [f"<p>{_e(lin.get('statement'))}</p>"]
    constituents = lin.get("constituents") or []
    if constituents:
        head = (
            "<tr><th>Shard</th><th>Samples</th><th>Sample-set sha256</th>"
            "<th>Retrained from slice</th><th>Reused checkpoints</th><th>New checkpoints</th>"
            "<th>Deleted samples inside</th></tr>"
        )
        rows = []
        for c in constituents:
            c = _d(c)
            bad = c.get("contains_deleted") or []
            inside = _badge(str(len(bad)), "bad") if bad else _badge("0", "ok")
            rows.append(
                f"<tr><td class='num'>{_fmt(c.get('shard'))}</td>"
                f"<td class='num'>{_fmt(c.get('n_samples'))}</td>"
                f"<td class='mono'>{_e(c.get('sample_set_sha256'))}</td>"
                f"<td class='num'>{_fmt(c.get('retrained_from_slice'))}</td>"
                f"<td class='num'>{len(c.get('reused_checkpoints') or [])}</td>"
                f"<td class='num'>{len(c.get('new_checkpoints') or [])}</td>"
                f"<td>{inside}</td></tr>"
            )
        out.append(f"<table>{head}{''.join(rows)}</table>")
    labels = {
        "deleted_sample_count": "Deleted samples checked",
        "retrained_shards": "Shards retrained",
        "retrained_from_slice": "Slice each retrained shard restarted from",
        "n_reused_checkpoints": "Checkpoints reused unchanged",
        "n_new_checkpoints": "Checkpoints newly trained",
        "violations": "Deleted samples still present (shard, sha256)",
    }
    info_rows = [
        (_e(labels.get(k, k)), _fmt(v))
        for k, v in lin.items()
        if k not in {"statement", "constituents", "exact", "verified", "status"}
        and v is not None
        and not (k == "violations" and not v)
    ]
    if info_rows:
        out.append(_kv_table(info_rows))
    return "<h2 id='lineage'>Lineage proof</h2>" + "".join(out)


def _efficacy_section(report: dict, plots: Mapping[str, bytes]) -> str:
    eff = _d(report.get("efficacy"))
    out: list[str] = []
    splits = [(name, _d(eff.get(name))) for name in ("forget", "retain", "test") if eff.get(name)]
    has_retrain = any(s.get("retrain") is not None for _, s in splits)
    if splits:
        head = (
            "<tr><th>Set</th><th>Samples</th><th>Before</th><th>After</th>"
            + ("<th>Full retrain</th>" if has_retrain else "")
            + "</tr>"
        )
        labels = {
            "forget": "Forgotten samples",
            "retain": "Retained training data",
            "test": "Held-out test set",
        }
        rows = "".join(
            f"<tr><td>{_e(labels[name])}</td><td class='num'>{_fmt(s.get('n'))}</td>"
            f"<td class='num'>{_pct(s.get('before'))}</td>"
            f"<td class='num'>{_pct(s.get('after'))}</td>"
            + (f"<td class='num'>{_pct(s.get('retrain'))}</td>" if has_retrain else "")
            + "</tr>"
            for name, s in splits
        )
        out.append(f"<h3>Accuracy</h3><table>{head}{rows}</table>")

    per_class = _d(eff.get("per_class"))
    if per_class:
        pc_retrain = any(_d(v).get("retrain") is not None for v in per_class.values())
        head = (
            "<tr><th>Class</th><th>Before</th><th>After</th>"
            + ("<th>Full retrain</th>" if pc_retrain else "")
            + "</tr>"
        )
        rows = "".join(
            f"<tr><td>{_e(c)}</td><td class='num'>{_pct(_d(v).get('before'))}</td>"
            f"<td class='num'>{_pct(_d(v).get('after'))}</td>"
            + (f"<td class='num'>{_pct(_d(v).get('retrain'))}</td>" if pc_retrain else "")
            + "</tr>"
            for c, v in per_class.items()
        )
        out.append(
            "<h3>Per-class test accuracy</h3>"
            + _figure(plots, "per_class_accuracy")
            + f"<details><summary>Table</summary><table>{head}{rows}</table></details>"
        )

    dist = _d(eff.get("forget_prediction_distribution"))
    if dist or plots.get("prediction_distribution"):
        out.append("<h3>Where the forgotten samples' predictions go</h3>")
        out.append(_figure(plots, "prediction_distribution"))
        if dist:
            stages = _stage_order(dist)
            classes: list[str] = []
            for s in stages:
                for c in _d(dist[s]):
                    if c not in classes:
                        classes.append(c)
            head = (
                "<tr><th>Predicted class</th>"
                + "".join(f"<th>{_e(s)}</th>" for s in stages)
                + "</tr>"
            )
            rows = "".join(
                f"<tr><td>{_e(c)}</td>"
                + "".join(f"<td class='num'>{_pct(_d(dist[s]).get(c))}</td>" for s in stages)
                + "</tr>"
                for c in classes
            )
            out.append(f"<details><summary>Table</summary><table>{head}{rows}</table></details>")

    rest = {
        k: v
        for k, v in eff.items()
        if k not in {"forget", "retain", "test", "per_class", "forget_prediction_distribution"}
        and v is not None
    }
    if rest:
        out.append("<h3>Other measurements</h3>" + _generic_table(rest))
    if not out:
        out.append("<p class='muted'>No efficacy measurements were recorded.</p>")
    return "<h2 id='efficacy'>Efficacy</h2>" + "".join(out)


def _mia_section(report: dict, plots: Mapping[str, bytes]) -> str:
    mia = _d(report.get("membership_inference"))
    out = [
        "<p>A membership-inference attack tries to tell <b>members</b> ("
        f"{_e(mia.get('members') or 'forget set')}) from <b>non-members</b> ("
        f"{_e(mia.get('nonmembers') or 'held-out test set')}) using the model's loss or "
        "confidence on each sample. ROC AUC 0.5 means the attacker does no better than a coin "
        "flip; the advantage is the best achievable TPR &minus; FPR. The right target after "
        "unlearning is what a model retrained without the data gives.</p>"
    ]
    if mia.get("interpretation"):
        out.append(f"<p>{_e(mia['interpretation'])}</p>")
    verdicts = mia.get("verdicts") or []
    if verdicts:
        out.append(
            "<ul>"
            + "".join(f"<li>{_verdict_badge(v)} {_e(_d(v).get('text'))}</li>" for v in verdicts)
            + "</ul>"
        )
    attacks = _d(mia.get("attacks"))
    if attacks:
        head = (
            "<tr><th>Attack</th><th>Model</th><th>Members / non-members</th><th>ROC AUC</th>"
            "<th>95% CI</th><th>Advantage</th><th>95% CI</th><th>TPR @ 1% FPR</th>"
            "<th>95% CI</th></tr>"
        )
        rows = []
        interps = []
        for name, stages in attacks.items():
            for stage in ("before", "after", "retrain"):
                r = _d(_d(stages).get(stage))
                if not r:
                    continue
                label = {"retrain": "full retrain"}.get(stage, stage)
                rows.append(
                    f"<tr><td>{_e(name)}</td><td>{_e(label)}</td>"
                    f"<td class='num'>{_fmt(r.get('n_members'))} / "
                    f"{_fmt(r.get('n_nonmembers'))}</td>"
                    f"<td class='num'>{_num(r.get('auc'))}</td><td>{_ci(r.get('auc_ci'))}</td>"
                    f"<td class='num'>{_num(r.get('advantage'))}</td>"
                    f"<td>{_ci(r.get('advantage_ci'))}</td>"
                    f"<td class='num'>{_num(r.get('tpr_at_1pct_fpr'))}</td>"
                    f"<td>{_ci(r.get('tpr_ci'))}</td></tr>"
                )
                if r.get("interpretation"):
                    interps.append(
                        f"<li><b>{_e(name)}, {_e(label)}</b>: {_e(r['interpretation'])}</li>"
                    )
        out.append(f"<table>{head}{''.join(rows)}</table>")
        if interps:
            out.append(
                "<details><summary>Reading of each result</summary><ul>"
                + "".join(interps)
                + "</ul></details>"
            )
    for key in sorted(k for k in plots if k == "roc" or k.startswith("roc_")):
        attack = key[4:] if key.startswith("roc_") else ""
        cap = PLOT_CAPTIONS["roc"] + (f" Attack: {attack}." if attack else "")
        out.append(_figure(plots, key, cap))
    out.append(_figure(plots, "loss_histograms"))
    ref = _d(mia.get("reference_model_test"))
    if ref:
        out.append("<h3>Reference-model test (SISA)</h3>")
        out.append(
            "<p>Constituent models of other shards never saw the forgotten samples, so they "
            "show how a model that never saw a sample treats it.</p>"
        )
        if ref.get("interpretation"):
            out.append(f"<p>{_e(ref['interpretation'])}</p>")
        out.append(_generic_table(ref, skip=("interpretation",)))
    return "<h2 id='mia'>Membership inference</h2>" + "".join(out)


def _cost_section(report: dict) -> str:
    cost = _d(report.get("cost"))
    labels = {
        "wall_time_s": "Wall time (s)",
        "samples_retrained": "Samples retrained",
        "shards_retrained": "Shards retrained",
        "slices_retrained": "Slices retrained",
        "full_retrain_samples": "Samples a full retrain would train",
        "full_retrain_wall_time_s_estimate": "Estimated full-retrain wall time (s)",
        "speedup": "Speed-up over a full retrain",
        "device": "Device",
    }
    rows = [(_e(labels.get(k, k)), _fmt(v)) for k, v in cost.items()]
    body = _kv_table(rows) if rows else "<p class='muted'>No cost recorded.</p>"
    return "<h2 id='cost'>Cost</h2>" + body


def _notes_section(report: dict) -> str:
    notes = report.get("notes") or []
    if not notes:
        return ""
    return "<h2 id='notes'>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"


def _integrity_section(envelope: dict, integrity: dict, verification: list[str] | None) -> str:
    rows = [
        ("Schema", _fmt(envelope.get("schema"))),
        ("Algorithm", _fmt(integrity.get("algorithm"))),
        ("Report sha256", f'<span class="mono">{_e(integrity.get("sha256"))}</span>'),
        (
            "Previous report sha256",
            f'<span class="mono">{_e(integrity.get("previous_sha256"))}</span>'
            if integrity.get("previous_sha256")
            else "&mdash; (first report of this deployment's chain)",
        ),
        ("Signing key id", f'<span class="mono">{_e(integrity.get("key_id"))}</span>'),
        ("Signature (base64)", f'<span class="mono">{_e(integrity.get("signature"))}</span>'),
    ]
    if verification is not None:
        rows.append(
            (
                "Checked at rendering",
                _badge("valid", "ok")
                if not verification
                else _badge("INVALID", "bad") + " " + "; ".join(_e(p) for p in verification),
            )
        )
    explain = (
        "<p>The sha256 and the Ed25519 signature cover the canonical JSON (sorted keys, no "
        'whitespace, UTF-8) of <span class=\'mono\'>{"previous_sha256": ..., "report": ...}'
        "</span>, so the link to the previous report is signed too. Verify offline with the "
        "public key the service publishes at <span class='mono'>/v1/keys</span>: "
        "<span class='mono'>forgetd verify-report report.json</span>.</p>"
    )
    return "<h2 id='integrity'>Integrity</h2>" + _kv_table(rows) + explain


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
    plots = dict(plots or {})
    report = _d(envelope.get("report"))
    integrity = _d(envelope.get("integrity"))
    req = _d(report.get("request"))
    title = f"Audit report: deletion request {req.get('id', '?')}"

    known = {"loss_histograms", "per_class_accuracy", "prediction_distribution"}
    others = [k for k in plots if k not in known and not (k == "roc" or k.startswith("roc_"))]
    extra_figs = "".join(_figure(plots, k, k.replace("_", " ")) for k in sorted(others))

    raw = json.dumps(envelope, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    generated = report.get("generated_at")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p class='muted'>Report generated {_e(generated)}.</p>" if generated else "",
        "<h2 id='summary'>Summary</h2>",
        _summary(report, integrity, verification),
        _request_section(report),
        _method_section(report),
        _lineage_section(report),
        _efficacy_section(report, plots),
        _mia_section(report, plots),
        _cost_section(report),
        _notes_section(report),
        "<h2 id='figures'>Additional figures</h2>" + extra_figs if extra_figs else "",
        _integrity_section(envelope, integrity, verification),
        "<h2 id='raw'>Machine-readable report</h2><details><summary>Signed JSON envelope"
        f"</summary><pre>{_e(raw)}</pre></details>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)
