"""Logging in on the web page: a form takes a token and stores it in an HttpOnly, SameSite=Strict cookie that the
hub's access rules read for GET/HEAD requests (never a token in a URL); logout clears it.

POSTs are checked against cross-site request forgery by their Origin (or, without one, Referer) header: a form on
another origin cannot log a browser in or out. Static assets are served from the package, a fixed list of files.
"""

from __future__ import annotations

import mimetypes
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import Headers

from ..server.access import WEB_TOKEN_COOKIE, Caller
from ..server.context import context
from .render import HERE, SECURITY_HEADERS, page

router = APIRouter()
MAX_FORM_BYTES = 4096  # a login form holds one token
STATIC = {p.name: p for p in (HERE / "static").iterdir() if p.is_file()}


def same_origin(request: Request) -> bool:
    """True when a state-changing request comes from a page of this hub: its Origin (else Referer) names the host
    the request was sent to. Hosts only, not schemes: behind a TLS proxy the browser says https and the hub sees
    http. X-Forwarded-Host counts too (a proxy may rewrite Host); a cross-site form cannot set either header."""
    hosts = {
        h.strip().lower() for h in (request.headers.get("host", ""), request.headers.get("x-forwarded-host", "")) if h.strip()
    }
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return False
    return urlsplit(source).netloc.lower() in hosts


def caller_for(request: Request, secret: str) -> Caller | None:
    """What `secret` may do, decided by the hub's one set of access rules (as if sent as a bearer token)."""
    scope = {"type": "http", "method": "GET", "path": "/", "headers": Headers({"authorization": f"Bearer {secret}"}).raw}
    return context(request).access.caller(Request(scope))


async def _form(request: Request) -> dict[str, str]:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            break
    if len(body) > MAX_FORM_BYTES:
        return {}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


def _forbidden(request: Request) -> Response:
    return page(request, "error.html", 403, title="Refused", message="This form must be sent from a page of this hub.")


@router.get("/login")
def login_form(request: Request) -> Response:
    return page(request, "login.html", title="Log in", open_hub=context(request).access.open_hub, error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    if not same_origin(request):
        return _forbidden(request)
    secret = (await _form(request)).get("token", "").strip()
    if context(request).access.open_hub:
        return page(request, "login.html", title="Log in", open_hub=True, error=None)
    if not secret or caller_for(request, secret) is None:
        return page(
            request,
            "login.html",
            401,
            title="Log in",
            open_hub=False,
            error="That token is not valid on this hub (unknown, revoked or expired).",
        )
    response = RedirectResponse("/", status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(
        WEB_TOKEN_COOKIE, secret, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/"
    )
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    if not same_origin(request):
        return _forbidden(request)
    response = RedirectResponse("/", status_code=303, headers=SECURITY_HEADERS)
    response.delete_cookie(WEB_TOKEN_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/static/{name}")
def static(name: str) -> Response:
    path = STATIC.get(name)
    if path is None:
        return Response("not found", status_code=404, media_type="text/plain")
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Response(
        path.read_bytes(),
        media_type=media,
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
