"""The audit report's HTML page renders in a real browser: headless Chromium takes a screenshot
of the page served by GET /v1/deletion-requests/{id}/report (Accept: text/html), with its inline
plots, under the page's own Content-Security-Policy (which forbids anything but data: images).

Needs the Debian package ``chromium`` (/usr/bin/chromium); skipped without it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from app.db.models import Sample
from app.db.session import session_scope

CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 1200, 7000
# Colours the report draws with: the ROC "before"/"after" curves and the green VERIFIED badge.
BEFORE_RED, AFTER_BLUE, OK_GREEN = (0xB0, 0x3A, 0x2E), (0x1F, 0x61, 0x8D), (0x1E, 0x84, 0x49)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs headless Chromium at /usr/bin/chromium (apt: chromium)"
)


def _screenshot(page: Path, out: Path, profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",  # CI containers run as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{HEIGHT}",
            f"--screenshot={out}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _share_of(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: int = 24) -> float:
    distance = np.abs(pixels[..., :3].astype(int) - np.array(colour)).max(axis=-1)
    return float((distance <= tolerance).mean())


def test_report_page_renders_with_its_plots(sqlite_service, tiny_dataset, tmp_path) -> None:
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"])
    with session_scope() as session:
        names = session.scalars(
            select(Sample.rel_path)
            .where(Sample.dataset_id == dataset["id"], Sample.split == "train")
            .order_by(Sample.rel_path)
        ).all()[::4][:10]
    request = service.forget({"model": model["id"], "filenames": list(names)})
    assert request["status"] == "completed", request
    response = service.client.get(
        f"/v1/deletion-requests/{request['id']}/report", headers={"Accept": "text/html"}
    )
    assert response.status_code == 200
    page = tmp_path / "report.html"
    page.write_text(response.text, encoding="utf-8")

    shot = tmp_path / "report.png"
    done = _screenshot(page, shot, tmp_path / "chromium-profile")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (WIDTH, HEIGHT)
        pixels = np.asarray(image.convert("RGB"))
    # Not a blank page: text, tables and figures cover a good part of it.
    assert (pixels.min(axis=-1) < 200).mean() > 0.02
    # The inline figures were decoded and drawn (data: URIs are allowed by the page's CSP): the
    # ROC curves' colours and the green VERIFIED / SIGNATURE VALID badges are on screen.
    assert _share_of(pixels, BEFORE_RED) > 1e-4
    assert _share_of(pixels, AFTER_BLUE) > 1e-4
    assert _share_of(pixels, OK_GREEN) > 1e-5
