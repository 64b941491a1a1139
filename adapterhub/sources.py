"""Where adapters come from: the one place a reference becomes a folder and a card, and the default registry is built.

A reference is a PEFT folder, a registry reference `namespace/name[@version|@alias]`, or an adapter already
resolved (`ResolvedAdapter`, passed through). Everything that takes "an adapter" (validate, load, attach, the cache,
merge, compose) resolves it here, so the rules (what counts as a path, which error a bad one gets) are written once.
Sits above the store (it opens a `Registry`) and below loading, lora and the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .card import AdapterCard, AdapterRef
from .errors import InvalidAdapter, InvalidReference

if TYPE_CHECKING:
    from .peft_format import AdapterLayout
    from .store.registry import Registry

__all__ = ["AdapterSpec", "ResolvedAdapter", "default_registry", "needs_registry", "registry_or_default", "resolve"]


@dataclass(frozen=True)
class ResolvedAdapter:
    """An adapter found: its local folder, its card when it came from the registry, and its parsed layout when a
    check already read it (so loading does not parse it again)."""

    folder: Path
    card: AdapterCard | None = None
    layout: AdapterLayout | None = None
    asked: str = ""  # the reference as given (`ns/name` stays unversioned), or the folder path

    @property
    def ref(self) -> str | None:
        """`namespace/name@version` for a registry adapter, None for a bare folder."""
        return self.card.ref if self.card is not None else None

    @property
    def label(self) -> str:
        """The registry ref, else the folder's absolute path: what lineage records and the cache keys on."""
        return self.card.ref if self.card is not None else str(self.folder.resolve())

    @property
    def folder_name(self) -> str:
        """The folder's own name (an attached folder's default name), without a filesystem call."""
        return Path(os.path.abspath(self.folder)).name


AdapterSpec = str | Path | ResolvedAdapter


def default_registry(
    home: Path | str | None = None, database_url: str | None = None, *, blobs: str | None = None, auto_migrate: bool = True
) -> Registry:
    """The registry at `home` / `database_url` / `blobs`, each defaulting to ADAPTERHUB_HOME / ADAPTERHUB_DATABASE_URL /
    ADAPTERHUB_BLOBS (migrated on first use unless told not to): the one place a registry is opened for callers that
    were given none."""
    from .store.registry import Registry

    return Registry(home, database_url, blobs=blobs, auto_migrate=auto_migrate)


def registry_or_default(registry: Registry | None) -> Registry:
    """`registry` as given, or the default one."""
    return registry if registry is not None else default_registry()


def needs_registry(adapters: Sequence[AdapterSpec]) -> bool:
    """Whether any adapter is a registry reference (folders and resolved adapters need no database)."""
    return any(not isinstance(a, ResolvedAdapter) and not Path(a).is_dir() for a in adapters)


def resolve(adapter: AdapterSpec, registry: Registry | None = None) -> ResolvedAdapter:
    """A PEFT folder as is, or a registry reference -> its local folder and card (the default registry unless
    `registry` is given). A file, or a path (`./x`, `/x`, `x/`) with no folder there: InvalidAdapter saying so; a
    name that is neither a folder here nor a reference's form: InvalidReference (a usage error) saying both; an
    unknown reference: AdapterNotFound."""
    if isinstance(adapter, ResolvedAdapter):
        return adapter
    path = Path(adapter)
    text = str(adapter)
    if path.is_dir():
        return ResolvedAdapter(path, asked=text)
    hint = "pass a PEFT adapter folder or a registered namespace/name[@version|@alias]"
    if path.exists():
        raise InvalidAdapter(text, ["a file, not an adapter folder"], hint="pass the folder holding adapter_config.json")
    if text.startswith((".", "/", "~", os.sep)) or text.endswith(os.sep):
        raise InvalidAdapter(text, ["no such folder"], hint=hint)
    try:
        AdapterRef.parse(text)
    except InvalidReference:  # neither a folder here nor a reference's form: a usage error (exit 2) that says both
        raise InvalidReference(text, "no such folder, and not a registry reference", what="adapter", hint=hint) from None
    reg = registry_or_default(registry)
    card = reg.get(text)
    return ResolvedAdapter(Path(reg.adapter_path(card.ref)), card, asked=text)
