"""Checkpoint and artifact storage: content-keyed blobs with atomic writes."""

from models_store.store import ArtifactStore, LocalStore, open_store

__all__ = ["ArtifactStore", "LocalStore", "open_store"]
