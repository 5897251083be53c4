"""Celery task names: the API sends tasks by name, the worker registers them under these."""

from __future__ import annotations

TASK_START_VERSION = "forgetd.start_version"
TASK_TRAIN_SHARD = "forgetd.train_shard"
TASK_UNLEARN_SHARD = "forgetd.unlearn_shard"
TASK_FINALIZE_VERSION = "forgetd.finalize_version"
TASK_COMPLETE_BATCH = "forgetd.complete_batch"
TASK_PROCESS_MODEL = "forgetd.process_model"
TASK_SWEEP = "forgetd.sweep"
TASK_IMPORT_MODEL = "forgetd.import_model"
TASK_DELIVER_WEBHOOK = "forgetd.deliver_webhook"
TASK_TRAIN_FILTERS = "forgetd.train_filters"
