"""Which private hub repositories a caller may read, as SQL conditions: listings and search filter hidden rows inside
the query, so page sizes and totals count only what the caller can see.

A hub repository is private or public; a registry adapter is private when a private hub repository has its name
(pushes register the adapter under the repository's `namespace/name`). Adapters with no hub repository are public.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .orm import AdapterRow, HubRepoRow, RepoRow


@dataclass(frozen=True)
class Visibility:
    """The namespaces whose private repositories the caller may read; `everything` for a `*` token or an open hub."""

    namespaces: frozenset[str] = frozenset()
    everything: bool = False

    @classmethod
    def public_only(cls) -> Visibility:
        return cls()

    @classmethod
    def all(cls) -> Visibility:
        return cls(everything=True)

    @classmethod
    def of(cls, *namespaces: str) -> Visibility:
        return cls(namespaces=frozenset(namespaces))

    def may_read(self, namespace: str, private: bool) -> bool:
        """The same rule as the SQL below, for one repository already loaded."""
        return not private or self.everything or namespace in self.namespaces


def hub_repo_visible(v: Visibility) -> sa.ColumnElement[bool]:
    """WHERE clause on `hub_repos`: public, or private in a namespace the caller may read."""
    if v.everything:
        return sa.true()
    if not v.namespaces:
        return HubRepoRow.private.is_(False)
    return sa.or_(HubRepoRow.private.is_(False), HubRepoRow.namespace.in_(sorted(v.namespaces)))


def adapter_visible(v: Visibility) -> sa.ColumnElement[bool]:
    """WHERE clause on `adapters`: not an adapter of a private hub repository the caller may not read.

    The hidden registry repos are one uncorrelated subquery (a hash set the database builds once), so the filter
    costs one probe per candidate row rather than a join per row."""
    if v.everything:
        return sa.true()
    return AdapterRow.repo_id.not_in(_hidden_repos(v))


def _hidden_repos(v: Visibility) -> sa.Select[int]:
    """The registry repos (ids) of private hub repositories `v` may not read."""
    hidden = (
        sa.select(RepoRow.id)
        .join(HubRepoRow, sa.and_(HubRepoRow.namespace == RepoRow.namespace, HubRepoRow.name == RepoRow.name))
        .where(HubRepoRow.private.is_(True))
    )
    if v.namespaces:
        hidden = hidden.where(HubRepoRow.namespace.not_in(sorted(v.namespaces)))
    return hidden


MAX_LISTED_HIDDEN = 1000  # above this many hidden repos, queries keep the subquery instead of a list of ids


def hidden_repo_ids(s: Session, v: Visibility) -> list[int] | None:
    """The registry repo ids `v` may not see, read once (one pass over the hub's repos), so a search can count its
    matches from the covering indexes and subtract the few hidden ones (`repo_id IN ids`, an index probe each)
    instead of checking every matching row; None when more than MAX_LISTED_HIDDEN (use `adapter_visible`)."""
    if v.everything:
        return []
    ids = list(s.scalars(_hidden_repos(v).limit(MAX_LISTED_HIDDEN + 1)))
    return ids if len(ids) <= MAX_LISTED_HIDDEN else None
