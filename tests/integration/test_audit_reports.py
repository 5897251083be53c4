"""Audit reports of completed deletions, end to end in-process: the lineage proof, membership
inference, efficacy and cost sections, the HTML page, the signed hash chain, and offline
verification with ``forgetd verify-report``."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app.api.routers import audit as audit_router
from app.audit.integrity import SigningKey, verify_chain, verify_envelope
from app.audit.schema import REPORT_SCHEMA_VERSION, ReportBody
from app.audit.verify import verify_file
from app.db.models import AuditReport, Checkpoint, ManifestEntry, ModelVersion, Sample
from app.db.session import session_scope
from tests.conftest import CACHE, SHARED_DATASETS
from worker.audit import publish as audit_publish
from worker.audit.lineage import compute_lineage

FORGETD = Path(sys.executable).parent / "forgetd"


# --------------------------------------------------------------------------- helpers


def _train_files(dataset_id: int) -> list[tuple[int, str, str]]:
    """(sample id, rel_path, sha256) of every training sample, in a stable order."""
    with session_scope() as session:
        rows = session.execute(
            select(Sample.id, Sample.rel_path, Sample.sha256)
            .where(Sample.dataset_id == dataset_id, Sample.split == "train")
            .order_by(Sample.rel_path)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _every_third(files: list[tuple[int, str, str]], n: int, offset: int = 0) -> list:
    return files[offset::3][:n]


def _report(service: Any, request_id: str) -> tuple[dict, bytes]:
    response = service.client.get(f"/v1/deletion-requests/{request_id}/report")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json(), response.content


def _public_pem(service: Any) -> str:
    keys = service.client.get("/v1/keys").json()["keys"]
    assert len(keys) == 1
    return keys[0]["public_key_pem"]


def _version(model_id: int, number: int) -> ModelVersion:
    with session_scope() as session:
        version = session.scalar(
            select(ModelVersion).where(
                ModelVersion.model_id == model_id, ModelVersion.number == number
            )
        )
        assert version is not None
        return version


def _final_checkpoints(version_id: int) -> dict[int, Checkpoint]:
    with session_scope() as session:
        rows = session.scalars(select(Checkpoint).where(Checkpoint.version_id == version_id)).all()
    last = max(c.slice for c in rows)
    return {c.shard: c for c in rows if c.slice == last}


def _assert_no_names(text: str, names: list[str]) -> None:
    for name in names:
        assert name not in text, "a file name leaked into the report"
        assert Path(name).name not in text, "a file name leaked into the report"


def _verify_cli(file: Path, key: Path | None) -> subprocess.CompletedProcess[str]:
    argv = [str(FORGETD), "verify-report", str(file)]
    if key is not None:
        argv += ["--public-key", str(key)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def _write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _check_schema(envelope: dict) -> dict:
    assert envelope["schema"] == REPORT_SCHEMA_VERSION
    ReportBody.model_validate(envelope["report"])  # the stored body fits the published schema
    return envelope["report"]


# --------------------------------------------------------------------------- SISA file deletion


def test_sisa_file_deletion_report_and_chain(
    postgres_service, tiny_dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A SISA file deletion publishes a complete, signed report; later deletions (a forced full
    retrain, then SISA again) extend the chain and keep verifying their lineage."""
    caplog.set_level(logging.DEBUG)
    service = postgres_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"])
    files = _train_files(dataset["id"])
    victims = _every_third(files, 12)
    names = [path for _, path, _ in victims]

    request = service.forget({"model": model["id"], "filenames": names, "external_id": "dpo-1"})
    assert request["status"] == "completed", request
    assert request["report_url"] == f"/v1/deletion-requests/{request['id']}/report"
    envelope, raw = _report(service, request["id"])
    report = _check_schema(envelope)
    pem = _public_pem(service)
    assert verify_envelope(envelope, pem) == []
    assert envelope["integrity"]["previous_sha256"] is None  # first report of this deployment

    # Request: hashes and counts only.
    target = report["request"]["target"]
    assert target["kind"] == "samples"
    assert target["sample_sha256"] == sorted(sha for _, _, sha in victims)
    assert target["n_samples"] == 12 and sum(target["counts_by_class"].values()) == 12
    assert report["request"]["external_id"] == "dpo-1"
    _assert_no_names(raw.decode(), names)

    # Lineage: recomputed from the manifest, equal to the checkpoint records, no deleted hash.
    lineage = report["lineage"]
    assert lineage["exact"] is True and lineage["verified"] is True, lineage["statement"]
    assert lineage["status"] == "verified" and lineage["violations"] == []
    assert lineage["checks"] == {
        "no_deleted_sample_in_any_constituent": True,
        "checkpoint_records_match_manifest": True,
    }
    v2 = _version(model["id"], 2)
    finals = _final_checkpoints(v2.id)
    constituents = {c["shard"]: c for c in lineage["constituents"]}
    assert sorted(constituents) == [0, 1, 2]
    for shard, checkpoint in finals.items():
        assert constituents[shard]["sample_set_sha256"] == checkpoint.sample_set_sha256
        assert constituents[shard]["contains_deleted"] == []
    affected = {p["shard"]: p["restart_slice"] for p in request["plan"]["affected_shards"]}
    assert lineage["retrained_shards"] == sorted(affected)
    assert lineage["retrained_from_slice"] == {str(s): r for s, r in affected.items()}
    with session_scope() as session:
        reused = sorted(
            session.scalars(
                select(Checkpoint.key).where(
                    Checkpoint.version_id == v2.id, Checkpoint.reused.is_(True)
                )
            ).all()
        )
    assert sorted(k for c in constituents.values() for k in c["reused_checkpoints"]) == reused
    assert lineage["n_reused_checkpoints"] == len(reused)

    # Membership inference before/after, both attacks, and the SISA reference-model test.
    mi = report["membership_inference"]
    for attack in ("loss_threshold", "logistic_regression"):
        for stage in ("before", "after"):
            result = mi["attacks"][attack][stage]
            assert 0.0 <= result["auc"] <= 1.0
            assert result["auc_ci"][0] <= result["auc"] <= result["auc_ci"][1]
            assert result["n_members"] == 12 and result["n_nonmembers"] > 0
            assert result["tpr_at_1pct_fpr"] is not None and result["advantage"] is not None
    assert "0.5" in mi["good_values"]
    reference = mi["reference_model_test"]
    assert reference["n_samples"] == 12 and reference["n_reference_models"] == 2
    assert {v["attack"] for v in mi["verdicts"]} >= {"loss_threshold", "logistic_regression"}

    # Efficacy and cost.
    efficacy = report["efficacy"]
    for part in ("forget", "retain", "test"):
        assert efficacy[part]["before"] is not None and efficacy[part]["after"] is not None
    assert set(efficacy["per_class"]) == {"bear", "elephant", "zebra"}
    assert abs(sum(efficacy["forget_prediction_distribution"]["after"].values()) - 1.0) < 1e-9
    cost = report["cost"]
    assert (
        cost["samples_retrained"] > 0 and cost["full_retrain_samples"] >= cost["samples_retrained"]
    )
    assert cost["speedup"] >= 1.0 and cost["audit_seconds"] > 0
    assert cost["full_retrain_wall_time_s_estimate"] > 0 and cost["wall_time_s"] > 0

    # The page people read: self-contained, plots inline, no file names.
    page = service.client.get(
        f"/v1/deletion-requests/{request['id']}/report", headers={"Accept": "text/html"}
    )
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("data:image/png;base64,") >= 5  # 2 ROC, losses, per-class, predictions
    assert "http://" not in html and "https://" not in html
    assert envelope["integrity"]["sha256"] in html
    _assert_no_names(html, names)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    _assert_no_names(logged, names)

    # A forced full retrain, then SISA again: the chain grows and the lineage still verifies
    # (the third version reuses checkpoints whose key chain started from the retrain's salt).
    second = service.forget({"model": model["id"], "filenames": [files[1][1]], "method": "retrain"})
    third = service.forget({"model": model["id"], "filenames": [files[4][1]], "method": "sisa"})
    chain = [envelope, _report(service, second["id"])[0], _report(service, third["id"])[0]]
    for i, item in enumerate(chain):
        assert verify_envelope(item, pem) == []
        assert item["report"]["lineage"]["verified"] is True, item["report"]["lineage"]
        if i:
            assert item["integrity"]["previous_sha256"] == chain[i - 1]["integrity"]["sha256"]
    assert chain[1]["report"]["method"]["name"] == "retrain"
    assert chain[1]["report"]["lineage"]["n_reused_checkpoints"] == 0
    assert chain[2]["report"]["lineage"]["n_reused_checkpoints"] > 0
    assert verify_chain(chain) == []
    with session_scope() as session:
        rows = session.scalars(select(AuditReport).order_by(AuditReport.id)).all()
        assert [r.sha256 for r in rows] == [c["integrity"]["sha256"] for c in chain]


