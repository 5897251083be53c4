"""Measuring models: what a new version forgot and kept, against its parent."""
