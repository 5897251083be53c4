"""Fixed, publicly trained backbones and the per-shard heads trained on their features."""
