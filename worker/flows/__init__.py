"""Orchestration run by the Celery tasks: each step reads and writes the database, is
idempotent, and can be re-run after a crash."""
