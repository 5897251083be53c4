"""Failure reasons and logs carry sample hashes, never file names."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.privacy import redact_paths
from worker.training.data import ImageDecodeError, load_images


def test_quoted_paths_are_redacted_from_library_errors(tmp_path: Path) -> None:
    missing = tmp_path / "train" / "cat" / "alice-holiday.jpg"
    try:
        missing.read_bytes()
    except OSError as exc:
        text = f"{type(exc).__name__}: {exc}"
    assert "alice-holiday" in text
    assert redact_paths(text) == (
        "FileNotFoundError: [Errno 2] No such file or directory: '<path>'"
    )
    trace = 'File "/srv/worker/flows/training.py", line 3, in train\n'
    assert redact_paths(trace) == trace  # code locations stay readable


def test_an_unreadable_image_is_named_by_its_position_not_its_path(tmp_path: Path) -> None:
    broken = tmp_path / "alice-holiday.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ImageDecodeError) as caught:
        load_images([broken], image_size=8, channels=1)
    assert caught.value.index == 0
    assert "alice-holiday" not in str(caught.value) and str(tmp_path) not in str(caught.value)
