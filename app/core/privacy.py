"""Keeping file names out of failure reasons and logs: they name samples by hash only.

Flows raise errors that name sample hashes; this is the last line of defence for errors
raised by libraries (``OSError``, PIL), whose messages quote the path they failed on.
"""

from __future__ import annotations

import re

# A quoted absolute path, as OSError and PIL print it: '/data/ds/train/cat/0001.png'.
_QUOTED_PATH = re.compile(r"'/[^'\n]*'")


def redact_paths(text: str) -> str:
    """``text`` with every single-quoted absolute path replaced by ``'<path>'``."""
    return _QUOTED_PATH.sub("'<path>'", text)
