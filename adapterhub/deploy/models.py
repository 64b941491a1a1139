"""Which adapter a request's `model` names, found, fetched and checked before any row is queued.

`model` is the base's name (the base alone), `ns/name`, `ns/name@version|alias`, or weighted adapters
`ns/a:0.7+ns/b:0.3` (composed exactly, by concatenating the factors: base + 0.7·Δa + 0.3·Δb). A weighted model's
key names its versions and weights (`composed_key`); the engine's cache composes it in memory when it makes it
resident and drops it on eviction like any adapter, so no composed folder is ever written.
An adapter named for the first time comes from the local registry, else is pulled from `--remote` (every byte
verified by `pull`), and is validated against the served base (headers and the recorded base fingerprint) once per
version. What leaves here is a cache key the engine's `AdapterCache` understands: `ns/name@version` or a composed key.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..card import AdapterCard, AdapterRef, SearchQuery
from ..errors import AdapterHubError, IncompatibleAdapter, NotFound, PermissionDenied, UsageError

if TYPE_CHECKING:
    from ..store.registry import Registry

log = logging.getLogger("adapterhub.deploy")
# A whole model string: no spaces, no control characters, no trailing newline (fullmatch, never `$`).
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/@:+-]{0,399}")
MAX_COMBINED = 8  # adapters in one weighted `a:0.7+b:0.3` model
NAME_TTL_S = 2.0  # `ns/name` and aliases are looked up again after this; `ns/name@3` never changes


class ModelNotFound(NotFound):
    """The request's `model` is neither the base nor an adapter this server can find (OpenAI: 404 model_not_found)."""

    def __init__(self, model: str) -> None:
        super().__init__(f"the model {_show(model)} does not exist or you do not have access to it",
                         hint="GET /v1/models lists what this server serves")  # fmt: skip


@dataclass(frozen=True)
class Resolved:
    key: str | None  # what the engine makes resident: `ns/name@version` or a composed key; None: the base
    refs: tuple[str, ...] = ()  # the registry versions behind it
    folders: tuple[Path, ...] = ()  # each ref's local folder, found here so the engine thread never queries the registry

    def known(self) -> dict[str, Path]:
        """version -> folder, for the engine cache's `known` (a composed key is made from its versions' folders)."""
        return dict(zip(self.refs, self.folders, strict=True))


def composed_key(parts: list[tuple[str, float]]) -> str:
    """The cache key of versions combined with weights: `ns/a@1:0.7+ns/b@2:0.3` (exact float reprs)."""
    return "+".join(f"{ref}:{w!r}" for ref, w in parts)


def composed_parts(key: str) -> list[tuple[str, float]] | None:
    """The (version, weight) pairs of a `composed_key`; None for any other key (a version ref or a folder)."""
    if ":" not in key or Path(key).is_absolute():
        return None
    out: list[tuple[str, float]] = []
    for item in key.split("+"):
        ref, _, w = item.rpartition(":")
        try:
            out.append((ref, float(w)))
        except ValueError:
            return None
    return out


class _Known:
    """Registry stand-in for `validate`: answers with the card already fetched (no second lookup per request)."""

    def __init__(self, card: AdapterCard, folder: Path) -> None:
        self.card, self.folder = card, folder

    def get(self, ref: Any) -> AdapterCard:
        return self.card

    def adapter_path(self, ref: Any) -> Path:
        return self.folder


def _show(model: str) -> str:
    return ascii(model[:120])