# --------------------------------------------------------------------------- class forgetting


def test_class_forgetting_report(sqlite_service, tiny_dataset: Path) -> None:
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"], epochs_per_slice=6, lr=0.02, batch_size=16)

    request = service.forget({"model": model["id"], "class_name": "elephant", "method": "sisa"})
    assert request["status"] == "completed", request
    envelope, raw = _report(service, request["id"])
    report = _check_schema(envelope)
    assert verify_envelope(envelope, _public_pem(service)) == []

    target = report["request"]["target"]
    assert target["kind"] == "class" and target["class_names"] == ["elephant"]
    assert target["class_indices"] == [1]
    assert target["counts_by_class"] == {"elephant": 48 + 16}  # its train and test images
    assert target["n_samples"] == 64 and len(target["sample_sha256"]) == 64
    assert "elephant/" not in raw.decode()

    assert report["lineage"]["verified"] is True
    assert report["lineage"]["deleted_sample_count"] == 64
    mi = report["membership_inference"]
    assert mi["reference_model_test"] is None  # other shards saw the class: no "out" models
    lt = mi["attacks"]["loss_threshold"]
    # non-members: the 16 test elephants less the 3 of the validation split
    assert lt["before"]["n_members"] == 48 and lt["before"]["n_nonmembers"] == 13

    efficacy = report["efficacy"]
    assert efficacy["forget"]["before"] > 0.5
    assert efficacy["forget"]["after"] < efficacy["forget"]["before"]
    assert efficacy["per_class"]["elephant"]["after"] < efficacy["per_class"]["elephant"]["before"]
    distribution = efficacy["forget_prediction_distribution"]
    assert distribution["after"]["elephant"] < distribution["before"]["elephant"]
    retained = efficacy["test_retained_classes"]
    assert retained["n"] == 25 and retained["after"] is not None  # 32 less validation

    html = service.client.get(
        f"/v1/deletion-requests/{request['id']}/report", headers={"Accept": "text/html"}
    ).text
    assert "elephant" in html and "data:image/png;base64," in html

    # An approximate method on the same model: the report says so and carries no proof.
    second = service.forget(
        {
            "model": model["id"],
            "class_name": "zebra",
            "method": "finetune",
            "method_config": {"epochs": 1},
            # about the report of an approximate version, not its targets
            "options": {
                "max_forget_accuracy": 1.0,
                "max_retain_drop": 100,
                "max_class_retain_drop": 100,
            },
        }
    )
    assert second["status"] == "completed", second
    approximate, _ = _report(service, second["id"])
    body = _check_schema(approximate)
    assert body["method"]["name"] == "finetune" and body["method"]["exact"] is False
    (attempt,) = body["method"]["attempts"]
    assert attempt["method"] == "finetune" and attempt["validation"]["met"] is True
    assert body["lineage"]["status"] == "not_applicable"
    assert body["lineage"]["verified"] is False
    assert "approximate" in body["lineage"]["statement"]
    assert any("approximate" in note for note in body["notes"])
    assert body["membership_inference"]["attacks"]["loss_threshold"]["after"] is not None
    assert approximate["integrity"]["previous_sha256"] == envelope["integrity"]["sha256"]


