"""Domain services: validate, read and write through a session; never commit (callers do)."""
