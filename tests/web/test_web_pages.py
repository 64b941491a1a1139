"""The web pages in-process, no browser (these run everywhere, on SQLite and PostgreSQL): bad input answers an HTML
4xx and never a 500, the Hub API keeps its routes, and card Markdown comes out sanitised."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from adapterhub.card import EvalScore
from adapterhub.hub.server.app import create_app
from adapterhub.hub.web.render import render_card
from adapterhub.store.registry import Registry


@pytest.fixture
def client(registry: Registry, minilm_adapter_dir: Path) -> TestClient:
    registry.add(minilm_adapter_dir, "team/a", "sentiment", scores=[EvalScore(dataset="sst2", metric="accuracy", value=0.9)],
                 description="<b onmouseover=alert(1)>bold</b> **real**")  # fmt: skip
    return TestClient(create_app(registry))


@pytest.mark.parametrize("url", [
    "/?rank_min=abc", "/?rank_max=-1", "/?min=0.5", "/?metric=noslash&min=1", "/?metric=a/b&min=nan", "/?page=0",
    "/?per=100000", "/?method=bogus", "/?sort=metric", "/?sort=x/", "/bases/zz", "/bases/" + "g" * 64, "/a..b/c",
    "/team/no-such", "/nobody", "/compare?a=../../etc&a=x", "/compare?a=" + "a/" * 400, "/static/../../pyproject.toml",
    "/%E2%80%AE/x", "/" + "n" * 200,
])  # fmt: skip
def test_bad_input_is_an_html_4xx(client: TestClient, url: str) -> None:
    r = client.get(url)
    assert 400 <= r.status_code < 500 or (r.status_code == 200 and url.startswith("/compare")), (url, r.status_code)
    assert r.status_code != 500 and "Traceback" not in r.text


def test_pages_render_with_security_headers(client: TestClient) -> None:
    for url in (
        "/",
        "/?task=sentiment&metric=sst2/accuracy&min=0.5&sort=metric",
        "/team/a",
        "/team",
        "/compare?a=team/a",
        "/login",
    ):
        r = client.get(url)
        assert r.status_code == 200, url
        assert r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
    page = client.get("/team/a").text
    assert "<strong>real</strong>" in page and "onmouseover" not in page.replace("&lt;b onmouseover", "")


def test_hub_api_routes_still_win(client: TestClient) -> None:
    assert client.get("/api/models").headers["content-type"].startswith("application/json")
    assert client.get("/api/adapterhub/search", params={"task": "sentiment"}).json()["total"] == 1
    assert client.get("/api/adapterhub/adapters/team/a").json()["card"]["name"] == "a"
    assert client.get("/team/a/resolve/main/adapter_config.json").status_code == 404  # not pushed: the Hub API answers
    assert client.get("/team/a/resolve/main/adapter_config.json").headers["x-error-code"] == "RepoNotFound"


def test_card_markdown_is_sanitised() -> None:
    html = render_card(
        "# Title\n\n<script>alert(1)</script>\n\n[x](javascript:alert(1)) [y](JaVaScRiPt:alert(1)) [z](data:text/html,hi)\n\n"
        '<img src=x onerror=alert(1)> <a href="https://example.org" onclick="alert(1)">ok</a>\n\n[fine](https://example.org/a?b=1)'
    )
    assert "<script" not in html and "onerror=" not in html.replace("&lt;img src=x onerror=", "")
    assert 'href="javascript' not in html.lower() and 'href="data:' not in html
    assert '<a href="https://example.org/a?b=1" rel="nofollow noopener noreferrer">fine</a>' in html
    assert "<h3>Title</h3>" in html


def test_private_adapters_are_left_out_of_every_page(registry: Registry, minilm_adapter_dir: Path) -> None:
    """More hidden adapters than visible ones, newest first: the page still fills with visible ones, totals leave
    the hidden out, and a read cookie for their namespace shows them (on GET only)."""
    from adapterhub.hub.repos import HubStore
    from adapterhub.store.tokens import TokenStore

    hub = HubStore(registry.db, registry.blobs)
    for i in range(3):
        registry.add(minilm_adapter_dir, f"pub/a{i}", "sentiment")
        hub.create_repo("pub", f"a{i}")
    for i in range(12):
        registry.add(minilm_adapter_dir, f"sec/s{i}", "sentiment")
        hub.create_repo("sec", f"s{i}", private=True)
    _, read = TokenStore(registry.db).create("sec", "read")
    client = TestClient(create_app(registry))
    for url in ("/?per=20", "/?task=sentiment&per=20&sort=", "/?q=sec"):
        page = client.get(url).text
        assert "sec/s" not in page, url
    page = client.get("/?per=20").text
    assert all(f"pub/a{i}" in page for i in range(3)) and "3 adapters" in page
    assert client.get("/sec/s0").status_code == 404 and client.get("/sec").status_code == 404
    assert "sec/s0" not in client.get("/compare?a=sec/s0&a=pub/a0").text.replace("No adapter sec/s0 here", "")
    client.cookies.set("adapterhub_token", read)
    page = client.get("/?per=20").text
    assert "15 adapters" in page and all(f"sec/s{i}<" in page for i in range(12))
    assert client.get("/sec/s0").status_code == 200 and client.get("/sec").status_code == 200
    # the cookie is a read credential for pages only: the same request as a POST is anonymous
    assert client.post("/api/repos/create", json={"name": "x", "organization": "sec"}).status_code == 401


def test_deep_pages_are_one_sql_page_each(registry: Registry, minilm_adapter_dir: Path) -> None:
    """Page N asks the registry for exactly its own rows (offset, limit), and the pages put together list every
    adapter once; a page past SearchQuery's offset bound is a 400, not a 500."""
    from adapterhub.hub.web.pages import last_page, parse_search

    for i in range(25):
        registry.add(minilm_adapter_dir, f"team/p{i:02d}", "sentiment")
    query, page_no, per, errors = parse_search({"task": "sentiment", "per": "20", "page": "2"})
    assert not errors and (query.offset, query.limit, page_no, per) == (20, 20, 2, 20)
    client = TestClient(create_app(registry))
    pages = [client.get("/", params={"task": "sentiment", "per": "20", "page": n}).text for n in (1, 2)]
    assert "page 2 of 2" in pages[1]
    shown = [i for i in range(25) for text in pages if f"team/p{i:02d}<" in text]
    assert sorted(shown) == list(range(25))  # each adapter on exactly one of the two pages
    assert client.get("/", params={"per": "20", "page": last_page(20)}).status_code == 200
    r = client.get("/", params={"per": "20", "page": last_page(20) + 1})
    assert r.status_code == 400 and "page must be between" in r.text


