"""Data boundaries: datasets and imported files lie inside the configured data roots, and no
file is read or erased through a link.

Paths are resolved to their real path before any check. Files are opened one component at a
time relative to their folder's descriptor with ``O_NOFOLLOW``, so a link swapped in between a
check and the use is refused instead of followed. Errors name paths relative to a root, never
more than ``MAX_LISTED`` of them, and clip any echoed input.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_LISTED = 20
MAX_ECHO = 200
# O_NONBLOCK: opening a FIFO planted in a dataset must not hang the caller.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = _READ_FLAGS | os.O_DIRECTORY


def clip(text: object, limit: int = MAX_ECHO) -> str:
    """At most ``limit`` characters of a caller's input, for error messages."""
    value = str(text)
    return value if len(value) <= limit else value[:limit] + f"... ({len(value)} characters)"


def listing(paths: Sequence[str]) -> dict[str, Any]:
    """The first ``MAX_LISTED`` of ``paths`` (sorted, clipped) and how many there are."""
    ordered = sorted(paths)
    return {"paths": [clip(p) for p in ordered[:MAX_LISTED]], "count": len(ordered)}


def real_roots(roots: Sequence[Path]) -> list[Path]:
    return [Path(os.path.realpath(root)) for root in roots]


def containing_root(path: Path, roots: Sequence[Path]) -> Path | None:
    """The data root that holds ``path`` (already a real path), or None."""
    return next((root for root in real_roots(roots) if path.is_relative_to(root)), None)


def overlaps(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


class UnsafeFileError(Exception):
    """A file that must not be read or erased; the message names no path."""


class FileMissingError(UnsafeFileError):
    """The file is not in its folder (the folders on its path are real and present)."""


class FileSizeError(UnsafeFileError):
    """An allowed file of a size the caller may not use."""


@dataclass(frozen=True)
class FileIdentity:
    device: int
    inode: int


def check_regular(info: os.stat_result) -> None:
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeFileError("it is a symbolic link")
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFileError("it is not a regular file")
    if info.st_nlink > 1:
        raise UnsafeFileError("it has other hard links, so erasing it would keep its bytes")


def read_regular(dir_fd: int, name: str) -> bytes:
    """The bytes of a regular, singly linked file in an open folder (no link followed)."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise UnsafeFileError(
            f"it cannot be opened without following a link ({exc.strerror})"
        ) from None
    with os.fdopen(fd, "rb") as handle:
        check_regular(os.fstat(handle.fileno()))
        return handle.read()


def _open_parent(root: Path, rel_path: str) -> tuple[int, str]:
    """A descriptor of ``rel_path``'s folder, walked from ``root`` without following links."""
    parts = rel_path.split("/")
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise UnsafeFileError("its stored path is malformed")
    if Path(os.path.realpath(root)) != root:
        raise UnsafeFileError("the dataset root no longer resolves to itself")
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise UnsafeFileError(f"the dataset root cannot be opened ({exc.strerror})") from None
    try:
        for part in parts[:-1]:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except OSError as exc:
        os.close(fd)
        raise UnsafeFileError(
            f"a folder on its path is missing or is a link ({exc.strerror})"
        ) from None
    return fd, parts[-1]


def verify_file(root: Path, rel_path: str, sha256: str) -> FileIdentity:
    """Check that ``root/rel_path`` is a regular file inside ``root``, reached without links,
    whose bytes hash to ``sha256``; returns its identity for :func:`erase_file`."""
    dir_fd, name = _open_parent(root, rel_path)
    try:
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            raise FileMissingError("it is missing") from None
        except OSError as exc:
            raise UnsafeFileError(f"it is a link or cannot be opened ({exc.strerror})") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            check_regular(info)
            digest = hashlib.sha256()
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            raise UnsafeFileError(f"its bytes now hash to {digest.hexdigest()}")
        return FileIdentity(info.st_dev, info.st_ino)
    finally:
        os.close(dir_fd)


def erase_file(root: Path, rel_path: str, identity: FileIdentity) -> None:
    """Unlink the file :func:`verify_file` checked, and only that file: refused if the name
    now points elsewhere, and checked afterwards that no link to its bytes is left."""
    dir_fd, name = _open_parent(root, rel_path)
    try:
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            raise UnsafeFileError(f"it is missing or is a link ({exc.strerror})") from None
        try:
            info = os.fstat(fd)
            check_regular(info)
            if FileIdentity(info.st_dev, info.st_ino) != identity:
                raise UnsafeFileError("it was replaced by another file after it was checked")
            os.unlink(name, dir_fd=dir_fd)
            if os.fstat(fd).st_nlink != 0:
                raise UnsafeFileError("another link to its bytes appeared while it was erased")
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


def read_file_under(root: Path, rel_path: str, max_bytes: int) -> bytes:
    """The bytes of the regular file ``root/rel_path`` (``root`` real), reached without links;
    refused when empty or over ``max_bytes``."""
    dir_fd, name = _open_parent(root, rel_path)
    try:
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            raise UnsafeFileError(f"it is missing or is a link ({exc.strerror})") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
                raise UnsafeFileError("it is not a regular file")
            if not 0 < info.st_size <= max_bytes:
                raise FileSizeError(f"it has {info.st_size} bytes; expected 1..{max_bytes}")
            return handle.read(max_bytes + 1)[:max_bytes]
    finally:
        os.close(dir_fd)
