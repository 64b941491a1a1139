"""Tuning and measuring adapters: `tune` trains one from a JSONL file (PEFT + transformers Trainer) and registers it
with its provenance; `evaluate` scores adapters (and the base) on held-out data and records measured scores.

`adapterhub.tune(...)` is this package called as a function (the module is callable), the same as
`adapterhub.tune.tune(...)`: the package name and the public function name are one.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from .train import TuneSettings, tune

__all__ = ["TuneSettings", "evaluate", "tune"]


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from .evaluate import evaluate

        return evaluate
    raise AttributeError(f"module 'adapterhub.tune' has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