class ModelResolver:
    """Turns `model` strings into cache keys; thread-safe (called from the request threads)."""

    def __init__(self, base: Path, base_name: str, registry: Registry, *, remote: str | None = None,
                 token: str | None = None) -> None:  # fmt: skip
        self.base = base
        self.base_name = base_name
        self.registry = registry
        self.remote = remote.rstrip("/") if remote else None
        self.token = token
        # composed folders that servers before this version wrote (one per distinct weight, never removed)
        shutil.rmtree(registry.home / "tmp" / "deploy-combined", ignore_errors=True)
        self.base_names = {base_name, "base", base.name}
        self._checked: dict[str, None] = {}  # versions validated against the base
        self._folders: dict[str, Path] = {}  # version -> its materialised folder
        self._cards: dict[str, tuple[float, AdapterCard]] = {}  # model string -> (when looked up, card)
        self._pulled: dict[str, str] = {}  # model string -> version pulled from the remote
        self._lock = threading.Lock()
        self._arch: str | None = None

    # --- resolving ---------------------------------------------------------------------------------------------

    def resolve(self, model: str) -> Resolved:
        if not _MODEL.fullmatch(model):
            raise ModelNotFound(model)
        if model in self.base_names:
            return Resolved(None)
        if "+" in model or ":" in model:
            return self._combined(model)
        card = self.card(model)
        folder = self.folder(card)
        self.check(card, folder)
        return Resolved(card.ref, (card.ref,), (folder,))

    def card(self, text: str) -> AdapterCard:
        """The registry card `text` names; pulled from the remote the first time when it is not local."""
        try:
            ref = AdapterRef.parse(text)
        except UsageError:
            raise ModelNotFound(text) from None
        now = time.monotonic()
        hit = self._cards.get(text)
        if hit is not None and (ref.version is not None or now - hit[0] < NAME_TTL_S):
            return hit[1]
        try:
            card = self.registry.get(text)
            if len(self._cards) >= 100_000:
                self._cards.clear()
            self._cards[text] = (now, card)
            return card
        except NotFound:
            if self.remote is None:
                raise ModelNotFound(text) from None
        with self._lock:  # one pull per name, even when a burst names it at once
            done = self._pulled.get(text)
            if done is not None:
                return self.registry.get(done)
            card = self._pull(text)
            self._pulled[text] = card.ref
            return card

    def _pull(self, text: str) -> AdapterCard:
        from ..hub.client import pull

        ref = AdapterRef.parse(text)
        sel = ref.alias if ref.alias is not None else (str(ref.version) if ref.version is not None else None)
        spec = ref.full_name if sel in (None, "latest") else f"{ref.full_name}@{sel}"
        try:
            card = pull(spec, remote=self.remote, token=self.token, registry=self.registry)
        except (NotFound, PermissionDenied):  # private without a token looks exactly like absent, as on the hub
            raise ModelNotFound(text) from None
        log.info("pulled %s from %s as %s", spec, self.remote, card.ref)
        return card

    def folder(self, card: AdapterCard) -> Path:
        """The version's files as a local folder (materialised from the blob store once)."""
        got = self._folders.get(card.ref)
        if got is None:
            got = self._folders[card.ref] = self.registry.adapter_path(card.ref)
        return got

    def check(self, card: AdapterCard, folder: Path | None = None) -> None:
        """Validate a version against the served base once (headers, recorded fingerprint); IncompatibleAdapter."""
        if card.ref in self._checked:
            return
        from ..compatibility import validate

        shim: Any = _Known(card, folder or self.folder(card))
        report = validate(card.ref, self.base, registry=shim)
        if not report.ok:
            raise IncompatibleAdapter(card.ref, self.base_name, report.problems())
        for w in report.warnings:
            log.warning("%s: %s", card.ref, w)
        self._checked[card.ref] = None

    def _combined(self, model: str) -> Resolved:
        items = model.split("+")
        if len(items) > MAX_COMBINED:  # before any lookup: nine names must not cost nine pulls from --remote
            raise UsageError(f"combine at most {MAX_COMBINED} adapters in one model", hint="e.g. ns/a:0.7+ns/b:0.3")
        parts: list[tuple[AdapterCard, float]] = []
        for item in items:
            ref, sep, w = item.rpartition(":")
            if not sep:
                ref, w = item, "1"
            try:
                weight = float(w)
            except ValueError:
                raise ModelNotFound(model) from None
            if not (-100.0 <= weight <= 100.0) or not ref:
                raise ModelNotFound(model)
            card = self.card(ref)
            self.check(card)
            parts.append((card, weight))
        if not 1 <= len(parts) <= MAX_COMBINED:
            raise UsageError(f"combine at most {MAX_COMBINED} adapters in one model", hint="e.g. ns/a:0.7+ns/b:0.3")
        if len({c.ref for c, _ in parts}) != len(parts):
            raise UsageError(f"an adapter is named twice in {_show(model)}", hint="name each adapter once")
        key = composed_key([(c.ref, w) for c, w in parts])
        return Resolved(key, tuple(c.ref for c, _ in parts), tuple(self.folder(c) for c, _ in parts))

    # --- listing -----------------------------------------------------------------------------------------------

    def arch_hash(self) -> str:
        if self._arch is None:
            from ..fingerprint import arch_hash

            self._arch = arch_hash(self.base)
        return self._arch

    def list_models(self, created: int) -> list[dict[str, Any]]:
        """The base, then every registered adapter whose base fingerprint is this base's (local, then remote)."""
        out: list[dict[str, Any]] = [{"id": self.base_name, "object": "model", "created": created, "owned_by": "adapterhub",
                                      "root": self.base_name, "parent": None}]  # fmt: skip
        seen: set[str] = set()
        query = SearchQuery(base=self.arch_hash(), limit=1000)
        sources: list[tuple[str, list[AdapterCard]]] = [("local", self.registry.search(query).items)]
        if self.remote is not None:
            try:
                from ..hub.client import remote_search

                sources.append(("remote", remote_search(self.remote, query, token=self.token).items))
            except AdapterHubError as exc:
                log.warning("remote search failed: %s", exc)
        for source, cards in sources:
            for c in cards:
                if c.full_name in seen:
                    continue
                seen.add(c.full_name)
                out.append({
                    "id": c.full_name, "object": "model", "created": int(c.created_at.timestamp()), "owned_by": c.namespace,
                    "root": self.base_name, "parent": self.base_name, "task": c.task, "version": c.version,
                    "aliases": c.aliases, "scores": {s.key: s.value for s in c.scores}, "source": source,
                })  # fmt: skip
        return out
