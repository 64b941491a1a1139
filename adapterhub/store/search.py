"""Search as SQL: every filter becomes a WHERE clause on indexed columns, so 100,000 adapters answer in milliseconds."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from ..card import AdapterCard, SearchQuery
from ..errors import UsageError
from . import convert
from .bases import base_named
from .orm import AdapterRow, BaseModelRow, EvalScoreRow, TagRow
from .visibility import Visibility, adapter_visible, hidden_repo_ids


def _split_key(key: str) -> tuple[str, str]:
    dataset, sep, metric = key.rpartition("/")
    if not sep or not dataset or not metric:
        raise UsageError(f"bad score key {key!r}", hint="use DATASET/METRIC, e.g. sst2/accuracy")
    return dataset, metric


def _passes(score: type[EvalScoreRow], threshold: float) -> sa.ColumnElement[bool]:
    """At least as good as `threshold`, in the metric's own direction."""
    return sa.or_(
        sa.and_(score.higher_is_better == sa.true(), score.value >= threshold),
        sa.and_(score.higher_is_better == sa.false(), score.value <= threshold),
    )


def _text_match(s: Session, text: str) -> sa.ColumnElement[bool]:
    """Substring match on the pre-lowered search text: the SQLite trigram index when the text has 3+ characters
    (what a trigram index can answer), a LIKE scan otherwise and on PostgreSQL."""
    if len(text) >= 3 and s.get_bind().dialect.name == "sqlite":
        phrase = '"' + text.replace('"', '""') + '"'
        match = sa.text("adapters_fts MATCH :fts_phrase").bindparams(fts_phrase=phrase)
        return AdapterRow.id.in_(sa.select(sa.column("rowid")).select_from(sa.table("adapters_fts")).where(match))
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return AdapterRow.search_text.like(f"%{escaped}%", escape="\\")


def _restrict(match: sa.Select[int], column: InstrumentedAttribute[int], correlated: bool) -> sa.ColumnElement[bool]:
    if correlated:
        return sa.exists(match.where(column == AdapterRow.id))
    return AdapterRow.id.in_(match)


def _best_scored_first(s: Session, conds: list[sa.ColumnElement[bool]], q: SearchQuery) -> list[int]:
    """Sorted by a score without a selective adapter filter: walk the (dataset, metric, value) index from the best
    end and stop after `offset + limit` matches, instead of sorting every match. Adapters without the score follow,
    so a page past the scored ones skips as many of them as `offset` reaches beyond the scored count."""
    ds, metric = _split_key(q.sort or "")
    key = sa.and_(
        EvalScoreRow.dataset == ds, EvalScoreRow.metric == metric, EvalScoreRow.source == "measured" if q.measured else sa.true()
    )
    higher = s.scalar(sa.select(EvalScoreRow.higher_is_better).where(key).limit(1))
    # ties broken by the score row's id, in the index's own direction (SQLite's index ends with it): pages never overlap
    desc = higher in (None, True)
    by_value = (EvalScoreRow.value.desc(), EvalScoreRow.id.desc()) if desc else (EvalScoreRow.value.asc(), EvalScoreRow.id.asc())
    # the adapter-side filters as one correlated EXISTS, so the score index alone drives the loop, in order
    fits = sa.exists().where(AdapterRow.id == EvalScoreRow.adapter_id, *conds)
    scored = sa.select(EvalScoreRow.adapter_id).where(key, fits)
    ids = list(s.scalars(scored.order_by(*by_value).offset(q.offset).limit(q.limit)))
    if len(ids) < q.limit:
        if ids or not q.offset:
            skip = 0  # this page holds the last scored matches: the unscored start right after them
        else:  # the page lies wholly past the scored matches
            skip = q.offset - (s.scalar(sa.select(sa.func.count()).select_from(scored.subquery())) or 0)
        has_score = sa.exists().where(EvalScoreRow.adapter_id == AdapterRow.id, key)
        rest = sa.select(AdapterRow.id).where(*conds, ~has_score).order_by(AdapterRow.id.desc())
        ids += list(s.scalars(rest.offset(skip).limit(q.limit - len(ids))))
    return ids


MAX_HIDDEN_ROWS = 5000  # hidden adapter versions subtracted by id; above it the count filters with a subquery


def _probes(q: SearchQuery, correlated: bool) -> list[sa.ColumnElement[bool]]:
    """The tag, measured and minimum-score filters: correlated EXISTS probes per adapter, or IN over the tag/score
    index. With `measured`, only measured scores count (for the thresholds too)."""
    conds = [_restrict(sa.select(TagRow.adapter_id).where(TagRow.tag == tag), TagRow.adapter_id, correlated) for tag in q.tags]
    measured = [EvalScoreRow.source == "measured"] if q.measured else []
    if q.measured:
        conds.append(_restrict(sa.select(EvalScoreRow.adapter_id).where(*measured), EvalScoreRow.adapter_id, correlated))
    for key, threshold in q.min_scores.items():
        ds, metric = _split_key(key)
        match = sa.select(EvalScoreRow.adapter_id).where(
            EvalScoreRow.dataset == ds, EvalScoreRow.metric == metric, _passes(EvalScoreRow, threshold), *measured
        )
        conds.append(_restrict(match, EvalScoreRow.adapter_id, correlated))
    return conds


