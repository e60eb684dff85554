"""Alembic revisions for the storage schema (see env.py)."""
