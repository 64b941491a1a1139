"""Recording one adapter version inside a caller's transaction: shared by `Registry.add`, the hub's commits and
`pull`, so every path issues version numbers, latest flags and search text the same way."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..card import BaseModelRefInfo, EvalScore, FileEntry, Lineage
from ..peft_format import AdapterLayout
from .orm import AdapterRow, BaseModelRow, EvalScoreRow, FileRow, RepoRow, TagRow


@dataclass
class VersionFields:
    """What a person says about an adapter version (the layout says the rest)."""

    task: str
    description: str = ""
    license: str | None = None
    tags: Iterable[str] = ()
    scores: Sequence[EvalScore] = ()
    lineage: Lineage | None = None
    files: Sequence[FileEntry] = field(default_factory=list)


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


def lock_repo(s: Session, namespace: str, name: str) -> RepoRow:
    """Get or create the repo row and lock it for this transaction, so version numbers are issued one at a time."""
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    s.execute(insert(RepoRow).values(namespace=namespace, name=name, last_version=0, private=False).on_conflict_do_nothing())
    q = sa.select(RepoRow).where(RepoRow.namespace == namespace, RepoRow.name == name).execution_options(populate_existing=True)
    if s.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    return s.scalars(q).one()


def record_version(
    s: Session, namespace: str, name: str, layout: AdapterLayout, fields: VersionFields, base: BaseModelRow | None
) -> AdapterRow:
    """Insert the next version of `namespace/name` with its files, scores and tags; it becomes `latest`."""
    cfg = layout.config
    tags = sorted(set(fields.tags))
    repo = lock_repo(s, namespace, name)
    repo.last_version += 1
    s.execute(sa.update(AdapterRow).where(AdapterRow.repo_id == repo.id).values(is_latest=False))
    row = AdapterRow(
        repo=repo, version=repo.last_version, is_latest=True, task=fields.task.strip(), method=layout.method,
        rank=cfg.r, rank_pattern={m: r for m, r in layout.rank_by_module.items() if r != cfg.r},
        alpha=float(cfg.lora_alpha), use_rslora=cfg.use_rslora, target_modules=layout.target_module_names,
        description=fields.description, license=fields.license, base_model=base,
        search_text=" ".join([f"{namespace}/{name}", fields.task, fields.description, *tags]).lower(),
        base_model_name_or_path=cfg.base_model_name_or_path, peft_task_type=cfg.task_type,
        lineage=fields.lineage.model_dump(mode="json") if fields.lineage else None,
    )  # fmt: skip
    row.files = [FileRow(path=e.path, sha256=e.sha256, size=e.size) for e in sorted(fields.files, key=lambda e: e.path)]
    row.scores = [
        EvalScoreRow(dataset=x.dataset, metric=x.metric, split=x.split, value=x.value, higher_is_better=x.higher_is_better)
        for x in fields.scores
    ]
    row.tags = [TagRow(tag=t) for t in tags]
    s.add(row)
    s.flush()
    return row
