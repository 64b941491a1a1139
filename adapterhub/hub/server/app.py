"""The ASGI app: the Hugging Face Hub HTTP API subset the HF clients use, plus the registry's own JSON API.

One `HubContext` holds the registry (database + blob store) and the hub's commit store over the same database;
routes live in `resolve` (downloads), `commits` (uploads), `api` (info and listings) and `registry_api`.
Errors leave as the Hub sends them: a status, a JSON `{"error": ...}` body and `X-Error-Code`, which is what
`huggingface_hub` turns into RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc

from ...errors import (
    AdapterHubError,
    AlreadyExists,
    CommitConflict,
    EntryNotFound,
    IntegrityError,
    InvalidFile,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RepoNotFound,
    RevisionNotFound,
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
MAX_JSON_BODY = 16 << 20  # create-repo, preupload, validate-yaml and search bodies are small
STARTED_AT = time.time()  # temp files older than this process were left by a server or upload that was killed


@dataclass
class HubContext:
    """What every route needs: the registry, the hub store over the same database, and the access rules."""

    registry: Registry
    hub: HubStore
    access: Access
    scratch: Path  # temp files of uploads in progress and commit checks, under the registry home
    page_size: int = DEFAULT_PAGE_SIZE
    max_upload_bytes: int | None = None  # largest commit body accepted (HTTP 413 above it); None: no limit

    def check_readable(self, request: Request, repo: HubRepo) -> None:
        self.access.check_readable(request, repo)

    def resolve(self, request: Request, namespace: str, name: str, revision: str) -> tuple[HubRepo, HubCommit]:
        """A revision of a repo the caller may read: names are checked and access decided before the revision is
        looked up, so a hidden repository answers RepoNotFound whatever revision is asked for."""
        check_segment(namespace, "namespace")
        check_segment(name, "repository name")
        self.check_readable(request, self.hub.repo(namespace, name))
        return self.hub.resolve(namespace, name, revision)


async def json_object(request: Request, limit: int = MAX_JSON_BODY) -> dict[str, Any]:
    """The request body as a JSON object: malformed, oversized or non-object JSON is a 400/413, never a 500."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes")
    try:
        value = json.loads(bytes(body))
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
    (StoreError, 500, None),
]


def error_response(exc: AdapterHubError, request: Request) -> JSONResponse:
    status, code = next(((st, c) for cls, st, c in _ERRORS if isinstance(exc, cls)), (500, None))
    headers = {"X-Error-Message": exc.message.encode("ascii", "replace").decode()[:500]}
    if code:
        headers["X-Error-Code"] = code
    if isinstance(exc, EntryNotFound) and len(exc.revision) == 40:
        headers["X-Repo-Commit"] = exc.revision  # lets clients cache "this file does not exist at this commit"
    if request.method == "HEAD":
        return JSONResponse(None, status_code=status, headers=headers)
    return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)


def create_app(
    registry: Registry, *, tokens: dict[str, str] | None = None, page_size: int = DEFAULT_PAGE_SIZE, max_upload_bytes: int | None = None,
) -> FastAPI:
    """The hub over `registry`'s database and blob store; `tokens` (secret -> user) are static write tokens.

    Temp files a killed server left (upload scratch, blob-store temp files) are removed before it serves."""
    from . import api, commits, registry_api, resolve

    app = FastAPI(title="adapterhub", docs_url="/api/adapterhub/docs", openapi_url="/api/adapterhub/openapi.json", redoc_url=None)
    scratch = claim_scratch(registry.home / "hub-uploads")
    remove_stale_temp([registry.blobs.root / "tmp"], before=STARTED_AT)
    access = Access(registry.db, tokens)
    app.state.hub = HubContext(registry, HubStore(registry.db, registry.blobs), access, scratch, page_size, max_upload_bytes)
    app.add_middleware(_RefuseNul)

    @app.exception_handler(AdapterHubError)
    async def _on_error(request: Request, exc: AdapterHubError) -> JSONResponse:
        return error_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default is a 422 with a list of pydantic errors; the Hub answers 400 with one line.
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(UsageError(f"bad request: {where}: {first.get('msg', 'invalid')}"), request)

    @app.exception_handler(sa_exc.DataError)
    async def _on_bad_value(request: Request, exc: sa_exc.DataError) -> JSONResponse:
        # A value the database cannot store (PostgreSQL: NUL in text, an out-of-range number): the input's fault.
        first = str(exc.orig).splitlines()[0] if exc.orig is not None else "invalid value"
        return error_response(UsageError(f"the database refused a value in this request: {first}"), request)

    app.include_router(registry_api.router)
    app.include_router(api.router)
    app.include_router(commits.router)
    app.include_router(resolve.router)  # last: its /{ns}/{name}/resolve/... pattern is the most general
    from ..web import router as web_router  # the HTML pages: included after every API route, so those win

    app.include_router(web_router)
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


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory adapterhub.hub.server.app:app_from_env` (ADAPTERHUB_HOME / _DATABASE_URL)."""
    return create_app(Registry())


def serve(
    *, home: Path | None = None, database_url: str | None = None, host: str = "127.0.0.1", port: int = 8000,
    tokens: dict[str, str] | None = None, page_size: int = DEFAULT_PAGE_SIZE, log_level: str = "warning",
    on_ready: Any = None, max_upload_bytes: int | None = None,
) -> None:
    """Run the hub with uvicorn until interrupted, over the registry at `home` (blob store) and `database_url`."""
    import gc

    import uvicorn

    app = create_app(Registry(home=home, database_url=database_url), tokens=tokens, page_size=page_size, max_upload_bytes=max_upload_bytes)
    if on_ready is not None:
        on_ready(f"http://{host}:{port}")
    gc.freeze()  # startup objects live forever: full collections skip them (search p95 42 -> 18 ms at 100k)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
