"""The hub's domain types: repositories, commits and files as the server and clients see them (never ORM rows)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from .oids import lfs_pointer_oid, lfs_pointer_size


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