# --------------------------------------------------------------------------- lineage failure


def test_lineage_fails_when_a_deleted_hash_is_planted_back(sqlite_service, tiny_dataset) -> None:
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"])
    v1 = _version(model["id"], 1)
    with session_scope() as session:
        placements = dict(
            session.execute(
                select(ManifestEntry.sample_id, ManifestEntry.shard).where(
                    ManifestEntry.version_id == v1.id
                )
            ).all()
        )
    victim_id, victim_path, victim_sha = _train_files(dataset["id"])[7]
    request = service.forget({"model": model["id"], "filenames": [victim_path]})
    assert request["status"] == "completed"
    v2 = _version(model["id"], 2)

    with session_scope() as session:
        clean = compute_lineage(session, v2, [victim_sha], exact=True)
    assert clean["verified"] is True and clean["status"] == "verified"

    # Plant the deleted sample back into the new version's manifest, in some shard.
    planted_shard = (placements[victim_id] + 1) % 3
    with session_scope() as session:
        session.add(
            ManifestEntry(version_id=v2.id, sample_id=victim_id, shard=planted_shard, slice=1)
        )
    with session_scope() as session:
        lineage = compute_lineage(session, v2, [victim_sha], exact=True)
    assert lineage["verified"] is False and lineage["status"] == "failed"
    assert {"shard": planted_shard, "sample_sha256": victim_sha} in lineage["violations"]
    bad = next(c for c in lineage["constituents"] if c["shard"] == planted_shard)
    assert bad["contains_deleted"] == [victim_sha]
    assert lineage["checks"]["no_deleted_sample_in_any_constituent"] is False
    # The recomputed set no longer matches what the checkpoint records say it was trained on.
    assert lineage["checks"]["checkpoint_records_match_manifest"] is False
    assert any(
        v.get("slice") == 1 and v.get("shard") == planted_shard for v in lineage["violations"]
    )
    assert "FAILED" in lineage["statement"]

    # A tampered checkpoint record alone (manifest intact) fails the proof too.
    with session_scope() as session:
        session.query(ManifestEntry).filter_by(version_id=v2.id, sample_id=victim_id).delete()
        checkpoint = session.scalar(
            select(Checkpoint).where(
                Checkpoint.version_id == v2.id, Checkpoint.shard == 0, Checkpoint.slice == 0
            )
        )
        assert checkpoint is not None
        checkpoint.sample_set_sha256 = hashlib.sha256(b"something else").hexdigest()
    with session_scope() as session:
        tampered = compute_lineage(session, v2, [victim_sha], exact=True)
    assert tampered["verified"] is False
    assert tampered["checks"] == {
        "no_deleted_sample_in_any_constituent": True,
        "checkpoint_records_match_manifest": False,
    }

    # Approximate methods carry no proof and say so.
    with session_scope() as session:
        approximate = compute_lineage(session, v2, [victim_sha], exact=False)
    assert approximate["status"] == "not_applicable" and approximate["verified"] is False
    assert "approximate" in approximate["statement"]


