"""What every route of the hub shares: the request context (`HubContext`, `context()`), the body readers, and the
error table that turns an AdapterHubError into the Hub's answer (status, `X-Error-Code`, no server paths).

The route modules (`resolve`, `commits`, `api`, `registry_api`) import from here; `app` assembles them into the app.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

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
from ...store.registry import Registry
from ..repos import HubStore
from ..types import HubCommit, HubRepo
from .access import Access

DEFAULT_PAGE_SIZE = 1000  # the Hub's page size for tree listings
# Request body limits (HTTP 413 above them), enforced for every route by `BodyLimit` while the body arrives.
MAX_JSON_BODY = 1 << 20  # every route but the commit: create-repo, preupload, validate-yaml, search, paths-info
DEFAULT_MAX_UPLOAD_BYTES = 10 << 30  # a commit's NDJSON body, base64 included: `serve --max-upload-bytes`


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
    redirects: bool = True  # big files answer with a presigned URL when the blob store can sign one (serve --no-redirect)

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


def context(request: Request) -> HubContext:
    hub: HubContext = request.app.state.hub
    return hub


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
    for root in (registry.home, registry.home / UPLOADS_DIR, scratch, registry.blobs.tmp.parent):
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
