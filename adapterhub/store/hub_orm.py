"""The hub's tables: repos served over the Hugging Face HTTP API, their commits, each commit's files, and branch refs.

A commit stores its full file list (not a diff), so any old revision is one indexed query away and stays
downloadable after `main` moves. File bytes live in the shared blob store under their sha256.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .orm import Base, utcnow


class HubRepoRow(Base):
    """A hub repository `namespace/name`; independent of the registry's `repos` so deleting versions never drops history."""

    __tablename__ = "hub_repos"
    __table_args__ = (UniqueConstraint("namespace", "name", name="uq_hub_repos_namespace_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(96))
    name: Mapped[str] = mapped_column(String(96))
    repo_type: Mapped[str] = mapped_column(String(16), default="model")
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_modified: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class HubCommitRow(Base):
    """One commit: a 40-hex id like git's, its parent, message, and the adapter version it registered (if any)."""

    __tablename__ = "hub_commits"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("hub_repos.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[str | None] = mapped_column(String(40))
    summary: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    adapter_ref: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class HubCommitFileRow(Base):
    """A file as of one commit: path, sha256 (blob store key), git blob sha1 (the Hub's `oid`) and size."""

    __tablename__ = "hub_commit_files"

    commit_id: Mapped[str] = mapped_column(ForeignKey("hub_commits.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(String(512), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    git_sha1: Mapped[str] = mapped_column(String(40))
    size: Mapped[int] = mapped_column(BigInteger)
    lfs: Mapped[bool] = mapped_column(Boolean, default=False)


class HubRefRow(Base):
    """A branch (`main`) pointing at a commit; moving it is the only update a commit makes to existing rows."""

    __tablename__ = "hub_refs"

    repo_id: Mapped[int] = mapped_column(ForeignKey("hub_repos.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    commit_id: Mapped[str] = mapped_column(ForeignKey("hub_commits.id"))
