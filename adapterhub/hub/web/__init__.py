"""The hub's web page: server-rendered HTML (Jinja2, autoescaped) for searching, reading and comparing adapters.

`router` holds every page; `create_app` includes it after the Hub API routes so `/api/...` and
`/{ns}/{name}/resolve/...` keep their meaning. Assets come from `static/`, served by the hub itself.
"""

from __future__ import annotations

from fastapi import APIRouter

from . import auth, pages

router = APIRouter(include_in_schema=False)
router.include_router(auth.router)  # /login, /logout, /static/...: fixed paths before the catch-all /{ns} pages
router.include_router(pages.router)

__all__ = ["router"]
