"""Image decoding into uint8 tensors, with an optional on-disk .npy cache."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

_MODES = {1: "L", 3: "RGB"}


class ImageDecodeError(RuntimeError):
    """Image ``index`` of a batch could not be read; the message carries no path."""

    def __init__(self, index: int, cause: BaseException) -> None:
        reason = getattr(cause, "strerror", None) or type(cause).__name__
        super().__init__(f"image {index} of the batch cannot be read ({reason})")
        self.index = index
        self.reason = reason


def load_images(
    paths: Sequence[Path],
    *,
    image_size: int,
    channels: int,
    cache_dir: Path | None = None,
    cache_key: str | None = None,
) -> torch.Tensor:
    """Decode ``paths`` into a uint8 tensor [N, channels, image_size, image_size].

    With both ``cache_dir`` and ``cache_key`` the decoded array is stored as
    ``<cache_dir>/<cache_key>-<channels>x<image_size>.npy`` and reused while its shape matches.
    """
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    shape = (len(paths), channels, image_size, image_size)
    cache_path = _cache_path(cache_dir, cache_key, channels, image_size)
    if cache_path is not None:
        cached = _read_cache(cache_path, shape)
        if cached is not None:
            return torch.from_numpy(cached)
    array = _decode_all(paths, image_size=image_size, channels=channels)
    if cache_path is not None:
        _write_cache(cache_path, array)
    return torch.from_numpy(array)


def to_model_input(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 in [-1, 1], i.e. (x/255 - 0.5)/0.5, on the input's device."""
    return images_u8.to(torch.float32).div_(127.5).sub_(1.0)


def _decode_all(paths: Sequence[Path], *, image_size: int, channels: int) -> np.ndarray:
    # Preallocate once and fill in place: avoids a list of N small arrays plus a stack copy.
    out = np.empty((len(paths), channels, image_size, image_size), dtype=np.uint8)
    mode = _MODES[channels]
    for i, path in enumerate(paths):
        try:
            pixels = _decode_one(Path(path), mode=mode, image_size=image_size)
        except (OSError, ValueError) as exc:  # PIL's errors are OSErrors too
            raise ImageDecodeError(i, exc) from None
        if channels == 1:
            out[i, 0] = pixels
        else:
            out[i] = pixels.transpose(2, 0, 1)
    return out


def _decode_one(path: Path, *, mode: str, image_size: int) -> np.ndarray:
    with Image.open(path) as img:
        converted = img.convert(mode) if img.mode != mode else img
        if converted.size != (image_size, image_size):
            converted = converted.resize((image_size, image_size), Image.Resampling.BILINEAR)
        return np.asarray(converted, dtype=np.uint8)


def _cache_path(
    cache_dir: Path | None, cache_key: str | None, channels: int, image_size: int
) -> Path | None:
    if cache_dir is None or cache_key is None:
        return None
    if not cache_key or any(sep in cache_key for sep in ("/", "\\", os.sep)) or ".." in cache_key:
        raise ValueError(f"cache_key must be a plain file-name stem, got {cache_key!r}")
    return Path(cache_dir) / f"{cache_key}-{channels}x{image_size}.npy"


def _read_cache(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """Return the cached array, or None when absent, unreadable or of the wrong shape."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if array.shape != shape or array.dtype != np.uint8:
        return None
    return array


def _write_cache(path: Path, array: np.ndarray) -> None:
    # Temp file + os.replace: concurrent workers see either no file or a complete one.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
