"""The hub's domain types: repositories, commits and files as the server and clients see them (never ORM rows)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from ..errors import UsageError
from .oids import lfs_pointer_oid, lfs_pointer_size

# First path segments the hub's routes and pages use (and the Hub's own type prefixes): a repository under one of
# these namespaces could not be reached (`/api/...` is the API), so none may be created. The one list of them.
RESERVED_NAMESPACES = frozenset({
    "api", "static", "assets", "login", "logout", "signup", "oauth", "auth", "settings", "admin", "new", "bases",
    "compare", "search", "docs", "v1", "v2", "models", "datasets", "spaces", "collections", "health", "healthz",
    "metrics", "favicon.ico", "robots.txt",
})  # fmt: skip


def check_namespace_allowed(namespace: str) -> str:
    """Refuse a namespace the hub's routes use (any case); called where repositories are created."""
    if namespace.lower() in RESERVED_NAMESPACES:
        raise UsageError(f"namespace {namespace!r} is reserved for the hub's own routes", hint="pick another namespace")
    return namespace


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HubFile(_Model):
    """A file in one commit. `git_sha1` is git's blob id of the content; LFS-size files are also addressed by sha256."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    git_sha1: str = Field(pattern=r"^[0-9a-f]{40}$")
    size: int = Field(ge=0)
    lfs: bool = False

    @property
    def oid(self) -> str:
        """The tree `oid` the Hub reports: the git id of the LFS pointer for LFS files, of the content otherwise."""
        return lfs_pointer_oid(self.sha256, self.size) if self.lfs else self.git_sha1

    @property
    def etag(self) -> str:
        """What `/resolve` sends as ETag: sha256 for LFS files (the Hub's X-Linked-Etag), git blob id otherwise."""
        return self.sha256 if self.lfs else self.git_sha1

    @property
    def pointer_size(self) -> int:
        return lfs_pointer_size(self.sha256, self.size)


class FileAddition(_Model):
    """A file to put in a commit; its bytes are already in the blob store under `sha256`."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    git_sha1: str = Field(pattern=r"^[0-9a-f]{40}$")
    size: int = Field(ge=0)


class HubCommit(_Model):
    id: str = Field(pattern=r"^[0-9a-f]{40}$")
    parent_id: str | None = None
    summary: str = ""
    description: str = ""
    adapter_ref: str | None = None  # the registry version this commit registered, e.g. "ns/name@3"
    created_at: datetime


class HubRepo(_Model):
    namespace: str
    name: str
    repo_type: str = "model"
    private: bool = False
    created_at: datetime
    last_modified: datetime
    head: str | None = None  # the commit `main` points at

    @property
    def repo_id(self) -> str:
        return f"{self.namespace}/{self.name}"
