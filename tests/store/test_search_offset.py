"""Search paging with `offset` (SQLite and PostgreSQL): every page is one SQL page, and the pages of a query put
together are exactly its one long answer, in each ordering (newest first, by a score with and without a task
filter, across the boundary between scored and unscored adapters, with tied scores) and with private adapters
filtered out for a caller."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from adapterhub.card import MAX_SEARCH_OFFSET, SearchQuery
from adapterhub.store.orm import AdapterRow, EvalScoreRow, HubRepoRow, RepoRow
from adapterhub.store.registry import Registry
from adapterhub.store.visibility import Visibility

N = 61


def _populate(reg: Registry) -> None:
    """N adapters in two tasks: 2 of 3 scored on sst2/accuracy with many ties, the rest unscored; 1 in 5 a private
    hub repository of namespace `sec`, the others public ones of `pub`; some share a creation time."""
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with reg.db.write() as s:
        for i in range(N):
            ns = "sec" if i % 5 == 0 else "pub"
            repo = RepoRow(namespace=ns, name=f"a{i}", last_version=1, private=False, created_at=t0)
            s.add(repo)
            s.flush()
            s.add(HubRepoRow(namespace=ns, name=f"a{i}", repo_type="model", private=ns == "sec", created_at=t0, last_modified=t0))
            row = AdapterRow(repo_id=repo.id, version=1, is_latest=True, task="chat" if i % 2 else "ner", method="lora", rank=8,
                             rank_pattern={}, alpha=16.0, use_rslora=False, target_modules=["q_proj"], description=f"adapter {i}",
                             license="mit", search_text=f"adapter {i}", created_at=t0 + timedelta(seconds=i // 3))  # fmt: skip
            s.add(row)
            s.flush()
            if i % 3:
                s.add(
                    EvalScoreRow(
                        adapter_id=row.id,
                        dataset="sst2",
                        metric="accuracy",
                        split="test",
                        value=(i % 4) / 4,
                        higher_is_better=True,
                    )
                )


QUERIES = {
    "newest": {},
    "task": {"task": "chat"},
    "sorted by a score": {"sort": "sst2/accuracy"},
    "task, sorted by a score": {"task": "ner", "sort": "sst2/accuracy"},
    "minimum score, sorted": {"min_scores": {"sst2/accuracy": 0.5}, "sort": "sst2/accuracy"},
}


@pytest.mark.parametrize("label", list(QUERIES))
@pytest.mark.parametrize(
    "visibility", [None, Visibility.public_only(), Visibility.of("sec")], ids=["all", "anonymous", "sec-reader"]
)
def test_pages_put_together_are_the_whole_answer(registry: Registry, label: str, visibility: Visibility | None) -> None:
    _populate(registry)
    fields = QUERIES[label]
    whole = registry.search(SearchQuery(**fields, limit=1000), visibility=visibility, local_paths=False)
    assert whole.total == len(whole.items) > 0
    if visibility == Visibility.public_only():
        assert all(c.namespace == "pub" for c in whole.items)
    for per in (4, 25):
        names: list[str] = []
        for offset in range(0, whole.total + per, per):
            page = registry.search(SearchQuery(**fields, limit=per, offset=offset), visibility=visibility, local_paths=False)
            assert page.total == whole.total, (per, offset)
            assert len(page.items) == max(0, min(per, whole.total - offset)), (per, offset)
            names += [c.full_name for c in page.items]
        assert names == [c.full_name for c in whole.items], per


def test_a_page_past_the_scored_adapters_starts_at_the_right_unscored_one(registry: Registry) -> None:
    """Sorted by a score with no task filter: a page wholly after the scored matches skips only as many unscored
    ones as the offset reaches beyond them."""
    _populate(registry)
    whole = registry.search(SearchQuery(sort="sst2/accuracy", limit=1000)).items
    scored = sum(1 for c in whole if c.score("sst2/accuracy") is not None)
    assert 0 < scored < len(whole)
    page = registry.search(SearchQuery(sort="sst2/accuracy", limit=3, offset=scored + 2)).items
    assert [c.full_name for c in page] == [c.full_name for c in whole[scored + 2 : scored + 5]]
    assert all(c.score("sst2/accuracy") is None for c in page)


def test_offset_is_bounded() -> None:
    assert SearchQuery(offset=MAX_SEARCH_OFFSET).offset == MAX_SEARCH_OFFSET
    for bad in (-1, MAX_SEARCH_OFFSET + 1):
        with pytest.raises(ValidationError):
            SearchQuery(offset=bad)


def test_hidden_adapters_take_no_place_on_a_page(registry: Registry) -> None:
    """The caller's hidden adapters are filtered before OFFSET/LIMIT: no page is short, none repeats or skips."""
    _populate(registry)
    with registry.db.session() as s:
        public = s.scalar(sa.select(sa.func.count()).select_from(HubRepoRow).where(HubRepoRow.private.is_(False)))
    anon = Visibility.public_only()
    first = registry.search(SearchQuery(limit=10), visibility=anon, local_paths=False)
    second = registry.search(SearchQuery(limit=10, offset=10), visibility=anon, local_paths=False)
    assert first.total == second.total == public
    assert len(first.items) == len(second.items) == 10
    assert not {c.full_name for c in first.items} & {c.full_name for c in second.items}


