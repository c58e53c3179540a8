"""Alembic migrations of the archive database (run with ``bot db upgrade``)."""
