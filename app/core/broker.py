"""The one Celery application object, configured from the settings.

The API uses it to send tasks by name (``app.queue``); the worker attaches its task module and
signal handlers to the same object (``worker.celery_app``). Importing it loads no torch.
"""

from __future__ import annotations

from celery import Celery
from kombu import pools

from app.core.tasks import TASK_SWEEP
from app.settings import Settings, get_settings


def _redis_transport_options(settings: Settings) -> dict[str, float]:
    timeout = settings.broker_visibility_timeout_s
    return {
        "visibility_timeout": timeout,
        # kombu looks for overdue tasks every interval x throttle seconds (100 s by default):
        # look every interval, and no less often than the timeout, so an overdue task is
        # handed on about when it is due (a scan is one small Redis query).
        "unacked_restore_interval": min(10.0, timeout),
        "unacked_restore_throttle": 1,
    }


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
            _redis_transport_options(settings) if settings.broker_url.startswith("redis") else {}
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
    celery = Celery("forgetd")
    configure(celery, settings)
    return celery


celery_app = make_celery(get_settings())
