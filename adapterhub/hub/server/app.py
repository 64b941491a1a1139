"""The ASGI app: the Hugging Face Hub HTTP API subset the HF clients use, plus the registry's own JSON API.

One `HubContext` holds the registry (database + blob store) and the hub's commit store over the same database;
routes live in `resolve` (downloads), `commits` (uploads), `api` (info and listings) and `registry_api`.
Errors leave as the Hub sends them: a status, a JSON `{"error": ...}` body and `X-Error-Code`, which is what
`huggingface_hub` turns into RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ...errors import (
    AdapterHubError,
    AlreadyExists,
    CommitConflict,
    EntryNotFound,
    IntegrityError,
    InvalidFile,
    NotFound,
    PermissionDenied,
    RepoNotFound,
    RevisionNotFound,
    StoreError,
    Unauthenticated,
    UnsupportedFeature,
    UsageError,
)
from ...store.hub_store import HubStore
from ...store.registry import Registry
from ..types import HubRepo
from .access import Access

DEFAULT_PAGE_SIZE = 1000  # the Hub's page size for tree listings


@dataclass
class HubContext:
    """What every route needs: the registry, the hub store over the same database, and the access rules."""

    registry: Registry
    hub: HubStore
    access: Access
    scratch: Path  # temp files of uploads in progress and commit checks, under the registry home
    page_size: int = DEFAULT_PAGE_SIZE

    def check_readable(self, request: Request, repo: HubRepo) -> None:
        self.access.check_readable(request, repo)


def context(request: Request) -> HubContext:
    return request.app.state.hub  # type: ignore[no-any-return]


# Exception class -> (HTTP status, X-Error-Code). Order matters: the first matching class wins.
_ERRORS: list[tuple[type[AdapterHubError], int, str | None]] = [
    (RepoNotFound, 404, "RepoNotFound"),
    (RevisionNotFound, 404, "RevisionNotFound"),
    (EntryNotFound, 404, "EntryNotFound"),
    (NotFound, 404, None),
    (AlreadyExists, 409, None),
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


def create_app(registry: Registry, *, tokens: dict[str, str] | None = None, page_size: int = DEFAULT_PAGE_SIZE) -> FastAPI:
    """The hub over `registry`'s database and blob store; `tokens` (secret -> user) are static write tokens."""
    from . import api, commits, registry_api, resolve

    app = FastAPI(title="adapterhub", docs_url="/api/adapterhub/docs", openapi_url="/api/adapterhub/openapi.json", redoc_url=None)
    scratch = registry.home / "hub-uploads"
    scratch.mkdir(parents=True, exist_ok=True)
    _remove_stale(scratch, older_than_s=24 * 3600)
    access = Access(registry.db, tokens)
    app.state.hub = HubContext(registry, HubStore(registry.db, registry.blobs), access, scratch, page_size)

    @app.exception_handler(AdapterHubError)
    async def _on_error(request: Request, exc: AdapterHubError) -> JSONResponse:
        return error_response(exc, request)

    app.include_router(registry_api.router)
    app.include_router(api.router)
    app.include_router(commits.router)
    app.include_router(resolve.router)  # last: its /{ns}/{name}/resolve/... pattern is the most general
    return app


def _remove_stale(scratch: Path, *, older_than_s: float) -> None:
    """Temp files a killed server left behind; young ones may belong to another worker's upload in progress."""
    import shutil
    import time

    now = time.time()
    for p in scratch.iterdir():
        try:
            if now - p.stat().st_mtime > older_than_s:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        except OSError:
            continue  # removed meanwhile by someone else


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory adapterhub.hub.server.app:app_from_env` (ADAPTERHUB_HOME / _DATABASE_URL)."""
    return create_app(Registry())


def serve(
    *, home: Path | None = None, database_url: str | None = None, host: str = "127.0.0.1", port: int = 8000,
    tokens: dict[str, str] | None = None, page_size: int = DEFAULT_PAGE_SIZE, log_level: str = "warning",
    on_ready: Any = None,
) -> None:
    """Run the hub with uvicorn until interrupted, over the registry at `home` (blob store) and `database_url`."""
    import uvicorn

    app = create_app(Registry(home=home, database_url=database_url), tokens=tokens, page_size=page_size)
    if on_ready is not None:
        on_ready(f"http://{host}:{port}")
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
