"""Namespaces of the model store, shared by the API (which stores uploaded weights) and the
worker (which writes checkpoints and report artifacts)."""

from __future__ import annotations

CHECKPOINTS = "checkpoints"
"""Constituent checkpoints, keyed by their content chain key."""
IMPORTS = "imports"
"""Uploaded state_dict bytes waiting for the import task to turn them into a checkpoint."""
METHOD_RESULTS = "method_results"
"""Method-specific results of an approximate run (losses, discriminator score, ...), keyed like
the checkpoint they produced."""
WEIGHT_FILTERS = "weight_filters"
"""Per-class weight filters of one constituent, keyed by the filter job and the checkpoint
they apply to."""