# --------------------------------------------------------------------------- verification


def _one_byte_changes(raw: bytes, envelope: dict) -> list[tuple[str, bytes]]:
    """Edits of a single byte at meaningful places of the served report."""

    def flip(needle: bytes, offset: int = 0, new: bytes | None = None) -> bytes:
        at = raw.index(needle) + offset
        old = raw[at : at + 1]
        repl = new if new is not None else (b"1" if old != b"1" else b"2")
        return raw[:at] + repl + raw[at + 1 :]

    sha = envelope["report"]["request"]["target"]["sample_sha256"][0].encode()
    auc = json.dumps(
        envelope["report"]["membership_inference"]["attacks"]["loss_threshold"]["after"]["auc"]
    ).encode()
    return [
        ("a deleted sample hash", flip(sha, 10, b"0" if sha[10:11] != b"0" else b"1")),
        ("an AUC digit", flip(b'"auc":' + auc, len(b'"auc":') + len(auc) - 1)),
        ("the verdict text", flip(b'"verified":true', len(b'"verified":'), b"T")),
        ("the previous hash link", flip(b'"previous_sha256":', len(b'"previous_sha256":') + 3)),
        ("the signature", flip(b'"signature":"', len(b'"signature":"') + 5)),
        ("the key id", flip(b'"key_id":"', len(b'"key_id":"'))),
        ("JSON structure", raw[:-1]),
    ]


