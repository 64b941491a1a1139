"""The metadata tables (SQLAlchemy 2 typed ORM): the registry's adapters, bases, aliases and tokens, and the hub's
repositories, commits, commit files and refs. Registry rows leave the store only as cards (`convert.py`); the hub's
rows are read and written by `adapterhub.hub.repos`, the hub's own store."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class RepoRow(Base):
    """One adapter name (`namespace/name`): owns its version counter so concurrent adds never collide."""

    __tablename__ = "repos"
    __table_args__ = (UniqueConstraint("namespace", "name", name="uq_repos_namespace_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(96))
    name: Mapped[str] = mapped_column(String(96))
    last_version: Mapped[int] = mapped_column(Integer, default=0)  # highest version ever issued (never reused)
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    adapters: Mapped[list[AdapterRow]] = relationship(back_populates="repo", cascade="all, delete-orphan")
    aliases: Mapped[list[AliasRow]] = relationship(back_populates="repo", cascade="all, delete-orphan")


class BaseModelRow(Base):
    __tablename__ = "base_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    arch_hash: Mapped[str] = mapped_column(String(64), index=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    parameter_count: Mapped[int] = mapped_column(BigInteger)
    dtype: Mapped[str] = mapped_column(String(16))
    model_type: Mapped[str | None] = mapped_column(String(64))
    lineage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    scores: Mapped[list[BaseEvalScoreRow]] = relationship(cascade="all, delete-orphan")


class AdapterRow(Base):
    """One version of one adapter."""

    __tablename__ = "adapters"
    __table_args__ = (
        UniqueConstraint("repo_id", "version", name="uq_adapters_repo_version"),
        Index("ix_adapters_latest_task_created", "is_latest", "task", "created_at"),
        Index("ix_adapters_latest_created", "is_latest", "created_at"),
        Index("ix_adapters_base_latest_created", "base_model_id", "is_latest", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    is_latest: Mapped[bool] = mapped_column(Boolean, default=True)  # newest surviving version of its repo
    task: Mapped[str] = mapped_column(String(128))
    method: Mapped[str] = mapped_column(String(16))
    rank: Mapped[int] = mapped_column(Integer)
    rank_pattern: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    alpha: Mapped[float] = mapped_column(Float)
    use_rslora: Mapped[bool] = mapped_column(Boolean, default=False)
    target_modules: Mapped[list[str]] = mapped_column(JSON, default=list)
    description: Mapped[str] = mapped_column(Text, default="")
    # lower-cased "ns/name task description tags": one column scanned by text search, no joins or lower() per row
    search_text: Mapped[str] = mapped_column(Text, default="")
    license: Mapped[str | None] = mapped_column(String(64))
    base_model_id: Mapped[int | None] = mapped_column(ForeignKey("base_models.id", ondelete="SET NULL"))
    base_model_name_or_path: Mapped[str | None] = mapped_column(String(512))
    peft_task_type: Mapped[str | None] = mapped_column(String(64))
    lineage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    repo: Mapped[RepoRow] = relationship(back_populates="adapters")
    base_model: Mapped[BaseModelRow | None] = relationship()
    scores: Mapped[list[EvalScoreRow]] = relationship(back_populates="adapter", cascade="all, delete-orphan")
    files: Mapped[list[FileRow]] = relationship(back_populates="adapter", cascade="all, delete-orphan")
    tags: Mapped[list[TagRow]] = relationship(back_populates="adapter", cascade="all, delete-orphan")


class AliasRow(Base):
    """A movable name for one version (`latest` is implicit; `prod`, `stable`... are stored here)."""

    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("repo_id", "alias", name="uq_aliases_repo_alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"), index=True)
    alias: Mapped[str] = mapped_column(String(64))
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"), index=True)

    repo: Mapped[RepoRow] = relationship(back_populates="aliases")
    adapter: Mapped[AdapterRow] = relationship()


class EvalScoreRow(Base):
    __tablename__ = "eval_scores"
    __table_args__ = (
        Index("ix_eval_scores_key_value", "dataset", "metric", "value"),
        # covering index: "does adapter X have score K at least V" and "sort by K" never touch the table
        Index("ix_eval_scores_adapter_key", "adapter_id", "dataset", "metric", "value", "higher_is_better"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"), index=True)
    dataset: Mapped[str] = mapped_column(String(128))
    metric: Mapped[str] = mapped_column(String(64))
    split: Mapped[str] = mapped_column(String(32), default="test")
    value: Mapped[float] = mapped_column(Float)
    higher_is_better: Mapped[bool] = mapped_column(Boolean, default=True)
    source: Mapped[str] = mapped_column(String(16), default="reported", server_default="reported")  # or "measured"
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # a ScoreProvenance for measured scores

    adapter: Mapped[AdapterRow] = relationship(back_populates="scores")


class BaseEvalScoreRow(Base):
    """A base model's own measured score (`adapterhub eval --base-only`): what each adapter's gain is measured from."""

    __tablename__ = "base_eval_scores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_models.id", ondelete="CASCADE"), index=True)
    dataset: Mapped[str] = mapped_column(String(128))
    metric: Mapped[str] = mapped_column(String(64))
    split: Mapped[str] = mapped_column(String(32))
    value: Mapped[float] = mapped_column(Float)
    higher_is_better: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(16), default="measured", server_default="measured")
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class FileRow(Base):
    """A file of an adapter version; its bytes live in the blob store under `sha256`."""

    __tablename__ = "adapter_files"
    __table_args__ = (UniqueConstraint("adapter_id", "path", name="uq_adapter_files_adapter_path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)

    adapter: Mapped[AdapterRow] = relationship(back_populates="files")


class TagRow(Base):
    __tablename__ = "adapter_tags"
    __table_args__ = (UniqueConstraint("adapter_id", "tag", name="uq_adapter_tags_adapter_tag"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"), index=True)
    tag: Mapped[str] = mapped_column(String(64), index=True)

    adapter: Mapped[AdapterRow] = relationship(back_populates="tags")


class TokenRow(Base):
    """An access token for the hub: only its sha256 is stored; the secret is shown once, at creation."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # first characters of the secret, to recognise it in lists
    label: Mapped[str] = mapped_column(String(128), default="")
    namespace: Mapped[str] = mapped_column(String(96))  # "*" means every namespace
    scope: Mapped[str] = mapped_column(String(8))  # "read" or "write" (write implies read)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# --- the hub's tables: repos served over the Hugging Face HTTP API, their commits, each commit's files, branch refs.
