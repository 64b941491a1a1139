"""adapterhub: a registry for LoRA adapters. One frozen base model, many small task adapters found, checked,
attached, swapped, combined and merged.

Only re-exports the public API. Every name is imported on first use, so `import adapterhub` (and the CLI's
read-only commands) never pay for torch, transformers or SQLAlchemy they do not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # registry and domain types
    "Registry": "adapterhub.store.registry",
    "AdapterCard": "adapterhub.card",
    "AdapterRef": "adapterhub.card",
    "BaseModelInfo": "adapterhub.card",
    "EvalScore": "adapterhub.card",
    "Fingerprint": "adapterhub.card",
    "FileEntry": "adapterhub.card",
    "Lineage": "adapterhub.card",
    "ParentLink": "adapterhub.card",
    "SearchQuery": "adapterhub.card",
    "SearchResult": "adapterhub.card",
    # the PEFT format
    "load_adapter": "adapterhub.peft_weights",
    "save_adapter": "adapterhub.peft_weights",
    "check_adapter": "adapterhub.adapter_check",
    # compatibility, loading and the runtime
    "validate": "adapterhub.compatibility",
    "CompatibilityReport": "adapterhub.compatibility",
    "load": "adapterhub.loading",
    "attach": "adapterhub.lora.attach",
    "detach": "adapterhub.lora.attach",
    "set_active": "adapterhub.lora.attach",
    "activation": "adapterhub.lora.attach",
    "list_adapters": "adapterhub.lora.attach",
    "fuse": "adapterhub.lora.attach",
    "unfuse": "adapterhub.lora.attach",
    "route": "adapterhub.lora.routing",
    "add_trainable": "adapterhub.lora.trainable",
    "AdapterCache": "adapterhub.lora.cache",
    # merge, compose, extract
    "merge": "adapterhub.lora.merge",
    "compose": "adapterhub.lora.compose",
    "extract": "adapterhub.lora.extract",
    # tuning and measuring
    "tune": "adapterhub.tuning.train",
    "evaluate": "adapterhub.tuning.evaluate",
    # sharing
    "push": "adapterhub.hub.client",
    "pull": "adapterhub.hub.client",
    "remote_search": "adapterhub.hub.client",
    # errors
    "AdapterHubError": "adapterhub.errors",
    "AdapterNotFound": "adapterhub.errors",
    "IncompatibleAdapter": "adapterhub.errors",
    "IntegrityError": "adapterhub.errors",
    "InvalidAdapter": "adapterhub.errors",
    "PickleRefused": "adapterhub.errors",
    "UnsupportedFeature": "adapterhub.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'adapterhub' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .adapter_check import check_adapter
    from .card import (
        AdapterCard,
        AdapterRef,
        BaseModelInfo,
        EvalScore,
        FileEntry,
        Fingerprint,
        Lineage,
        ParentLink,
        SearchQuery,  # fmt: skip
        SearchResult,
    )
    from .compatibility import CompatibilityReport, validate
    from .errors import (
        AdapterHubError,
        AdapterNotFound,
        IncompatibleAdapter,
        IntegrityError,
        InvalidAdapter,
        PickleRefused,  # fmt: skip
        UnsupportedFeature,
    )
    from .hub.client import pull, push, remote_search
    from .loading import load
    from .lora.attach import activation, attach, detach, fuse, list_adapters, set_active, unfuse
    from .lora.cache import AdapterCache
    from .lora.compose import compose
    from .lora.extract import extract
    from .lora.merge import merge
    from .lora.routing import route
    from .lora.trainable import add_trainable
    from .peft_weights import load_adapter, save_adapter
    from .store.registry import Registry
    from .tuning.evaluate import evaluate
    from .tuning.train import tune
