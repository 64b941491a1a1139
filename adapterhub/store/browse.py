"""Queries the web pages need beside search: who was made from an adapter.

Lineage is stored as JSON on the row; `children` is a LIKE over its text (narrowed by the exact name), then each
hit's parsed lineage is checked, so a name that merely contains another never counts.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..card import AdapterCard, BaseModelInfo, Lineage
from . import convert
from .db import Database
from .orm import AdapterRow, BaseModelRow
from .visibility import Visibility, adapter_visible


def _names_parent(lineage: Lineage | None, full_name: str) -> bool:
    return lineage is not None and any(p.ref.split("@", 1)[0] == full_name for p in lineage.parents)


def _pattern(full_name: str) -> str:
    escaped = full_name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f'%"{escaped}@%'


def children(
    db: Database, full_name: str, *, limit: int = 50, visibility: Visibility | None = None
) -> tuple[list[AdapterCard], list[BaseModelInfo]]:
    """(adapter versions, merged bases) whose lineage lists a version of `full_name` (`ns/name`) as a parent;
    adapters `visibility` (a hub caller) may not see are left out inside the SQL, as in search."""
    like = _pattern(full_name)
    hidden_out = adapter_visible(visibility) if visibility is not None else sa.true()
    with db.session() as s:
        rows = s.scalars(
            convert.card_query()
            .where(AdapterRow.lineage.is_not(None), sa.cast(AdapterRow.lineage, sa.Text).like(like, escape="\\"), hidden_out)
            .order_by(AdapterRow.id.desc())
            .limit(limit * 4)
        ).all()
        cards = [c for c in (convert.card(s, r) for r in rows) if _names_parent(c.lineage, full_name)][:limit]
        base_rows = s.scalars(
            sa.select(BaseModelRow)
            .where(BaseModelRow.lineage.is_not(None), sa.cast(BaseModelRow.lineage, sa.Text).like(like, escape="\\"))
            .limit(limit)
        ).all()
        bases = [b for b in (convert.base_info(r) for r in base_rows) if _names_parent(b.lineage, full_name)]
    return cards, bases
