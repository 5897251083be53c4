"""Database layer: SQLAlchemy 2 models and session handling (no torch, no FastAPI)."""
