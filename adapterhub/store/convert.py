"""Rows to domain types: the only place that turns SQLAlchemy rows into the pydantic cards the API returns."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from ..card import AdapterCard, BaseModelInfo, BaseModelRefInfo, EvalScore, FileEntry, Lineage, ScoreProvenance, ScoreSource
from .bases import base_declared_by, verified_base
from .orm import AdapterRow, AliasRow, BaseEvalScoreRow, BaseModelRow, EvalScoreRow, FileRow, RepoRow, TagRow, all_metadata


def card_query() -> sa.Select[AdapterRow]:
    """SELECT adapters with everything a card needs loaded in a few batched queries (no N+1)."""
    return sa.select(AdapterRow).options(
        selectinload(AdapterRow.repo).selectinload(RepoRow.aliases),
        selectinload(AdapterRow.base_model),
        selectinload(AdapterRow.scores),
        selectinload(AdapterRow.files),
        selectinload(AdapterRow.tags),
    )


def _utc(dt: datetime) -> datetime:
    # SQLite returns naive datetimes; they were written as UTC.
    return dt.replace(tzinfo=timezone.utc) if dt is not None and dt.tzinfo is None else dt


def card(_s: Session, row: AdapterRow) -> AdapterCard:
    aliases = sorted(a.alias for a in row.repo.aliases if a.adapter_id == row.id)
    if row.is_latest:
        aliases = ["latest", *aliases]
    base = row.base_model
    return AdapterCard(
        namespace=row.repo.namespace,
        name=row.repo.name,
        version=row.version,
        aliases=aliases,
        task=row.task,
        method=row.method,
        rank=row.rank,
        rank_pattern=dict(row.rank_pattern or {}),
        alpha=row.alpha,
        use_rslora=row.use_rslora,
        target_modules=list(row.target_modules or []),
        description=row.description or "",
        license=row.license,
        tags=sorted(t.tag for t in row.tags),
        base_model=BaseModelRefInfo(
            name=base.name,
            arch_hash=base.arch_hash,
            content_hash=base.content_hash,
            verified=verified_base(base),
            name_declared_by=base_declared_by(base),
        )
        if base
        else None,  # fmt: skip
        base_model_name_or_path=row.base_model_name_or_path,
        peft_task_type=row.peft_task_type,
        scores=[score(x) for x in sorted(row.scores, key=lambda x: (x.dataset, x.metric, x.split, x.source))],
        files=[FileEntry(path=f.path, sha256=f.sha256, size=f.size) for f in sorted(row.files, key=lambda f: f.path)],
        lineage=Lineage.model_validate(row.lineage) if row.lineage else None,
        created_at=_utc(row.created_at),
    )


def score(x: EvalScoreRow | BaseEvalScoreRow) -> EvalScore:
    return EvalScore(
        dataset=x.dataset, metric=x.metric, value=x.value, split=x.split, higher_is_better=x.higher_is_better,
        source=ScoreSource(x.source or "reported"),
        provenance=ScoreProvenance.model_validate(x.provenance) if x.provenance else None,
    )  # fmt: skip


def base_info(row: BaseModelRow) -> BaseModelInfo:
    return BaseModelInfo(
        id=row.id,
        name=row.name,
        arch_hash=row.arch_hash,
        content_hash=row.content_hash,
        parameter_count=row.parameter_count,
        dtype=row.dtype,
        model_type=row.model_type,
        lineage=Lineage.model_validate(row.lineage) if row.lineage else None,
        scores=[score(x) for x in sorted(row.scores, key=lambda x: (x.dataset, x.metric, x.split))],
        created_at=_utc(row.created_at),
    )


def tables_with_blob_refs() -> list[sa.Table]:
    """Every table whose `sha256` column names a blob (adapter files; hub commit files when that module is loaded)."""
    return [t for t in all_metadata().sorted_tables if "sha256" in t.c]


def cards_by_id(s: Session, ids: Sequence[int]) -> dict[int, AdapterCard]:
    """Cards for many adapters at once, read with plain column SELECTs (one per table) instead of ORM objects: a search
    page of 100 results builds ~600 ORM instances otherwise, most of its time. The rows quack like the ORM rows, so
    `card` stays the one conversion rule."""
    if not ids:
        return {}
    a, r, b = AdapterRow.__table__, RepoRow.__table__, BaseModelRow.__table__
    adapters = s.execute(sa.select(a, r.c.namespace, r.c.name).join(r, r.c.id == a.c.repo_id).where(a.c.id.in_(ids))).all()
    repo_ids = {x.repo_id for x in adapters}
    base_ids = {x.base_model_id for x in adapters if x.base_model_id is not None}
    bases = {x.id: x for x in s.execute(sa.select(b).where(b.c.id.in_(base_ids)))} if base_ids else {}

    def by(table: sa.FromClause, key: str, keys: set[int] | Sequence[int]) -> dict[int, list[Any]]:
        out: dict[int, list[Any]] = {}
        for row in s.execute(sa.select(table).where(table.c[key].in_(keys))):
            out.setdefault(row._mapping[key], []).append(row)
        return out

    aliases = by(AliasRow.__table__, "repo_id", repo_ids)
    scores, files, tags = (by(t.__table__, "adapter_id", ids) for t in (EvalScoreRow, FileRow, TagRow))
    cards = {}
    for x in adapters:
        row = SimpleNamespace(
            **x._mapping,
            repo=SimpleNamespace(namespace=x.namespace, name=x.name, aliases=aliases.get(x.repo_id, [])),
            base_model=bases.get(x.base_model_id),
            scores=scores.get(x.id, []),
            files=files.get(x.id, []),
            tags=tags.get(x.id, []),
        )
        cards[x.id] = card(s, cast(AdapterRow, row))
    return cards
