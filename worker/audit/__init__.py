"""The audit report of a deletion, computed by the worker.

Submodules are imported explicitly, so that using one part does not load the others:

- torch-free: ``mia`` (membership-inference attacks), ``builder`` (report body and figures),
  ``plots`` (matplotlib, loaded when figures are drawn), ``html`` (the page), ``context``
  (the request, read once), ``lineage`` (the lineage proof) and ``cost`` (the cost of a
  version and of a full retrain);
- with torch: ``evalsets``, ``efficacy`` and ``evidence`` (scoring both versions), and
  ``publish``, the entry point that builds, signs, chains and stores a report.

The report's schema, integrity and offline verification live in :mod:`app.audit`.
"""
