"""Tuning and measuring adapters: `tune` trains one from a JSONL file (PEFT + transformers Trainer) and registers it
with its provenance; `evaluate` scores adapters (and the base) on held-out data and records measured scores.

The package is `adapterhub.tuning` (not `adapterhub.tune`) so that the public function `adapterhub.tune` is never
shadowed by a submodule of the same name (see tests/test_public_api.py).
"""

from __future__ import annotations

from typing import Any

from .train import TuneSettings, tune

__all__ = ["TuneSettings", "evaluate", "tune"]


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from .evaluate import evaluate

        return evaluate
    raise AttributeError(f"module 'adapterhub.tuning' has no attribute {name!r}")