def _count_visible(
    s: Session,
    conds: list[sa.ColumnElement[bool]],
    probing: list[sa.ColumnElement[bool]],
    visibility: Visibility | None,
    count_limit: int | None = None,
) -> tuple[int, sa.ColumnElement[bool] | None]:
    """(the number of matches `visibility` may see, the condition that leaves the hidden ones out of the listing).

    `conds` and `probing` are the same filters (tags and scores as IN, and as per-row probes). With a short list of
    hidden repos the count is all matches (from covering indexes) minus the hidden matches, found by primary key and
    probed: a NOT IN inside the count would read every matching row instead. With `count_limit` the count stops
    after that many visible matches (plus one, so the caller can tell "more")."""

    def count(where: list[sa.ColumnElement[bool]]) -> int:
        return s.scalar(sa.select(sa.func.count(AdapterRow.id)).where(*where)) or 0

    if visibility is None or visibility.everything:
        visible = None
    else:
        hidden = hidden_repo_ids(s, visibility)
        visible = adapter_visible(visibility) if hidden is None else AdapterRow.repo_id.not_in(hidden) if hidden else None
    if count_limit is not None:  # bounded: a page needs "more than N", not the exact size of a huge match set
        # per-row probes: the first `count_limit` matches are found without building the whole IN list of a filter
        first = sa.select(AdapterRow.id).where(*probing, *([visible] if visible is not None else [])).limit(count_limit + 1)
        return s.scalar(sa.select(sa.func.count()).select_from(first.subquery())) or 0, visible
    if visibility is None or visibility.everything:
        return count(conds), None
    rows = (
        list(s.scalars(sa.select(AdapterRow.id).where(AdapterRow.repo_id.in_(hidden)).limit(MAX_HIDDEN_ROWS + 1)))
        if hidden
        else []
    )
    if hidden is None or len(rows) > MAX_HIDDEN_ROWS:  # many hidden: filter inside the one count
        visible = adapter_visible(visibility)
        return count([*conds, visible]), visible
    total = count(conds) - (count([*probing, AdapterRow.id.in_(rows)]) if rows else 0)
    return total, visible


def run_search(
    s: Session, q: SearchQuery, visibility: Visibility | None = None, count_limit: int | None = None
) -> tuple[int, list[AdapterCard]]:
    """(number of matches, `limit` rows in the requested order after skipping the first `offset`).

    With `count_limit`, matches are counted up to `count_limit + 1` only: a total above `count_limit` means "more".

    Tag and score filters probe covering indexes; text search scans one pre-lowered column, never a join.
    `visibility` hides adapters of private hub repositories inside the query, so the count never includes them.
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
        conds.append(_text_match(s, q.text.lower()))
    if q.base:
        key = q.base.lower()
        by_hash = len(key) >= 6 and all(c in "0123456789abcdef" for c in key)
        base_ids = sa.select(BaseModelRow.id).where(
            sa.or_(
                base_named(q.base),  # only bases fingerprinted here: a pushed name is a label
                BaseModelRow.content_hash.startswith(key) if by_hash else sa.false(),
                BaseModelRow.arch_hash.startswith(key) if by_hash else sa.false(),
            )
        )
        conds.append(AdapterRow.base_model_id.in_(base_ids))
    # With a selective column filter (task) the planner should walk those adapters and probe each tag/score
    # (EXISTS into a covering index); without one, walking the tag/score index first (IN) touches far fewer rows.
    drive_from_adapters = bool(q.task)
    filters, probes = _probes(q, drive_from_adapters), _probes(q, True)
    total, visible = _count_visible(s, conds + filters, conds + probes, visibility, count_limit)
    seen = [visible] if visible is not None else []
    if q.sort and not drive_from_adapters:
        # walking the score index best first, each adapter is probed (EXISTS), never a whole tag/score IN list built
        ids = _best_scored_first(s, conds + probes + seen, q)
    elif q.sort:
        conds += filters + seen
        ds, metric = _split_key(q.sort)
        sc = aliased(EvalScoreRow)
        stmt = sa.select(AdapterRow.id).where(*conds)
        stmt = stmt.outerjoin(
            sc,
            sa.and_(
                sc.adapter_id == AdapterRow.id,
                sc.dataset == ds,
                sc.metric == metric,
                *[sc.source == "measured"][: int(q.measured)],
            ),
        )
        # best first in the metric's own direction; adapters without the score go last
        order = sa.case((sc.higher_is_better == sa.false(), sc.value), else_=-sc.value)
        ids = list(s.scalars(stmt.order_by(sc.value.is_(None), order, AdapterRow.id.desc()).offset(q.offset).limit(q.limit)))
    else:
        conds += filters + seen
        stmt = sa.select(AdapterRow.id).where(*conds).order_by(AdapterRow.created_at.desc(), AdapterRow.id.desc())
        ids = list(s.scalars(stmt.offset(q.offset).limit(q.limit)))
    cards = convert.cards_by_id(s, ids)
    return total, [cards[i] for i in ids if i in cards]
