"""The ASGI app: the Hugging Face Hub HTTP API subset the HF clients use, plus the registry's own JSON API.

One `HubContext` holds the registry (database + blob store) and the hub's commit store over the same database;
routes live in `resolve` (downloads), `commits` (uploads), `api` (info and listings) and `registry_api`.
Errors leave as the Hub sends them: a status, a JSON `{"error": ...}` body and `X-Error-Code`, which is what
`huggingface_hub` turns into RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc

from ...errors import (
    AdapterHubError,
    AdapterNotFound,
    AlreadyExists,
    CommitConflict,
    DatabaseBusy,
    EntryNotFound,
    IntegrityError,
    InvalidFile,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RepoNotFound,
    RevisionNotFound,
    StorageFull,
    StoreError,
    Unauthenticated,
    UnsupportedFeature,
    UsageError,
)
from ...fsutil import check_segment
from ...store.hub_store import HubStore
from ...store.registry import Registry
from ..types import HubCommit, HubRepo
from .access import Access

DEFAULT_PAGE_SIZE = 1000  # the Hub's page size for tree listings
# Request body limits (HTTP 413 above them), enforced for every route by `BodyLimit` while the body arrives.
MAX_JSON_BODY = 1 << 20  # every route but the commit: create-repo, preupload, validate-yaml, search, paths-info
DEFAULT_MAX_UPLOAD_BYTES = 10 << 30  # a commit's NDJSON body, base64 included: `serve --max-upload-bytes`
_COMMIT_ROUTE = re.compile(r"/api/models/[^/]+/[^/]+/commit/.+")
STARTED_AT = time.time()  # temp files older than this process were left by a server or upload that was killed


@dataclass
class HubContext:
    """What every route needs: the registry, the hub store over the same database, and the access rules."""

    registry: Registry
    hub: HubStore
    access: Access
    scratch: Path  # temp files of uploads in progress and commit checks, under the registry home
    page_size: int = DEFAULT_PAGE_SIZE
    max_upload_bytes: int | None = DEFAULT_MAX_UPLOAD_BYTES  # largest commit body accepted (HTTP 413 above it); None: no limit
    private_paths: re.Pattern[str] | None = None  # the server's own folders, scrubbed from every error message

    def check_readable(self, request: Request, repo: HubRepo) -> None:
        self.access.check_readable(request, repo)

    def resolve(self, request: Request, namespace: str, name: str, revision: str) -> tuple[HubRepo, HubCommit]:
        """A revision of a repo the caller may read: names are checked and access decided before the revision is
        looked up, so a hidden repository answers RepoNotFound whatever revision is asked for."""
        check_segment(namespace, "namespace")
        check_segment(name, "repository name")
        self.check_readable(request, self.hub.repo(namespace, name))
        return self.hub.resolve(namespace, name, revision)


async def read_body(request: Request, limit: int = MAX_JSON_BODY) -> bytes:
    """The whole request body, refused with 413 as soon as it is over `limit` (`BodyLimit` also guards every route)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes")
    return bytes(body)


async def json_object(request: Request, limit: int = MAX_JSON_BODY) -> dict[str, Any]:
    """The request body as a JSON object: malformed, oversized or non-object JSON is a 400/413, never a 500."""
    body = await read_body(request, limit)
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise UsageError("the request body is not valid JSON", hint="send one JSON object") from None
    if not isinstance(value, dict):
        raise UsageError(f"the request body must be a JSON object, not {type(value).__name__}", hint="send one JSON object")
    return value


def remove_stale_temp(folders: list[Path], *, before: float, only: str | None = None) -> list[Path]:
    """Delete what temp folders hold (or just their entry `only`) that was last modified before `before`: halves
    of uploads and blob writes a kill cut short. Anything written since this server started is left to its writer."""
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if only is not None and entry.name != only:
                continue
            with contextlib.suppress(FileNotFoundError):
                if entry.lstat().st_mtime < before:
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
                    removed.append(entry)
    return removed


def context(request: Request) -> HubContext:
    return request.app.state.hub  # type: ignore[no-any-return]


