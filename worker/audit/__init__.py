"""Audit-report content computed by the worker: membership inference, plots, HTML, assembly.

Torch-free: every function takes plain data (numpy arrays, dicts). Submodules are imported
explicitly (``worker.audit.mia``, ``.plots``, ``.html``, ``.builder``) so that using the
attacks does not import matplotlib.
"""
