"""Sharing adapters: push/pull clients, model cards, and the self-hosted hub server."""
