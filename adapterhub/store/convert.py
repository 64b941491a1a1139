"""Rows to domain types: the only place that turns SQLAlchemy rows into the pydantic cards the API returns."""

from __future__ import annotations

from datetime import timezone

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from ..card import AdapterCard, BaseModelInfo, BaseModelRefInfo, EvalScore, FileEntry, Lineage
from .orm import AdapterRow, BaseModelRow, RepoRow, all_metadata
from .records import base_declared_by, verified_base


def card_query() -> sa.Select[tuple[AdapterRow]]:
    """SELECT adapters with everything a card needs loaded in a few batched queries (no N+1)."""
    return sa.select(AdapterRow).options(
        selectinload(AdapterRow.repo).selectinload(RepoRow.aliases),
        selectinload(AdapterRow.base_model),
        selectinload(AdapterRow.scores),
        selectinload(AdapterRow.files),
        selectinload(AdapterRow.tags),
    )


def _utc(dt):  # type: ignore[no-untyped-def]
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
        base_model=BaseModelRefInfo(name=base.name, arch_hash=base.arch_hash, content_hash=base.content_hash,
                                    verified=verified_base(base), name_declared_by=base_declared_by(base)) if base else None,  # fmt: skip
        base_model_name_or_path=row.base_model_name_or_path,
        peft_task_type=row.peft_task_type,
        scores=[
            EvalScore(dataset=x.dataset, metric=x.metric, value=x.value, split=x.split, higher_is_better=x.higher_is_better)
            for x in sorted(row.scores, key=lambda x: (x.dataset, x.metric, x.split))
        ],
        files=[FileEntry(path=f.path, sha256=f.sha256, size=f.size) for f in sorted(row.files, key=lambda f: f.path)],
        lineage=Lineage.model_validate(row.lineage) if row.lineage else None,
        created_at=_utc(row.created_at),
    )


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
        created_at=_utc(row.created_at),
    )


def tables_with_blob_refs() -> list[sa.Table]:
    """Every table whose `sha256` column names a blob (adapter files; hub commit files when that module is loaded)."""
    return [t for t in all_metadata().sorted_tables if "sha256" in t.c]
