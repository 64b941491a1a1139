"""What a base model's name means: a base whose weights this registry fingerprinted (verified) may be found by
name; one an incoming adapter merely declared (a hub commit, a pull) is known by its hashes only, and remembers who
declared it. Used by recording (`records`), reading (`convert`) and search alike."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..card import BaseModelRefInfo
from .orm import BaseModelRow

# A base known only by the hashes an adapter declared (a hub commit, a pull): its weights were never read here, so its
# name is a label chosen by whoever pushed, and search by name ignores it. `Registry.register_base` (or `add --base`)
# fingerprints the weights and replaces the marker with the real dtype.
DECLARED_DTYPE = "unknown"
_DECLARED = "declared"  # lineage method of a declared base row; params["by"] names who declared it


def verified_base(row: BaseModelRow) -> bool:
    """Whether this registry fingerprinted the base's weights itself (its name may then be searched by)."""
    return row.dtype != DECLARED_DTYPE


def base_declared_by(row: BaseModelRow) -> str:
    """Who gave the base its name: this registry (from the weights), or the push or pull that declared it."""
    if verified_base(row):
        return "this registry (fingerprinted from the weights)"
    lineage = row.lineage or {}
    by = lineage.get("params", {}).get("by") if lineage.get("method") == _DECLARED else None
    return str(by) if by else "a push or pull (unverified)"


def base_named(name: str) -> sa.ColumnElement[bool]:
    """The rule for finding a base by name: a name is a label, so it identifies only a base whose weights this registry
    fingerprinted, never one that a push or pull merely declared (anyone with a write token can name theirs
    meta-llama/Llama-3-8B). Hashes identify any base."""
    return sa.and_(BaseModelRow.name == name, BaseModelRow.dtype != DECLARED_DTYPE)


def declared_base(s: Session, ref: BaseModelRefInfo, declared_by: str) -> BaseModelRow:
    """The row for the base an incoming adapter declares: the known row with that content hash, else a new
    unverified one whose name is the declared label and which remembers who declared it."""
    base = s.scalar(sa.select(BaseModelRow).where(BaseModelRow.content_hash == ref.content_hash))
    if base is None:
        # Only the identity travels with an adapter; size and dtype stay unknown until the weights are registered.
        base = BaseModelRow(name=ref.name, arch_hash=ref.arch_hash, content_hash=ref.content_hash, parameter_count=0,
                            dtype=DECLARED_DTYPE, lineage={"method": _DECLARED, "params": {"by": declared_by}})  # fmt: skip
        s.add(base)
    return base
