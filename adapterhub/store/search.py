"""Search as SQL: every filter becomes a WHERE clause on indexed columns, so 100,000 adapters answer in milliseconds."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from ..card import SearchQuery
from ..errors import UsageError
from . import convert
from .orm import AdapterRow, BaseModelRow, EvalScoreRow, TagRow


def _split_key(key: str) -> tuple[str, str]:
    dataset, sep, metric = key.rpartition("/")
    if not sep or not dataset or not metric:
        raise UsageError(f"bad score key {key!r}", hint="use DATASET/METRIC, e.g. sst2/accuracy")
    return dataset, metric


def _passes(score: type[EvalScoreRow] | EvalScoreRow, threshold: float) -> sa.ColumnElement[bool]:
    """At least as good as `threshold`, in the metric's own direction."""
    return sa.or_(
        sa.and_(score.higher_is_better == sa.true(), score.value >= threshold),
        sa.and_(score.higher_is_better == sa.false(), score.value <= threshold),
    )


def _restrict(match: sa.Select[tuple[int]], column: sa.ColumnElement[int], correlated: bool) -> sa.ColumnElement[bool]:
    if correlated:
        return sa.exists(match.where(column == AdapterRow.id))
    return AdapterRow.id.in_(match)


def run_search(s: Session, q: SearchQuery) -> tuple[int, Sequence[AdapterRow]]:
    """(number of matches, the first `limit` rows in the requested order).

    Tag and score filters probe covering indexes; text search scans one pre-lowered column, never a join.
    """
    conds: list[sa.ColumnElement[bool]] = []
    if not q.all_versions:
        conds.append(AdapterRow.is_latest == sa.true())
    if q.task:
        conds.append(AdapterRow.task == q.task)
    if q.method:
        conds.append(AdapterRow.method == q.method.value)
    if q.rank_min is not None:
        conds.append(AdapterRow.rank >= q.rank_min)
    if q.rank_max is not None:
        conds.append(AdapterRow.rank <= q.rank_max)
    if q.text:
        escaped = q.text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conds.append(AdapterRow.search_text.like(f"%{escaped}%", escape="\\"))
    if q.base:
        key = q.base.lower()
        by_hash = len(key) >= 6 and all(c in "0123456789abcdef" for c in key)
        base_ids = sa.select(BaseModelRow.id).where(
            sa.or_(
                BaseModelRow.name == q.base,
                BaseModelRow.content_hash.startswith(key) if by_hash else sa.false(),
                BaseModelRow.arch_hash.startswith(key) if by_hash else sa.false(),
            )
        )
        conds.append(AdapterRow.base_model_id.in_(base_ids))
    # With a selective column filter (task) the planner should walk those adapters and probe each tag/score
    # (EXISTS into a covering index); without one, walking the tag/score index first (IN) touches far fewer rows.
    drive_from_adapters = bool(q.task)
    for tag in q.tags:
        match = sa.select(TagRow.adapter_id).where(TagRow.tag == tag)
        conds.append(_restrict(match, TagRow.adapter_id, drive_from_adapters))
    for key, threshold in q.min_scores.items():
        ds, metric = _split_key(key)
        match = sa.select(EvalScoreRow.adapter_id).where(
            EvalScoreRow.dataset == ds, EvalScoreRow.metric == metric, _passes(EvalScoreRow, threshold)
        )
        conds.append(_restrict(match, EvalScoreRow.adapter_id, drive_from_adapters))
    total = s.scalar(sa.select(sa.func.count(AdapterRow.id)).where(*conds)) or 0
    stmt = sa.select(AdapterRow.id).where(*conds)
    if q.sort:
        ds, metric = _split_key(q.sort)
        sc = aliased(EvalScoreRow)
        stmt = stmt.outerjoin(sc, sa.and_(sc.adapter_id == AdapterRow.id, sc.dataset == ds, sc.metric == metric))
        # best first in the metric's own direction; adapters without the score go last
        order = sa.case((sc.higher_is_better == sa.false(), sc.value), else_=-sc.value)
        stmt = stmt.order_by(sc.value.is_(None), order, AdapterRow.id.desc())
    else:
        stmt = stmt.order_by(AdapterRow.created_at.desc(), AdapterRow.id.desc())
    ids = list(s.scalars(stmt.limit(q.limit)))
    if not ids:
        return total, []
    rows = {r.id: r for r in s.scalars(convert.card_query().where(AdapterRow.id.in_(ids)))}
    return total, [rows[i] for i in ids if i in rows]
