"""Search as SQL: every filter becomes a WHERE clause on indexed columns, so 100,000 adapters answer in milliseconds."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from ..card import SearchQuery
from ..errors import UsageError
from . import convert
from .orm import AdapterRow, BaseModelRow, EvalScoreRow, RepoRow, TagRow


def _split_key(key: str) -> tuple[str, str]:
    dataset, sep, metric = key.rpartition("/")
    if not sep or not dataset or not metric:
        raise UsageError(f"bad score key {key!r}", hint="use DATASET/METRIC, e.g. sst2/accuracy")
    return dataset, metric


def _passes(score: type[EvalScoreRow] | EvalScoreRow, threshold: float) -> sa.ColumnElement[bool]:
    """At least as good as `threshold`, in the metric's own direction."""
    return sa.or_(
        sa.and_(score.higher_is_better.is_(True), score.value >= threshold),
        sa.and_(score.higher_is_better.is_(False), score.value <= threshold),
    )


def run_search(s: Session, q: SearchQuery) -> tuple[int, Sequence[AdapterRow]]:
    """(number of matches, the first `limit` rows in the requested order)."""
    stmt = sa.select(AdapterRow.id).join(RepoRow, AdapterRow.repo_id == RepoRow.id)
    if not q.all_versions:
        stmt = stmt.where(AdapterRow.is_latest.is_(True))
    if q.task:
        stmt = stmt.where(AdapterRow.task == q.task)
    if q.method:
        stmt = stmt.where(AdapterRow.method == q.method.value)
    if q.rank_min is not None:
        stmt = stmt.where(AdapterRow.rank >= q.rank_min)
    if q.rank_max is not None:
        stmt = stmt.where(AdapterRow.rank <= q.rank_max)
    if q.text:
        like = f"%{q.text.lower()}%"
        stmt = stmt.where(
            sa.or_(
                sa.func.lower(RepoRow.namespace + "/" + RepoRow.name).like(like),
                sa.func.lower(AdapterRow.description).like(like),
                sa.func.lower(AdapterRow.task).like(like),
            )
        )
    if q.base:
        key = q.base.lower()
        base_ids = sa.select(BaseModelRow.id).where(
            sa.or_(
                BaseModelRow.name == q.base,
                BaseModelRow.content_hash.startswith(key) if len(key) >= 6 else sa.false(),
                BaseModelRow.arch_hash.startswith(key) if len(key) >= 6 else sa.false(),
            )
        )
        stmt = stmt.where(AdapterRow.base_model_id.in_(base_ids))
    for tag in q.tags:
        stmt = stmt.where(sa.exists().where(TagRow.adapter_id == AdapterRow.id, TagRow.tag == tag))
    for key, threshold in q.min_scores.items():
        ds, metric = _split_key(key)
        stmt = stmt.where(
            sa.exists().where(
                EvalScoreRow.adapter_id == AdapterRow.id,
                EvalScoreRow.dataset == ds,
                EvalScoreRow.metric == metric,
                _passes(EvalScoreRow, threshold),
            )
        )
    total = s.scalar(sa.select(sa.func.count()).select_from(stmt.subquery())) or 0
    if q.sort:
        ds, metric = _split_key(q.sort)
        sc = aliased(EvalScoreRow)
        stmt = stmt.outerjoin(sc, sa.and_(sc.adapter_id == AdapterRow.id, sc.dataset == ds, sc.metric == metric))
        # best first in the metric's own direction; adapters without the score go last
        order = sa.case((sc.higher_is_better.is_(False), sc.value), else_=-sc.value)
        stmt = stmt.order_by(sc.value.is_(None), order, AdapterRow.id.desc())
    else:
        stmt = stmt.order_by(AdapterRow.created_at.desc(), AdapterRow.id.desc())
    ids = list(s.scalars(stmt.limit(q.limit)))
    if not ids:
        return total, []
    rows = {r.id: r for r in s.scalars(convert.card_query().where(AdapterRow.id.in_(ids)))}
    return total, [rows[i] for i in ids if i in rows]
