"""Scanning an ImageFolder tree without following links: every image of
`<split>/<class>/` is read once through its folder's descriptor, hashed and decoded."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from app.services.data_roots import UnsafeFileError, clip, listing, read_regular
from app.services.errors import InvalidInput

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLITS = ("train", "test")


@dataclass(frozen=True)
class ScannedFile:
    rel_path: str
    split: str
    class_name: str
    sha256: str
    mode: str


@dataclass
class _Scan:
    """What one walk of a dataset tree found."""

    classes: dict[str, set[str]] = field(default_factory=lambda: {s: set() for s in SPLITS})
    counts: dict[str, int] = field(default_factory=dict)
    files: list[ScannedFile] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    special: list[str] = field(default_factory=list)
    hard_links: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def _inspect_image(data: bytes) -> str:
    """The PIL mode of an image; raises OSError/UnidentifiedImageError/ValueError."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decodes fully: verify() alone misses truncated JPEG data
        return str(image.mode)


def _visit_file(scan: _Scan, parts: tuple[str, ...], name: str, dir_fd: int) -> None:
    split, class_name = parts
    rel_path = f"{split}/{class_name}/{name}"
    scan.counts[f"{split}/{class_name}"] = scan.counts.get(f"{split}/{class_name}", 0) + 1
    if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
        scan.unreadable.append(rel_path)
        return
    try:
        data = read_regular(dir_fd, name)
        mode = _inspect_image(data)
    except (UnsafeFileError, OSError, UnidentifiedImageError, ValueError):
        scan.unreadable.append(rel_path)
        return
    scan.files.append(
        ScannedFile(rel_path, split, class_name, hashlib.sha256(data).hexdigest(), mode)
    )


def _walk(root: Path) -> _Scan:
    """One pass over the tree that follows no link: every link, special file and hard link
    anywhere inside is recorded, and every image of `<split>/<class>/` is read and hashed."""
    scan = _Scan()
    for dirpath, dirnames, filenames, dir_fd in os.fwalk(root, follow_symlinks=False):
        parts = Path(dirpath).relative_to(root).parts
        for name in sorted(dirnames + filenames):
            rel_path = "/".join((*parts, name))
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                scan.links.append(rel_path)
            elif stat.S_ISDIR(info.st_mode):
                if len(parts) == 1 and parts[0] in SPLITS:
                    scan.classes[parts[0]].add(name)
            elif not stat.S_ISREG(info.st_mode):
                scan.special.append(rel_path)
            elif info.st_nlink > 1:
                scan.hard_links.append(rel_path)
            elif len(parts) == 2 and parts[0] in SPLITS and not name.startswith("."):
                _visit_file(scan, (parts[0], parts[1]), name, dir_fd)
    return scan


def _unsafe_entries(scan: _Scan) -> None:
    found = {
        "symlinks": scan.links,
        "special_files": scan.special,
        "hard_links": scan.hard_links,
    }
    found = {kind: paths for kind, paths in found.items() if paths}
    if found:
        summary = ", ".join(f"{len(p)} {kind.replace('_', ' ')}" for kind, p in found.items())
        raise InvalidInput(
            f"dataset refused: it holds {summary}. A dataset must consist of plain folders "
            "and singly linked regular files, so that nothing outside it is read and an "
            "erased file leaves no copy",
            unsafe_paths={kind: listing(paths) for kind, paths in found.items()},
        )


def scan_image_folder(root: Path) -> tuple[list[str], list[ScannedFile]]:
    """Scan `root/train/<class>/*` and optional `root/test/<class>/*` (`root` is a real path).

    Raises InvalidInput naming every problem found (links or special files anywhere inside,
    empty classes, unreadable images, files that are not images, test classes unknown to
    train), with paths relative to the root.
    """
    if not root.is_dir():
        raise InvalidInput(f"root {clip(root)!r} does not exist or is not a folder")
    if not (root / "train").is_dir() or (root / "train").is_symlink():
        raise InvalidInput(
            f"root {clip(root)!r} is not an ImageFolder tree: it has no train/ folder "
            "(expected train/<class>/<image>, optional test/<class>/<image>)"
        )
    scan = _walk(root)
    _unsafe_entries(scan)
    classes = sorted(scan.classes["train"])
    if not classes:
        raise InvalidInput("train/ holds no class folders")
    problems: list[str] = []
    unknown = sorted(scan.classes["test"] - set(classes))
    if unknown:
        problems.append(f"test/ has classes that train/ lacks: {[clip(c) for c in unknown]}")
    empty = [f"train/{name}" for name in classes if not scan.counts.get(f"train/{name}")]
    if empty:
        shown = listing(empty)
        problems.append(f"{shown['count']} empty class folders: {shown['paths']}")
    if scan.unreadable:
        shown = listing(scan.unreadable)
        problems.append(f"{shown['count']} unreadable or non-image files: {shown['paths']}")
    if problems:
        raise InvalidInput("dataset refused: " + "; ".join(problems), problems=problems)
    files = sorted(scan.files, key=lambda f: (SPLITS.index(f.split), f.rel_path))
    return classes, files
