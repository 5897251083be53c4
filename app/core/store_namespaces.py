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
PREDICTIONS = "predictions"
"""A constituent's softmax on the test split, keyed like its checkpoint and deleted with it."""
BACKBONES = "backbones"
"""Registered backbones' state_dict bytes, keyed by their sha256."""
EMBEDDINGS = "embeddings"
"""One image's features under one backbone and preprocessing (derived from the image, so erased
with it), keyed by a hash of the backbone's sha256, the preprocessing and the image's sha256."""
WEIGHT_FILTERS = "weight_filters"
"""Per-class weight filters of one constituent, keyed by the filter job and the checkpoint
they apply to."""
