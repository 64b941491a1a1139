"""The ASGI app, assembled: the Hugging Face Hub HTTP API subset the HF clients use, plus the registry's own JSON API.

`create_app` builds one `HubContext` (`context.py`: the registry, the hub's store over the same database, the access
rules), adds the middleware (NUL refusal, body limits) and the exception handlers (the error table in `context.py`),
and includes the routes: `resolve` (downloads), `commits` (uploads), `api` (info and listings) and `registry_api`.
`serve` runs it with uvicorn. Errors leave as the Hub sends them: a status, a JSON `{"error": ...}` body and
`X-Error-Code`, which is what `huggingface_hub` turns into RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc

from ...errors import AdapterHubError, DatabaseBusy, PayloadTooLarge, StorageFull, StoreError, UsageError
from ...sources import default_registry
from ...store.registry import Registry
from ..repos import HubStore
from .access import Access
from .context import (
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_PAGE_SIZE,
    MAX_JSON_BODY,
    UPLOADS_DIR,
    HubContext,
    error_response,
    server_paths_pattern,
)

_COMMIT_ROUTE = re.compile(r"/api/models/[^/]+/[^/]+/commit/.+")
STARTED_AT = time.time()  # temp files older than this process were left by a server or upload that was killed


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


OPEN_HUB_NOTICE = ("adapterhub: OPEN HUB (--open): callers without a token may read, write and delete every repository, "
                   "private ones included")  # fmt: skip


def create_app(
    registry: Registry,
    *,
    tokens: dict[str, str] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    max_upload_bytes: int | None = DEFAULT_MAX_UPLOAD_BYTES,
    open_hub: bool = False,
    redirects: bool = True,
) -> FastAPI:
    """The hub over `registry`'s database and blob store; `tokens` (secret -> user) are static write tokens.

    Anonymous callers may only read public repositories unless `open_hub` (announced on stderr here) lets them do
    everything. Temp files a killed server left (upload scratch, blob-store temp files) are removed before it serves."""
    from . import api, commits, refs, registry_api, resolve, uploads
    from .openapi import describe_raw_bodies

    app = FastAPI(title="adapterhub", docs_url="/api/adapterhub/docs", openapi_url="/api/adapterhub/openapi.json", redoc_url=None)
    scratch = claim_scratch(registry.home / UPLOADS_DIR)
    remove_stale_temp([registry.blobs.tmp], before=STARTED_AT)
    uploads.StagedUploads(registry.db, registry.blobs).prune()  # streamed uploads nobody committed in a day
    access = Access(registry.db, tokens, open_hub=open_hub)
    if open_hub:
        print(OPEN_HUB_NOTICE, file=sys.stderr, flush=True)
    app.state.hub = HubContext(registry, HubStore(registry.db, registry.blobs), access, scratch, page_size, max_upload_bytes,
                               server_paths_pattern(registry, scratch), redirects)  # fmt: skip
    app.add_middleware(_RefuseNul)
    app.add_middleware(BodyLimit, commit_limit=max_upload_bytes)

    @app.exception_handler(AdapterHubError)
    async def _on_error(request: Request, exc: AdapterHubError) -> JSONResponse:
        return error_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default is a 422 with a list of pydantic errors; the Hub answers 400 with one line.
        return error_response(UsageError(_first_error(exc.errors())), request)

    @app.exception_handler(ValidationError)
    async def _on_invalid_model(request: Request, exc: ValidationError) -> JSONResponse:
        # A pydantic model a route builds from request values (a SearchQuery from query parameters) refused them.
        return error_response(UsageError(_first_error(exc.errors())), request)

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
    app.include_router(refs.router)
    app.include_router(commits.router)
    app.include_router(uploads.router)
    app.include_router(resolve.router)  # last: its /{ns}/{name}/resolve/... pattern is the most general
    from ..web import router as web_router  # the HTML pages: included after every API route, so those win

    app.include_router(web_router)
    describe_raw_bodies(app)
    return app


def _first_error(errors: Sequence[Any]) -> str:
    """One line for a list of pydantic errors: where the first one is and what it says."""
    first: Mapping[str, Any] = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"bad request: {where}: {first.get('msg', 'invalid')}"


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
    limit (the commit route and a streamed upload's PUT: `max_upload_bytes`, None for none; every other route:
    MAX_JSON_BODY). A declared Content-Length over the limit is refused before the app runs. After the 413 the app
    sees a disconnect and whatever it still sends is dropped; uvicorn discards the rest of the body, so memory stays
    flat."""

    def __init__(self, app: Any, *, commit_limit: int | None) -> None:
        self.app = app
        self.commit_limit = commit_limit

    def limit_for(self, scope: Any) -> int | None:
        from .uploads import UPLOAD_ROUTE

        path = scope.get("path", "")
        if scope["method"] == "POST" and _COMMIT_ROUTE.fullmatch(path):
            return self.commit_limit
        if scope["method"] == "PUT" and UPLOAD_ROUTE.fullmatch(path):  # one streamed file: up to the same limit
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
    return create_app(default_registry())


def serve(
    *,
    home: Path | None = None,
    database_url: str | None = None,
    blobs: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    tokens: dict[str, str] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    log_level: str = "warning",
    on_ready: Any = None,
    max_upload_bytes: int | None = DEFAULT_MAX_UPLOAD_BYTES,
    limits: ConnectionLimits | None = None,
    open_hub: bool = False,
    redirects: bool = True,
) -> None:
    """Run the hub with uvicorn until interrupted, over the registry at `home`, `database_url` and `blobs` (a blob
    store URL; see Registry)."""
    import gc

    import uvicorn

    from .protocol import MAX_HEAD_BYTES, guarded_protocol

    lim = limits or ConnectionLimits()
    app = create_app(default_registry(home, database_url, blobs=blobs), tokens=tokens, page_size=page_size,
                     max_upload_bytes=max_upload_bytes, open_hub=open_hub, redirects=redirects)  # fmt: skip
    if on_ready is not None:
        on_ready(f"http://{host}:{port}")
    gc.freeze()  # startup objects live forever: full collections skip them (search p95 42 -> 18 ms at 100k)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        http=guarded_protocol(lim.head_timeout, lim.body_timeout),
        timeout_keep_alive=lim.keep_alive,  # type: ignore[arg-type]  # hinted int; uvicorn passes it to loop.call_later, which takes fractions
        limit_concurrency=lim.max_connections,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
    )


@dataclass(frozen=True)
class ConnectionLimits:
    """How long and how many clients may hold the server: `serve --head-timeout/--body-timeout/--keep-alive/--max-connections`."""

    head_timeout: float = 10.0  # seconds for a request line and headers (from connect, or the previous response)
    body_timeout: float = 60.0  # seconds without a byte of a body the server is reading
    keep_alive: float = 5.0  # idle seconds between requests on one connection
    max_connections: int = 1000  # open connections (and requests) above which uvicorn answers 503