@pytest.mark.parametrize("label", ["newest", "sorted by a score"])
def test_many_hidden_repos_give_the_same_answer(registry: Registry, label: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_LISTED_HIDDEN hidden repos the filter stays a subquery inside the count: same totals and pages as the
    short list of ids (count all, subtract the hidden)."""
    from adapterhub.store import visibility as vis_module

    _populate(registry)
    anon = Visibility.public_only()
    listed = [
        registry.search(SearchQuery(**QUERIES[label], limit=9, offset=o), visibility=anon, local_paths=False) for o in (0, 9, 36)
    ]
    monkeypatch.setattr(vis_module, "MAX_LISTED_HIDDEN", 2)
    many = [
        registry.search(SearchQuery(**QUERIES[label], limit=9, offset=o), visibility=anon, local_paths=False) for o in (0, 9, 36)
    ]
    assert [(r.total, [c.full_name for c in r.items]) for r in many] == [
        (r.total, [c.full_name for c in r.items]) for r in listed
    ]
    assert all(c.namespace == "pub" for r in many for c in r.items)


@pytest.mark.parametrize("label", list(QUERIES))
@pytest.mark.parametrize("visibility", [None, Visibility.public_only()], ids=["all", "anonymous"])
def test_a_count_limit_gives_the_same_page_and_an_honest_total(
    registry: Registry, label: str, visibility: Visibility | None
) -> None:
    """With `count_limit` (web pages) the items are the same; the total is exact up to the limit, and past it the
    result says "more" (total_exact False) without ever counting a hidden adapter towards the bound."""
    _populate(registry)
    exact = registry.search(SearchQuery(**QUERIES[label], limit=5), visibility=visibility, local_paths=False)
    assert exact.total_exact
    for limit in (3, exact.total - 1, exact.total, exact.total + 10):
        bounded = registry.search(
            SearchQuery(**QUERIES[label], limit=5), visibility=visibility, local_paths=False, count_limit=limit
        )
        assert [c.full_name for c in bounded.items] == [c.full_name for c in exact.items]
        assert (bounded.total, bounded.total_exact) == ((exact.total, True) if limit >= exact.total else (limit, False))


def test_a_count_limit_does_not_count_hidden_adapters(registry: Registry) -> None:
    """Every match hidden from the caller: the bounded total is 0 and exact, not "N+" (no existence oracle)."""
    _populate(registry)
    hidden_only = SearchQuery(text="adapter 10", limit=5)  # "adapter 10" is the private sec/a10 only
    assert registry.search(hidden_only, local_paths=False).total == 1
    r = registry.search(hidden_only, visibility=Visibility.public_only(), local_paths=False, count_limit=0)
    assert (r.total, r.total_exact, r.items) == (0, True, [])
