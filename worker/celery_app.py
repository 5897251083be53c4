"""The Celery application. Importing it loads no torch: the API uses it to send tasks by name."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys
from typing import Any

from celery import Celery, signals
from kombu import pools

from app.settings import Settings, get_settings

TASK_START_VERSION = "forgetd.start_version"
TASK_TRAIN_SHARD = "forgetd.train_shard"
TASK_UNLEARN_SHARD = "forgetd.unlearn_shard"
TASK_FINALIZE_VERSION = "forgetd.finalize_version"
TASK_COMPLETE_BATCH = "forgetd.complete_batch"
TASK_PROCESS_MODEL = "forgetd.process_model"
TASK_SWEEP = "forgetd.sweep"
TASK_IMPORT_MODEL = "forgetd.import_model"


def configure(celery: Celery, settings: Settings) -> None:
    """Apply the settings (also used by tests that switch databases and brokers)."""
    celery.conf.update(
        broker_url=settings.broker_url,
        result_backend=settings.result_backend,
        # One GPU per worker process: take one task at a time and acknowledge it only when
        # done, so a killed worker's task goes back to the queue instead of vanishing.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # Redis redelivers an unacknowledged task after this long; the sweep usually acts first.
        broker_transport_options=(
            {"visibility_timeout": 6 * 3600} if settings.broker_url.startswith("redis") else {}
        ),
        worker_hijack_root_logger=False,
        beat_schedule={
            "sweep": {"task": TASK_SWEEP, "schedule": settings.sweep_interval_s},
        },
    )


def reconfigure(celery: Celery, settings: Settings) -> None:
    """Switch a live app to other settings, dropping connections made with the old ones."""
    configure(celery, settings)
    # Connection and producer pools are bound to the previous broker URL (kombu keeps a
    # process-wide registry of them): drop them all so the next send reconnects.
    pools.reset()
    celery._pool = None
    celery.amqp._producer_pool = None


def make_celery(settings: Settings) -> Celery:
    celery = Celery("forgetd", include=["worker.tasks"])
    configure(celery, settings)
    return celery


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


celery_app = make_celery(get_settings())
