"""A content-keyed blob store.

Keys are hex digests chosen by the caller (for checkpoints: a hash chain over the recipe and the
exact samples trained on), so a blob that exists is by construction the right one and is reused,
never rebuilt. Writes go to a temporary file in the same folder, are fsynced and then renamed
into place, so a reader never sees half a blob and a killed writer leaves no corrupt entry.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

_KEY_PATTERN = re.compile(r"^[0-9a-f]{16,128}$")


class LocalStore:
    """Blobs under `root/<namespace>/<key[:2]>/<key>`; a shared volume for several workers."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, namespace: str, key: str) -> Path:
        if not _KEY_PATTERN.match(key):
            raise ValueError(f"store keys are lowercase hex digests, got {key!r}")
        if not namespace.isidentifier():
            raise ValueError(f"store namespace must be an identifier, got {namespace!r}")
        return self.root / namespace / key[:2] / key

    def put(self, namespace: str, key: str, data: bytes) -> str:
        """Store `data` under `key` atomically; returns the sha256 of the bytes written."""
        target = self.path(namespace, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return hashlib.sha256(data).hexdigest()

    def get(self, namespace: str, key: str) -> bytes:
        path = self.path(namespace, key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise KeyError(f"{namespace}/{key} is not in the store") from None

    def exists(self, namespace: str, key: str) -> bool:
        return self.path(namespace, key).is_file()

    def delete(self, namespace: str, key: str) -> bool:
        path = self.path(namespace, key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True