# A commit stores its full file list (not a diff), so any old revision is one indexed query away and stays
# downloadable after `main` moves. File bytes live in the shared blob store under their sha256.


class HubRepoRow(Base):
    """A hub repository `namespace/name`; independent of the registry's `repos` so deleting versions never drops history."""

    __tablename__ = "hub_repos"
    __table_args__ = (
        UniqueConstraint("namespace", "name", name="uq_hub_repos_namespace_name"),
        # only the private repositories: what every anonymous page reads first (visibility.hidden_repo_ids)
        Index(
            "ix_hub_repos_private",
            "namespace",
            "name",
            sqlite_where=text("private IS 1"),
            postgresql_where=text("private IS true"),
        ),
    )

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


class HubStagedUploadRow(Base):
    """A streamed upload received and hashed into the blob store but not yet committed: the blob a commit by this
    caller to this repository may name. In the database (not on one replica's disk), so any replica can take the
    commit; its `sha256` keeps the blob from gc until the row is pruned."""

    __tablename__ = "hub_staged_uploads"
    __table_args__ = (UniqueConstraint("repo_key", "caller_key", "sha256", name="uq_hub_staged_uploads_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_key: Mapped[str] = mapped_column(String(200))  # "namespace/name"
    caller_key: Mapped[str] = mapped_column(String(64))  # a hash of the caller's token identity, never the token
    sha256: Mapped[str] = mapped_column(String(64))
    git_sha1: Mapped[str] = mapped_column(String(40))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


def all_metadata() -> MetaData:
    """The metadata with every table adapterhub declares (the registry's and the hub's): what Alembic compares."""
    return Base.metadata