# Exception class -> (HTTP status, X-Error-Code). Order matters: the first matching class wins.
_ERRORS: list[tuple[type[AdapterHubError], int, str | None]] = [
    (RepoNotFound, 404, "RepoNotFound"),
    (AdapterNotFound, 404, "RepoNotFound"),  # the registry API: missing and hidden adapters answer alike
    (RevisionNotFound, 404, "RevisionNotFound"),
    (EntryNotFound, 404, "EntryNotFound"),
    (NotFound, 404, None),
    (AlreadyExists, 409, None),
    (PayloadTooLarge, 413, None),
    (CommitConflict, 409, None),
    (Unauthenticated, 401, None),
    (PermissionDenied, 403, None),
    (IntegrityError, 400, None),
    (InvalidFile, 400, None),
    (UnsupportedFeature, 400, None),
    (UsageError, 400, None),
    (DatabaseBusy, 503, None),
    (StorageFull, 507, None),
    (StoreError, 500, None),
]
RETRY_AFTER_S = 30  # for 503/507: the lock or the disk may be free by then


UPLOADS_DIR = "hub-uploads"  # under the registry home: one scratch folder per server process


def server_paths_pattern(registry: Registry, scratch: Path) -> re.Pattern[str]:
    """Matches a path inside the server's storage, blob store or upload scratch (as given and resolved)."""
    roots: set[str] = set()
    for root in (registry.home, registry.home / UPLOADS_DIR, scratch, registry.blobs.root):
        roots.add(str(root.absolute()).rstrip("/"))  # absolute only: a relative "hub" would match ordinary words
        with contextlib.suppress(OSError):
            roots.add(str(root.resolve()).rstrip("/"))
    alternatives = "|".join(re.escape(r) for r in sorted(roots - {""}, key=len, reverse=True))
    return re.compile(rf"(?<![\w./-])(?:{alternatives})(?P<tail>(?:/[^\s'\":;,)]*)?)")


def scrub_paths(text: str, pattern: re.Pattern[str] | None, repo: str | None) -> str:
    """The message with the server's own paths taken out: a file staged from an upload becomes its path in the
    repository (`<scratch>/<worker>/<stage>/adapter_config.json` -> `adapter_config.json`), the staged folder
    itself the repository, and anything else in the storage `<hub storage>`. No response names a server path."""
    if pattern is None:
        return text

    def public(m: re.Match[str]) -> str:
        full = m.group(0)
        marker = f"/{UPLOADS_DIR}/"
        if marker in full:
            rest = [p for p in full.split(marker, 1)[1].split("/") if p]
            return "/".join(rest[2:]) or repo or "the upload"
        return "<hub storage>"

    return pattern.sub(public, text)


def _public_repo(request: Request) -> str | None:
    params = request.scope.get("path_params") or {}
    ns, name = params.get("namespace"), params.get("name")
    return f"{ns}/{name}" if isinstance(ns, str) and isinstance(name, str) else None


def error_response(exc: AdapterHubError, request: Request) -> JSONResponse:
    status, code = next(((st, c) for cls, st, c in _ERRORS if isinstance(exc, cls)), (500, None))
    hub = getattr(request.app.state, "hub", None)
    pattern, repo = getattr(hub, "private_paths", None), _public_repo(request)
    message, text = scrub_paths(exc.message, pattern, repo), scrub_paths(str(exc), pattern, repo)
    headers = {"X-Error-Message": message.encode("ascii", "replace").decode()[:500]}
    if code:
        headers["X-Error-Code"] = code
    if status in (503, 507):
        headers["Retry-After"] = str(RETRY_AFTER_S)
    if isinstance(exc, EntryNotFound) and len(exc.revision) == 40:
        headers["X-Repo-Commit"] = exc.revision  # lets clients cache "this file does not exist at this commit"
    if request.method == "HEAD":
        return JSONResponse(None, status_code=status, headers=headers)
    return JSONResponse({"error": text}, status_code=status, headers=headers)


OPEN_HUB_NOTICE = ("adapterhub: OPEN HUB (--open): callers without a token may read, write and delete every repository, "
                   "private ones included")  # fmt: skip


