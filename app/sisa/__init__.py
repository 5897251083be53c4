"""Pure SISA bookkeeping: manifests, checkpoint keys and deletion plans (no torch, no I/O)."""
