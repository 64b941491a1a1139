"""adapterhub as vLLM's adapter source: a `LoRAResolver` registered on the `vllm.general_plugins` entry point.

With `VLLM_PLUGINS=adapterhub`, `VLLM_ALLOW_RUNTIME_LORA_UPDATING=true` and `ADAPTERHUB_HOME` (and optionally
`ADAPTERHUB_REMOTE` / `ADAPTERHUB_TOKEN`), `vllm serve BASE --enable-lora` answers a request for
`model: "team/sentiment@prod"` by resolving the name or alias in the registry (pulling and verifying it from the
remote the first time), checking it against the served base (module shapes, recorded base fingerprint), and returning
a `LoRARequest` for the registry's folder. An adapter that does not fit is refused with one log line (vLLM answers 404).

The base checked against is `base_model_name` when it is a local folder (what `vllm serve /path` passes), else
`ADAPTERHUB_VLLM_BASE`. vLLM is imported only inside `register`, so adapterhub never depends on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("vllm.adapterhub")  # under vLLM's logger, so its handlers print our lines with its own
RESOLVER_NAME = "adapterhub"


class _Resolver:
    """Name -> checked registry folder; one `ModelResolver` (and its validation memo) per served base."""

    def __init__(self) -> None:
        self._by_base: dict[str, Any] = {}

    def _model_resolver(self, base_model_name: str) -> Any:
        from .deploy.models import ModelResolver
        from .store.registry import Registry

        got = self._by_base.get(base_model_name)
        if got is None:
            base = Path(base_model_name) if Path(base_model_name).is_dir() else Path(os.environ.get("ADAPTERHUB_VLLM_BASE", ""))
            if not (base / "config.json").is_file():
                raise FileNotFoundError(f"cannot check adapters: {base_model_name!r} is not a local model folder and "
                                        "ADAPTERHUB_VLLM_BASE is not set")  # fmt: skip
            got = ModelResolver(base, base_model_name, Registry(), remote=os.environ.get("ADAPTERHUB_REMOTE") or None,
                                token=os.environ.get("ADAPTERHUB_TOKEN") or None)  # fmt: skip
            self._by_base[base_model_name] = got
        return got

    def resolve(self, base_model_name: str, lora_name: str) -> tuple[str, str, int] | None:
        """(name, folder, int id) for a registry adapter that fits the base; None (with a log line) otherwise."""
        from .errors import AdapterHubError, IncompatibleAdapter

        try:
            r = self._model_resolver(base_model_name)
            card = r.card(lora_name)
            r.check(card)
            folder = r.registry.adapter_path(card.ref)
        except IncompatibleAdapter as exc:
            log.warning("adapterhub: refusing %s for %s: %s", lora_name, base_model_name, exc)
            return None
        except (AdapterHubError, FileNotFoundError) as exc:
            log.info("adapterhub: %s not resolved: %s", lora_name, exc)
            return None
        lora_id = int(hashlib.sha256(card.ref.encode()).hexdigest()[:7], 16) + 1  # stable, positive, per version
        return lora_name, str(folder), lora_id


def register() -> None:
    """The `vllm.general_plugins` entry point: register the resolver with vLLM's LoRAResolverRegistry."""
    from vllm.lora.request import LoRARequest
    from vllm.lora.resolver import LoRAResolver, LoRAResolverRegistry

    core = _Resolver()

    class AdapterHubResolver(LoRAResolver):  # type: ignore[misc]
        async def resolve_lora(self, base_model_name: str, lora_name: str) -> Any:
            found = await asyncio.to_thread(core.resolve, base_model_name, lora_name)
            if found is None:
                return None
            name, path, lora_id = found
            return LoRARequest(lora_name=name, lora_int_id=lora_id, lora_path=path)

    if RESOLVER_NAME not in LoRAResolverRegistry.get_supported_resolvers():
        LoRAResolverRegistry.register_resolver(RESOLVER_NAME, AdapterHubResolver())