def create_app(
    registry: Registry, *, tokens: dict[str, str] | None = None, page_size: int = DEFAULT_PAGE_SIZE,
    max_upload_bytes: int | None = DEFAULT_MAX_UPLOAD_BYTES, open_hub: bool = False,
) -> FastAPI:
    """The hub over `registry`'s database and blob store; `tokens` (secret -> user) are static write tokens.

    Anonymous callers may only read public repositories unless `open_hub` (announced on stderr here) lets them do
    everything. Temp files a killed server left (upload scratch, blob-store temp files) are removed before it serves."""
    from . import api, commits, registry_api, resolve
    from .openapi import describe_raw_bodies

    app = FastAPI(title="adapterhub", docs_url="/api/adapterhub/docs", openapi_url="/api/adapterhub/openapi.json", redoc_url=None)
    scratch = claim_scratch(registry.home / UPLOADS_DIR)
    remove_stale_temp([registry.blobs.root / "tmp"], before=STARTED_AT)
    access = Access(registry.db, tokens, open_hub=open_hub)
    if open_hub:
        print(OPEN_HUB_NOTICE, file=sys.stderr, flush=True)
    app.state.hub = HubContext(registry, HubStore(registry.db, registry.blobs), access, scratch, page_size, max_upload_bytes,
                               server_paths_pattern(registry, scratch))  # fmt: skip
    app.add_middleware(_RefuseNul)
    app.add_middleware(BodyLimit, commit_limit=max_upload_bytes)

    @app.exception_handler(AdapterHubError)
    async def _on_error(request: Request, exc: AdapterHubError) -> JSONResponse:
        return error_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default is a 422 with a list of pydantic errors; the Hub answers 400 with one line.
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(UsageError(f"bad request: {where}: {first.get('msg', 'invalid')}"), request)

    @app.exception_handler(ValidationError)
    async def _on_invalid_model(request: Request, exc: ValidationError) -> JSONResponse:
        # A pydantic model a route builds from request values (a SearchQuery from query parameters) refused them.
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(UsageError(f"bad request: {where}: {first.get('msg', 'invalid')}"), request)

    @app.exception_handler(sa_exc.DataError)
    async def _on_bad_value(request: Request, exc: sa_exc.DataError) -> JSONResponse:
        # A value the database cannot store (PostgreSQL: NUL in text, an out-of-range number): the input's fault.
        first = str(exc.orig).splitlines()[0] if exc.orig is not None else "invalid value"
        return error_response(UsageError(f"the database refused a value in this request: {first}"), request)

    @app.exception_handler(sa_exc.OperationalError)
    async def _on_db_unavailable(request: Request, exc: sa_exc.OperationalError) -> JSONResponse:
        # A lock held past the busy timeout outside a write transaction, or a database that went away: retry later.
        from ...store.db import is_busy

        what = "the database is busy: another writer held its lock too long" if is_busy(exc) else "the database is unavailable"
        return error_response(DatabaseBusy(what), request)

    @app.exception_handler(OSError)
    async def _on_os_error(request: Request, exc: OSError) -> JSONResponse:
        from ...store.blobs import is_disk_full

        if is_disk_full(exc):  # an upload's scratch file or a blob write ran out of disk
            return error_response(StorageFull(), request)
        logging.getLogger("adapterhub.hub").error("storage error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(StoreError("the hub could not read or write its storage", hint="see the server's log"), request)

    app.include_router(registry_api.router)
    app.include_router(api.router)
    app.include_router(commits.router)
    app.include_router(resolve.router)  # last: its /{ns}/{name}/resolve/... pattern is the most general
    from ..web import router as web_router  # the HTML pages: included after every API route, so those win

    app.include_router(web_router)
    describe_raw_bodies(app)
    return app


_SCRATCH_LOCKS: list[int] = []  # descriptors holding this process's scratch lock until it exits


def claim_scratch(root: Path) -> Path:
    """This process's own upload scratch folder under `root`, flock-ed for as long as the process lives.

    Folders whose lock nobody holds belong to servers that are gone (killed mid-upload): they are deleted first,
    whatever their age; the folders of other live workers on the same storage are left alone."""
    import os
    import secrets

    try:
        import fcntl
    except ImportError:  # no flock (Windows): one shared folder, cleaned by age only
        remove_stale_temp([root], before=STARTED_AT)
        return root
    root.mkdir(parents=True, exist_ok=True)
    for lock in root.glob("*.lock"):
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # held by a live server
        else:
            shutil.rmtree(root / lock.stem, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
        finally:
            os.close(fd)
    for entry in root.iterdir():  # no lock at all: from an older layout, or a crash between unlink and rmtree
        if entry.suffix != ".lock" and not (root / f"{entry.name}.lock").exists():
            remove_stale_temp([entry.parent], before=STARTED_AT, only=entry.name)
    name = f"{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(root / f".{name}.new", os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # locked before it gets the name other servers look for
    os.replace(root / f".{name}.new", root / f"{name}.lock")
    _SCRATCH_LOCKS.append(fd)
    (root / name).mkdir()
    return root / name


class _RefuseNul:
    """ASGI middleware: a NUL in the path or query is a 400 before any lookup (PostgreSQL text cannot hold one)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and ("\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b"")):
            body = {"error": "NUL characters are not allowed in paths or query parameters"}
            await JSONResponse(body, status_code=400, headers={"X-Error-Message": body["error"]})(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: counts each request's body bytes as they arrive and answers 413 once they pass the route's
    limit (the commit route: `max_upload_bytes`, None for none; every other route: MAX_JSON_BODY). A declared
    Content-Length over the limit is refused before the app runs. After the 413 the app sees a disconnect and
    whatever it still sends is dropped; uvicorn discards the rest of the body, so memory stays flat."""

    def __init__(self, app: Any, *, commit_limit: int | None) -> None:
        self.app = app
        self.commit_limit = commit_limit

    def limit_for(self, scope: Any) -> int | None:
        if scope["method"] == "POST" and _COMMIT_ROUTE.fullmatch(scope.get("path", "")):
            return self.commit_limit
        return MAX_JSON_BODY

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope.get("headers", []) if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > limit:
            await self._too_large(scope, receive, send, limit)
            return
        received = 0
        refused = False
        started = False

        async def counted_receive() -> Any:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await self._too_large(scope, receive, send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Any) -> None:
            nonlocal started
            if refused:
                return  # the 413 went out; the app's own answer to the "disconnect" is dropped
            started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not refused:
                raise

    @staticmethod
    async def _too_large(scope: Any, receive: Any, send: Any, limit: int) -> None:
        message = f"request body over this hub's limit of {limit} bytes for this route"
        await error_response(PayloadTooLarge(message), Request(scope))(scope, receive, send)


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory adapterhub.hub.server.app:app_from_env` (ADAPTERHUB_HOME / _DATABASE_URL)."""
    return create_app(Registry())


def serve(
    *, home: Path | None = None, database_url: str | None = None, host: str = "127.0.0.1", port: int = 8000,
    tokens: dict[str, str] | None = None, page_size: int = DEFAULT_PAGE_SIZE, log_level: str = "warning",
    on_ready: Any = None, max_upload_bytes: int | None = DEFAULT_MAX_UPLOAD_BYTES, limits: ConnectionLimits | None = None,
    open_hub: bool = False,
) -> None:
    """Run the hub with uvicorn until interrupted, over the registry at `home` (blob store) and `database_url`."""
    import gc

    import uvicorn

    from .protocol import MAX_HEAD_BYTES, guarded_protocol

    lim = limits or ConnectionLimits()
    app = create_app(Registry(home=home, database_url=database_url), tokens=tokens, page_size=page_size,
                     max_upload_bytes=max_upload_bytes, open_hub=open_hub)  # fmt: skip
    if on_ready is not None:
        on_ready(f"http://{host}:{port}")
    gc.freeze()  # startup objects live forever: full collections skip them (search p95 42 -> 18 ms at 100k)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                http=guarded_protocol(lim.head_timeout, lim.body_timeout), timeout_keep_alive=lim.keep_alive,
                limit_concurrency=lim.max_connections, h11_max_incomplete_event_size=MAX_HEAD_BYTES)  # fmt: skip


@dataclass(frozen=True)
class ConnectionLimits:
    """How long and how many clients may hold the server: `serve --head-timeout/--body-timeout/--keep-alive/--max-connections`."""

    head_timeout: float = 10.0  # seconds for a request line and headers (from connect, or the previous response)
    body_timeout: float = 60.0  # seconds without a byte of a body the server is reading
    keep_alive: float = 5.0  # idle seconds between requests on one connection
    max_connections: int = 1000  # open connections (and requests) above which uvicorn answers 503