def test_verify_report_cli_detects_any_change(sqlite_service, tiny_dataset, tmp_path) -> None:
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"])
    files = _train_files(dataset["id"])
    first = service.forget({"model": model["id"], "filenames": [files[0][1], files[5][1]]})
    second = service.forget({"model": model["id"], "filenames": [files[9][1]]})
    env1, _ = _report(service, first["id"])
    env2, raw2 = _report(service, second["id"])
    pem_path = _write(tmp_path / "key.pem", _public_pem(service))
    keys_json = _write(tmp_path / "keys.json", service.client.get("/v1/keys").content)

    # Untouched, as served: verifies with the PEM, with the /v1/keys document, and without a
    # key (the deployment's own key, found through the same settings as this process).
    report = _write(tmp_path / "report.json", raw2)
    for key in (pem_path, keys_json, None):
        done = _verify_cli(report, key)
        assert done.returncode == 0, done.stderr
        assert "OK" in done.stdout

    # Any one-byte change fails, with the reason on stderr.
    for label, changed in _one_byte_changes(raw2, env2):
        assert changed != raw2
        done = _verify_cli(_write(tmp_path / "changed.json", changed), pem_path)
        assert done.returncode == 1, f"{label}: {done.stdout}{done.stderr}"
        assert "FAIL" in done.stderr

    # Exhaustively in-process: every single-byte change anywhere in the file is caught, even
    # those that keep the parsed content equal (1e-05 -> 1E-05) or only touch whitespace.
    changed_file = tmp_path / "every.json"
    for at in range(0, len(raw2), max(1, len(raw2) // 400)):
        for new in (b" ", b"0", b"E"):
            if raw2[at : at + 1] == new:
                continue
            _write(changed_file, raw2[:at] + new + raw2[at + 1 :])
            assert verify_file(changed_file, pem_path), f"byte {at} -> {new!r} went unnoticed"
    spaced = raw2.replace(b",", b", ", 1)
    assert verify_file(_write(changed_file, spaced), pem_path)

    # Re-serialised without changes (pretty-printed, keys sorted) it still verifies.
    pretty = json.dumps(env2, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert verify_file(_write(tmp_path / "pretty.json", pretty), pem_path) == []

    # A wrong key.
    wrong = _write(tmp_path / "wrong.pem", SigningKey.generate().public_pem())
    done = _verify_cli(report, wrong)
    assert done.returncode == 1 and "signature" in done.stderr

    # A chain in order verifies; reordered, or with a report missing in the middle, it fails.
    third = service.forget({"model": model["id"], "filenames": [files[12][1]]})
    env3, _ = _report(service, third["id"])
    in_order = _write(tmp_path / "chain.json", json.dumps([env1, env2, env3]))
    done = _verify_cli(in_order, pem_path)
    assert done.returncode == 0, done.stderr
    for label, chain in (("reordered", [env2, env1, env3]), ("gap", [env1, env3])):
        done = _verify_cli(_write(tmp_path / f"{label}.json", json.dumps(chain)), pem_path)
        assert done.returncode == 1, label
        assert "chain" in done.stderr, label

    # The chain endpoint serves exactly the list that verifies as a file.
    app = service.client.app
    if not any(getattr(r, "path", "") == "/v1/audit-chain" for r in app.routes):
        app.include_router(audit_router.router)
    served = service.client.get("/v1/audit-chain")
    assert served.status_code == 200 and served.headers["x-total-count"] == "3"
    assert [e["integrity"]["sha256"] for e in served.json()] == [
        e["integrity"]["sha256"] for e in (env1, env2, env3)
    ]
    assert verify_file(_write(tmp_path / "served.json", served.content), pem_path) == []
    page = service.client.get("/v1/audit-chain", params={"offset": 1, "limit": 1}).json()
    assert [e["integrity"]["sha256"] for e in page] == [env2["integrity"]["sha256"]]


# --------------------------------------------------------------------------- attack power


def _cifar_subset(destination: Path, classes: tuple[str, ...], per_class: int) -> Path:
    """A private copy of the first ``per_class`` CIFAR-10 train and test images per class."""
    source = CACHE / "cifar10"
    if not (source / "train").is_dir():
        archive = SHARED_DATASETS / "cifar10-jpeg.tar.gz"
        if not archive.is_file():
            pytest.skip(f"needs {archive} (the shared datasets folder beside the project)")
        with tarfile.open(archive) as handle:  # this archive has no top folder
            handle.extractall(source, filter="data")
    for split in ("train", "test"):
        for name in classes:
            folder = destination / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for path in sorted((source / split / name).iterdir())[:per_class]:
                shutil.copy2(path, folder / path.name)
    return destination


def test_attack_auc_on_an_overfit_model_is_clearly_above_chance(sqlite_service, tmp_path) -> None:
    """One constituent trained for many epochs, without weight decay, on 30 CIFAR-10 images per
    class memorises them: before the deletion the attacks must see it, after forgetting the
    class (a model that never saw it) they must see much less."""
    service = sqlite_service
    root = _cifar_subset(tmp_path / "overfit", ("cat", "deer", "dog"), 30)
    dataset = service.register_dataset(root, name="overfit")
    model = service.train_model(
        dataset["id"],
        name="overfit",
        shards=1,
        slices=1,
        epochs_per_slice=40,
        image_size=16,
        lr=0.05,
        batch_size=16,
        weight_decay=0,
    )
    request = service.forget({"model": model["id"], "class_name": "cat", "method": "sisa"})
    assert request["status"] == "completed", request
    report = _report(service, request["id"])[0]["report"]
    attacks = report["membership_inference"]["attacks"]
    before = attacks["loss_threshold"]["before"]
    after = attacks["loss_threshold"]["after"]
    # non-members: the 30 test cats less the 6 of the validation split
    assert before["n_members"] == 30 and before["n_nonmembers"] == 24
    assert before["auc"] > 0.7, before
    assert before["auc_ci"][0] > 0.55, before
    assert attacks["logistic_regression"]["before"]["auc"] > 0.65
    assert after["auc"] < before["auc"] - 0.1
    assert after["auc_ci"][0] < 0.55  # chance is inside or near the interval after forgetting
    assert report["efficacy"]["forget"]["before"] > report["efficacy"]["forget"]["after"]


# --------------------------------------------------------------------------- concurrent appends


def _bare_requests(count: int) -> list[str]:
    """Deletion request rows (no training) to hang reports on."""
    from app.db.models import Dataset, DeletionRequest, Model

    with session_scope() as session:
        dataset = Dataset(
            name="bare", root="/nonexistent", classes=["a", "b"], channels=1, has_test_folder=False
        )
        session.add(dataset)
        session.flush()
        model = Model(name="bare", dataset_id=dataset.id, architecture="small_cnn", config={})
        session.add(model)
        session.flush()
        rows = [
            DeletionRequest(
                model_id=model.id, target_kind="files", method="sisa", request_fingerprint="x"
            )
            for _ in range(count)
        ]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]


@pytest.mark.parametrize("backend", ["postgres_service", "sqlite_service"])
def test_concurrent_publishers_keep_one_chain(backend: str, request, monkeypatch) -> None:
    """Two workers appending at the same moment must not both link to the same predecessor.
    Sealing is slowed down so that, without the lock, both would read the same chain head."""
    import threading
    import time

    from app.db.models import DeletionRequest
    from app.services.keys import signing_key
    from app.settings import get_settings

    request.getfixturevalue(backend)
    ids = _bare_requests(4)
    key = signing_key(get_settings())
    real_seal = audit_publish.seal_report

    def slow_seal(*args: Any, **kwargs: Any) -> dict:
        time.sleep(0.4)
        return real_seal(*args, **kwargs)

    monkeypatch.setattr(audit_publish, "seal_report", slow_seal)
    start = threading.Barrier(len(ids))
    errors: list[BaseException] = []

    def publish(request_id: str) -> None:
        try:
            start.wait()
            with session_scope() as session:
                row = session.get(DeletionRequest, request_id)
                assert row is not None
                audit_publish.append_report(session, row, {"n": request_id}, key, {})
        except BaseException as exc:  # reported below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    with session_scope() as session:
        rows = session.scalars(select(AuditReport).order_by(AuditReport.id)).all()
        chain = [r.envelope for r in rows]
        numbers = [r.sequence for r in rows]
    assert len(chain) == len(ids)
    assert numbers == [e["integrity"]["sequence"] for e in chain] == list(range(1, len(ids) + 1))
    assert chain[0]["integrity"]["previous_sha256"] is None
    assert verify_chain(chain) == []  # one line: every report links to the one before it
