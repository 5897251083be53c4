"""Report assembly (builder), figures and the HTML page, end to end on synthetic data."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import numpy as np
import pydantic
import pytest

from app.audit.integrity import SigningKey, seal_report, verify_envelope
from app.sisa.manifest import sample_set_sha256
from worker.audit.builder import (
    build_plots,
    build_report_body,
    mia_section,
    prediction_distribution,
)
from worker.audit.cost import cost_section
from worker.audit.html import render_report_html
from worker.audit.lineage import LineageConstituent, lineage_section
from worker.audit.mia import loss_threshold_attack, reference_model_test

PNG = b"\x89PNG\r\n\x1a\n"
FILE_NAMES = ["cat/0001.jpg", "dog/secret_person_42.png"]
CLASSES = ["cat", "dog", "bird"]


def _h(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


DELETED = sorted(_h(f) for f in FILE_NAMES)


def _sections(exact: bool = True):
    rng = np.random.default_rng(0)
    shard0 = [_h(f"s0-{i}") for i in range(50)]
    shard1 = [_h(f"s1-{i}") for i in range(50)]
    constituents = [
        LineageConstituent.from_samples(
            0,
            shard0,
            DELETED,
            retrained_from_slice=2,
            reused_checkpoints=["ck-0-1"],
            new_checkpoints=["ck-0-2b", "ck-0-3b"],
        ),
        LineageConstituent.from_samples(1, shard1, DELETED, reused_checkpoints=["ck-1-3"]),
    ]
    lineage = lineage_section(constituents, DELETED, exact=exact)
    losses = {
        "before": {
            "forget": rng.exponential(0.05, 40),
            "retain": rng.exponential(0.05, 400),
            "test": rng.exponential(0.8, 300),
        },
        "after": {
            "forget": rng.exponential(0.8, 40),
            "retain": rng.exponential(0.05, 400),
            "test": rng.exponential(0.8, 300),
        },
    }
    before = {
        "loss_threshold": loss_threshold_attack(
            losses["before"]["forget"], losses["before"]["test"], n_bootstrap=50
        )
    }
    after = {
        "loss_threshold": loss_threshold_attack(
            losses["after"]["forget"], losses["after"]["test"], n_bootstrap=50
        )
    }
    ref = reference_model_test(rng.exponential(0.8, 40), rng.exponential(0.8, (40, 3)))
    mia = mia_section(before, after, ref, None)
    efficacy = {
        "forget": {"before": 1.0, "after": 0.75, "n": 2},
        "retain": {"before": 0.99, "after": 0.985, "n": 98},
        "test": {"before": 0.9, "after": 0.895, "n": 300},
        "per_class": {c: {"before": 0.9, "after": 0.88} for c in CLASSES},
        "forget_prediction_distribution": {
            "before": prediction_distribution([0, 1], CLASSES),
            "after": prediction_distribution([2, 1], CLASSES),
        },
        "method_metrics": {"note": "<script>alert(1)</script>"},
    }
    request = {
        "id": 12,
        "external_id": "DSAR-2024-001",
        "model_id": 3,
        "created_at": "2024-05-01T12:00:00Z",
        "completed_at": "2024-05-01T12:03:00Z",
        "target": {
            "kind": "samples",
            "sample_sha256": DELETED,
            "n_samples": 2,
            "counts_by_class": {"cat": 1, "dog": 1},
        },
    }
    body = build_report_body(
        request=request,
        method={"name": "sisa" if exact else "unsir", "exact": exact, "parameters": {"lr": 0.1}},
        versions={"model_id": 3, "before": {"id": 5, "number": 1}, "after": {"id": 6, "number": 2}},
        lineage=lineage,
        efficacy=efficacy,
        membership_inference=mia,
        cost=cost_section(
            wall_time_s=np.float32(12.5), samples_retrained=60, full_retrain_samples=300
        ),
        notes=["Coalesced with no other request.", "a < b & c"],
        generated_at="2024-05-01T12:03:01Z",
    )
    return body, losses, mia, efficacy


def test_lineage_section_verified_failed_and_approximate() -> None:
    body, *_ = _sections()
    lin = body["lineage"]
    assert lin["verified"] is True and lin["status"] == "verified"
    assert lin["retrained_shards"] == [0]
    assert lin["retrained_from_slice"] == {"0": 2}
    assert lin["n_reused_checkpoints"] == 2
    c0 = lin["constituents"][0]
    assert c0["sample_set_sha256"] == sample_set_sha256([_h(f"s0-{i}") for i in range(50)])
    assert c0["n_samples"] == 50

    bad = LineageConstituent.from_samples(0, [*DELETED, _h("x")], DELETED, retrained_from_slice=1)
    failed = lineage_section([bad], DELETED, exact=True)
    assert failed["verified"] is False and failed["status"] == "failed"
    assert len(failed["violations"]) == 2
    assert lineage_section([], DELETED, exact=True)["verified"] is False

    approx = lineage_section([bad], DELETED, exact=False)
    assert approx["exact"] is False and approx["verified"] is False
    assert "approximate, carries no lineage proof" in approx["statement"]


def test_mia_section_verdicts() -> None:
    _, _, mia, _ = _sections()
    statuses = {v["attack"]: v["status"] for v in mia["verdicts"]}
    assert statuses["loss_threshold"] == "indistinguishable"
    assert "reference_model_percentile" in statuses
    before = mia["attacks"]["loss_threshold"]["before"]
    assert before["auc"] > 0.8
    rng = np.random.default_rng(1)
    residual = loss_threshold_attack(rng.exponential(0.1, 200), rng.exponential(1.0, 200))
    retrain = loss_threshold_attack(rng.exponential(1.0, 200), rng.exponential(1.0, 200))
    sec = mia_section({}, {"lt": residual}, None, {"lt": retrain})
    assert sec["verdicts"][0]["status"] == "residual_signal"
    sec = mia_section({}, {"lt": retrain}, None, {"lt": retrain})
    assert sec["verdicts"][0]["status"] == "consistent_with_retrain"


def test_build_report_body_validates() -> None:
    body, *_ = _sections()
    json.dumps(body, allow_nan=False)
    assert body["cost"]["speedup"] == pytest.approx(5.0)
    assert body["cost"]["wall_time_s"] == pytest.approx(12.5)
    assert set(body) >= {
        "request",
        "method",
        "versions",
        "lineage",
        "efficacy",
        "membership_inference",
        "cost",
        "notes",
        "generated_at",
    }
    # a file name cannot sneak into the request, and hashes must look like hashes
    kwargs = {
        k: body[k]
        for k in (
            "method",
            "versions",
            "lineage",
            "efficacy",
            "membership_inference",
            "cost",
            "notes",
        )
    }
    with pytest.raises(pydantic.ValidationError):
        build_report_body(request={**body["request"], "filenames": FILE_NAMES}, **kwargs)
    bad_target = {**body["request"]["target"], "sample_sha256": FILE_NAMES}
    with pytest.raises(pydantic.ValidationError):
        build_report_body(request={**body["request"], "target": bad_target}, **kwargs)


def test_build_plots_are_png() -> None:
    _, losses, mia, efficacy = _sections()
    plots = build_plots(
        losses=losses,
        mia=mia,
        per_class_accuracy=efficacy["per_class"],
        prediction_distribution=efficacy["forget_prediction_distribution"],
        forgotten_classes=["dog"],
    )
    assert set(plots) == {
        "loss_histograms",
        "roc_loss_threshold",
        "per_class_accuracy",
        "prediction_distribution",
    }
    for data in plots.values():
        assert data.startswith(PNG) and len(data) > 2000
    assert build_plots() == {}


@pytest.mark.parametrize("exact", [True, False])
def test_render_report_html(exact: bool) -> None:
    body, losses, mia, efficacy = _sections(exact=exact)
    key = SigningKey.generate()
    env = seal_report(body, previous_sha256="ab" * 32, key=key)
    plots = build_plots(
        losses=losses,
        mia=mia,
        per_class_accuracy=efficacy["per_class"],
        prediction_distribution={"cat": 0.5, "dog": 0.0, "bird": 0.5},
    )
    page = render_report_html(env, plots, verification=verify_envelope(env, key.public_pem()))
    assert page.startswith("<!DOCTYPE html>")
    for section in (
        "Summary",
        "Lineage proof",
        "Efficacy",
        "Membership inference",
        "Cost",
        "Integrity",
    ):
        assert f">{section}</h2>" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(plots) == 4
    for b64 in images:
        assert base64.b64decode(b64).startswith(PNG)
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", page)
    for name in [*FILE_NAMES, "0001.jpg", "secret_person_42"]:
        assert name not in page
    integ = env["integrity"]
    for value in (integ["sha256"], integ["previous_sha256"], integ["key_id"], integ["signature"]):
        assert value in page
    assert "<script>" not in page and "&lt;script&gt;" in page  # escaped
    assert "a &lt; b &amp; c" in page
    assert "SIGNATURE VALID" in page
    if exact:
        assert "VERIFIED" in page and "EXACT" in page
    else:
        assert "NOT APPLICABLE" in page and "APPROXIMATE" in page


def test_render_minimal_and_invalid_envelope() -> None:
    page = render_report_html({"report": {}, "integrity": {}}, {"odd": b"GIF89a..."})
    assert "<html" in page and "omitted" in page
    body, *_ = _sections()
    env = seal_report(body, previous_sha256=None, key=SigningKey.generate())
    env["report"]["notes"].append("tampered")
    page = render_report_html(env, {}, verification=["sha256 mismatch"])
    assert "SIGNATURE INVALID" in page and "first report" in page
