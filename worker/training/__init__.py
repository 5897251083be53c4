"""Torch training engine: architectures, data loading, training loop and evaluation.

Kept import-free on purpose: the HTTP API imports ``worker.training.architectures`` to validate
architecture names and must not pay for (or require) torch.
"""
