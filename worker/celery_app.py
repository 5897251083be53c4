"""The worker's side of the Celery app: the kernel's app object with the task module attached
and the worker-process signal handlers. ``celery -A worker.celery_app`` starts a worker."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys
from typing import Any

from celery import signals

from app.core.broker import celery_app, reconfigure

__all__ = ["celery_app", "reconfigure", "warm_imports"]

celery_app.conf.include = ["worker.tasks"]


@signals.beat_embedded_init.connect
def _die_with_the_worker(**_: Any) -> None:
    """`forgetd worker` runs the sweep scheduler as a child process. If the worker is killed
    (SIGKILL, OOM) that child would live on as a second scheduler beside the next worker's,
    so ask Linux to end it with its parent."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def warm_imports() -> None:
    """Import what the audit needs (scikit-learn, matplotlib, the report code) now, so that no
    request pays for it: the first audit of a fresh process otherwise spends seconds importing."""
    import worker.audit.plots
    import worker.audit.publish  # noqa: F401  (scikit-learn, the report builder)


@signals.worker_process_init.connect
@signals.worker_init.connect
def _warm_up(**_: Any) -> None:
    warm_imports()
