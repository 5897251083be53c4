"""Checkpoint and artifact storage: content-keyed blobs with atomic writes."""

from models_store.store import LocalStore

__all__ = ["LocalStore"]
