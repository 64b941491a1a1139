"""How web pages are made: the Jinja2 environment (autoescaped), model-card Markdown rendered and sanitised,
number/size/date filters, and the security headers every HTML answer carries."""

from __future__ import annotations

import math
import re
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ...card import EvalScore
from ..server.access import WEB_TOKEN_COOKIE, Caller
from ..server.context import context

HERE = Path(__file__).parent

# No inline script anywhere (no 'unsafe-inline'), no style attributes, nothing from another origin; forms post here only.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # same-origin POSTs carry a Referer the CSRF check can read
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",  # pages may show private adapters: never cached by a proxy or the back button
}

# What a model card may contain after sanitising: formatting, links (http/https/mailto only), tables, code.
_CARD_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img",
    "li", "ol", "p", "pre", "s", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
_CARD_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "th": {"align"}, "td": {"align"}, "code": {"class"}}
_HEADING = re.compile(r"<(/?)h([1-6])(?=[\s>])")
MAX_CARD_CHARS = 200_000  # a longer card is cut (a page is not the place for a 10 MB README)


def score_source(score: EvalScore) -> str:
    """ "measured" (evaluated by adapterhub) or "reported" (declared by the uploader); reported when not recorded."""
    source = getattr(score, "source", None)
    value = getattr(source, "value", source)
    return "measured" if value == "measured" else "reported"


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def fmt_score(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4g}"


def fmt_date(dt: datetime | None) -> str:
    return dt.strftime("%Y-%m-%d %H:%M UTC") if dt is not None else "-"


@lru_cache(maxsize=1)
def _markdown() -> Any:
    from markdown_it import MarkdownIt

    # raw HTML in the card is shown as text, never passed through; the sanitiser below is the second line
    return (
        MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table").enable("strikethrough")
    )


def render_card(markdown_text: str) -> str:
    """Model-card Markdown -> HTML safe to embed: no script, no event attributes, no javascript:/data: links."""
    import nh3

    html = _markdown().render(markdown_text[:MAX_CARD_CHARS])
    # the card's headings sit under the page's own <h1>/<h2>: one level down each (h1 -> h3 ... h4+ -> h6)
    html = _HEADING.sub(lambda m: f"<{m[1]}h{min(int(m[2]) + 2, 6)}", html)
    return nh3.clean(
        html, tags=_CARD_TAGS, attributes=_CARD_ATTRIBUTES, url_schemes={"http", "https", "mailto"},
        link_rel="nofollow noopener noreferrer", strip_comments=True,
    )  # fmt: skip


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, auto_reload=False,
    )  # fmt: skip
    env.filters.update(size=human_size, score=fmt_score, date=fmt_date, source=score_source)
    return env


def logged_in(request: Request) -> Caller | None:
    """The caller the login cookie stands for, or None (no cookie, or a token that no longer works)."""
    if not request.cookies.get(WEB_TOKEN_COOKIE) or context(request).access.open_hub:
        return None
    return context(request).access.caller(request)  # GET pages: the hub's access rules read the cookie themselves


def page(request: Request, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    """Render `template` with `values` (plus the request and who is logged in) into an HTML response."""
    html = environment().get_template(template).render(request=request, logged_in=logged_in(request), **values)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
