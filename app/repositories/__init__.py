"""Queries that several services and flows share, one module per aggregate."""
