"""Persistence: database engine and migrations, ORM rows, content-addressed blobs, and the Registry operations."""
