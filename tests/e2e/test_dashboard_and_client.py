"""The dashboard in headless Chromium and the `forgetd requests` client, against a real
embedded deployment: a request submitted with the client moves to completed on the page.

Needs Debian's chromium (/usr/bin/chromium) and playwright's Python package; the screenshot
is kept as a test artifact under .cache/artifacts/."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from app.db.migrate import PROJECT_ROOT
from app.embedded import Deployment, deployment
from tests.conftest import TINY_MODEL, make_subset

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = PROJECT_ROOT / ".cache" / "artifacts"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt: chromium)"),
]


def _client(deployed: Deployment, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FORGETD_URL": deployed.base_url, "FORGETD_API_KEY": key}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "requests", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=PROJECT_ROOT,
    )


def _others(root: Path, count: int) -> list[str]:
    return ["bear/" + p.name for p in sorted((root / "train" / "bear").iterdir())[:count]]


def _make_overdue(deployed: Deployment, request_id: str) -> None:
    """Move a deadline into the past, as time passing would."""
    engine = create_engine(f"sqlite:///{deployed.home / 'forgetd.db'}")
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE deletion_requests SET due_at = :due WHERE id = :id"),
            {"due": datetime.now(UTC) - timedelta(hours=5), "id": request_id},
        )
    engine.dispose()


def test_dashboard_follows_a_request_submitted_with_the_client(tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    root = make_subset(tmp_path / "data" / "animals", train_per_class=24, test_per_class=8)
    env = {"FORGETD_DATA_ROOTS": str(tmp_path / "data"), "FORGETD_DEVICE": "cpu"}
    with deployment(tmp_path / "home", env=env) as deployed, deployed.client() as admin:
        dataset = admin.post("/v1/datasets", json={"name": "animals", "root": str(root)}).json()
        spec = {**TINY_MODEL, "name": "dash", "dataset": dataset["id"], "shards": 2, "slices": 1}
        spec["epochs_per_slice"] = 1
        model = admin.post("/v1/models", json=spec).json()
        deployed.wait_until(admin, f"/v1/models/{model['id']}", {"ready", "failed"}, 600)
        auditor, requester = deployed.mint_key("auditor"), deployed.mint_key("requester")
        name = "zebra/" + sorted(p.name for p in (root / "train" / "zebra").iterdir())[0]

        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{deployed.base_url}/dashboard")
            # A requester's key is refused with the reason; an auditor's opens the page.
            page.fill("#key", requester)
            page.click("#login button")
            page.wait_for_selector("#error:has-text('auditor')", timeout=30_000)
            page.fill("#key", auditor)
            page.click("#login button")
            page.wait_for_selector("#models tr[data-model='dash']", timeout=30_000)
            assert page.evaluate("sessionStorage.getItem('forgetd-key')") == auditor

            # Bad inputs to the client are clear errors.
            both = _client(
                deployed, requester, "submit", "--model", "dash", "--file", name, "--class", "zebra"
            )
            assert both.returncode == 2 and "not both" in both.stdout
            unknown = _client(deployed, requester, "submit", "--model", "nope", "--file", name)
            assert unknown.returncode == 1 and "404" in unknown.stdout

            submitted = _client(deployed, requester, "submit", "--model", "dash", "--file", name)
            assert submitted.returncode == 0, submitted.stdout + submitted.stderr
            request_id = submitted.stdout.strip().splitlines()[-1]
            row = f"#requests tr[data-id='{request_id}']"
            page.wait_for_selector(row, timeout=60_000)
            watched = _client(deployed, requester, "watch", request_id, "--interval", "0.5")
            assert watched.returncode == 0, watched.stdout + watched.stderr
            assert "completed" in watched.stdout
            page.wait_for_selector(f"{row}[data-status='completed']", timeout=60_000)
            text = page.inner_text(row)
            assert "100.0%" in text and "completed" in text and "report" in text
            assert "files erased" in text and "shard retrained" in text
            assert name.split("/")[1] not in page.content()
            # The report link fetches the signed report's page with the key and opens it.
            with page.expect_popup() as opened:
                page.click(f"{row} a[data-report]")
            report_page = opened.value
            report_page.wait_for_load_state()
            assert request_id in report_page.content()
            report_page.close()

            # Two requests wait for an approval; one of them is past its deadline: overdue
            # requests come first, and the count says so.
            admin.patch(f"/v1/models/{model['id']}", json={"require_approval": True})
            waiting = []
            for other in _others(root, 2):
                sent = _client(
                    deployed,
                    requester,
                    "submit",
                    "--model",
                    "dash",
                    "--file",
                    other,
                    "--deadline-days",
                    "3",
                )
                assert sent.returncode == 0, sent.stdout + sent.stderr
                waiting.append(sent.stdout.strip().splitlines()[-1])
            _make_overdue(deployed, waiting[1])
            page.wait_for_selector(
                f"#requests tr.overdue[data-id='{waiting[1]}'][data-status='pending_approval']",
                timeout=30_000,
            )
            order = page.eval_on_selector_all(
                "#requests tr.request", "rows => rows.map(r => r.dataset.id)"
            )
            assert order[0] == waiting[1] and order[-1] == request_id
            assert page.inner_text("div.count[data-status='overdue'] b") == "1"
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            browser.close()

        listed = _client(deployed, requester, "list", "--json")
        assert listed.returncode == 0 and request_id in listed.stdout
        html = tmp_path / "report.html"
        saved = _client(deployed, requester, "report", request_id, "--html", str(html))
        assert saved.returncode == 0, saved.stdout + saved.stderr
        assert "<html" in html.read_text().lower()
        report = _client(deployed, requester, "report", request_id)
        assert report.returncode == 0 and '"signature"' in report.stdout
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
