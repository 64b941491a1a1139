"""Alembic migrations for the adapterhub metadata store (installed as `adapterhub.migrations`)."""