def test_a_big_answer_is_counted_up_to_a_bound(
    registry: Registry, minilm_adapter_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past `pages.COUNTED` (or ten pages beyond the one shown) the page says "N+" and keeps a next link, instead of
    counting every match; below it the count is exact."""
    from adapterhub.hub.web import pages

    for i in range(12):
        registry.add(minilm_adapter_dir, f"team/c{i:02d}", "sentiment")
    monkeypatch.setattr(pages, "COUNTED", 5)
    client = TestClient(create_app(registry))
    summary = re.compile(r'<p class="summary" id="summary">([^<]*)</p>')
    first = summary.findall(client.get("/", params={"task": "sentiment", "per": "10"}).text)  # bound max(5, 100): exact
    assert first == ["12 adapters · page 1 of 2"]
    monkeypatch.setattr(pages, "COUNTED", 3)
    r = client.get("/", params={"task": "sentiment", "per": "1"}).text  # counts up to max(3, 0 + 10 * 1) = 10
    assert summary.findall(r) == ["10+ adapters · page 1 of 10+"] and 'rel="next"' in r
    last = client.get("/", params={"task": "sentiment", "per": "1", "page": "12"}).text  # bound 11 + 10 > 12: exact
    assert summary.findall(last) == ["12 adapters · page 12 of 12"]
