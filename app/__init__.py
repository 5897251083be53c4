"""forgetd: a machine-unlearning service for image classifiers.

`app` holds the HTTP API and everything it shares with the worker that does not need torch:
settings, the database layer and the pure SISA planning code.
"""
