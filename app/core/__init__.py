"""The torch-free kernel shared by the HTTP API (``app.api``) and the worker (``worker``).

It holds what both sides must agree on: the training recipe, the unlearning methods' specs and
configurations, architecture names, Celery task names and model-store namespaces. It imports
neither ``app.api`` nor ``worker``.
"""
