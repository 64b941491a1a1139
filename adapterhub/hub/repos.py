"""The hub's store: repositories, commits and branch refs in the database, file bytes in the shared blob store.

Every commit records its whole file list, so a revision is immutable and stays downloadable after `main` moves.
A commit runs in one write transaction; a hook given by the caller (recording the adapter the commit contains,
`adapters.PreparedAdapter.hook`) runs inside that same transaction, so either both land or neither does. The slow
part of that, checking the adapter's files, happens before the transaction (`adapters.prepare_adapter`), so no
writer waits on it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from ..errors import AlreadyExists, CommitConflict, EntryNotFound, RepoNotFound, RevisionNotFound, UsageError
from ..fsutil import check_relative_path, check_segment
from ..store.blobs import Blobs
from ..store.db import Database
from ..store.orm import HubCommitFileRow, HubCommitRow, HubRefRow, HubRepoRow
from ..store.visibility import Visibility, hub_repo_visible
from . import tags
from .oids import GITATTRIBUTES, commit_id, git_blob_sha1, is_lfs
from .types import FileAddition, HubCommit, HubFile, HubRepo, check_namespace_allowed

DEFAULT_BRANCH = "main"
_COMMIT_ID_LEN = 40

# Called inside the commit's transaction with the repo id and the new tree; returns what it registered (or None).
CommitHook = Callable[[Session, str, dict[str, HubFile]], "str | None"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(dt: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were stored in UTC."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


class HeadMoved(CommitConflict):
    """The branch moved between a commit's checks and its transaction: the caller checks again on the new head."""


def apply_changes(
    repo_id: str, head: str | None, tree: dict[str, HubFile], deletions: Iterable[str], additions: list[FileAddition]
) -> dict[str, HubFile]:
    """The file tree after a commit: deletions name files or folders (a trailing '/' or any folder prefix)."""
    tree = dict(tree)
    for d in deletions:
        folder = d.rstrip("/") + "/"
        doomed = [p for p in tree if p == d or p.startswith(folder)]
        if not doomed:
            raise EntryNotFound(repo_id, head or DEFAULT_BRANCH, d)
        for p in doomed:
            del tree[p]
    for a in additions:
        tree[a.path] = HubFile(path=a.path, sha256=a.sha256, git_sha1=a.git_sha1, size=a.size, lfs=is_lfs(a.path, a.size))
    return tree


def _is_commit_id(rev: str) -> bool:
    return len(rev) == _COMMIT_ID_LEN and all(c in "0123456789abcdef" for c in rev)


class HubStore:
    """Hub repositories over the registry's database and blob store."""

    def __init__(self, db: Database, blobs: Blobs) -> None:
        self.db = db
        self.blobs = blobs

    # --- repositories ------------------------------------------------------------------------------------------

    def create_repo(self, namespace: str, name: str, *, private: bool = False, repo_type: str = "model") -> HubRepo:
        """A new repository with an initial commit holding `.gitattributes`, as the Hub creates them."""
        check_segment(namespace, "namespace")
        check_segment(name, "repository name")
        check_namespace_allowed(namespace)
        sha256, size = self.blobs.put_bytes(GITATTRIBUTES)
        attrs = HubFile(path=".gitattributes", sha256=sha256, git_sha1=git_blob_sha1(GITATTRIBUTES), size=size)
        try:
            return self._create_repo(namespace, name, private, repo_type, attrs)
        except sa.exc.IntegrityError:  # a concurrent create won the unique constraint (PostgreSQL)
            raise AlreadyExists(f"hub repository {namespace}/{name}", hint="push to it, or pick another name") from None

    def _create_repo(self, namespace: str, name: str, private: bool, repo_type: str, attrs: HubFile) -> HubRepo:
        with self.db.write() as s:
            if self._repo_row(s, namespace, name) is not None:
                raise AlreadyExists(f"hub repository {namespace}/{name}", hint="push to it, or pick another name")
            now = _now()
            row = HubRepoRow(
                namespace=namespace, name=name, private=private, repo_type=repo_type, created_at=now, last_modified=now
            )
            s.add(row)
            s.flush()
            cid = commit_id(None, [(attrs.path, attrs.oid)], "initial commit", now, secrets.token_hex(8))
            s.add(HubCommitRow(id=cid, repo_id=row.id, parent_id=None, summary="initial commit", description="", created_at=now))
            s.flush()
            s.add(HubCommitFileRow(commit_id=cid, **attrs.model_dump()))
            s.add(HubRefRow(repo_id=row.id, name=DEFAULT_BRANCH, commit_id=cid))
            s.flush()
            return self._to_repo(row, cid)

    def repo(self, namespace: str, name: str) -> HubRepo:
        with self.db.session() as s:
            row = self._repo_row(s, namespace, name)
            if row is None:
                raise RepoNotFound(f"{namespace}/{name}")
            return self._to_repo(row, self._ref(s, row.id, DEFAULT_BRANCH))

    def list_repos(
        self,
        *,
        search: str | None = None,
        author: str | None = None,
        sort: str = "lastModified",
        limit: int = 100,
        offset: int = 0,
        visibility: Visibility | None = None,
        count: bool = True,
    ) -> tuple[list[HubRepo], int | None]:
        """One page of repositories whose `ns/name` contains `search` (any case), owned by `author`, that
        `visibility` may see (None: all), in `sort` order; and the total of such repositories when `count`."""
        q = self._listing(search, author, visibility)
        with self.db.session() as s:
            total = (s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0) if count else None
            rows = s.scalars(q.order_by(*self._order(sort)).offset(offset).limit(limit)).all()
            heads = dict(
                s.execute(
                    sa.select(HubRefRow.repo_id, HubRefRow.commit_id).where(
                        HubRefRow.repo_id.in_([r.id for r in rows]), HubRefRow.name == DEFAULT_BRANCH
                    )
                ).all()
            )
            return [self._to_repo(r, heads.get(r.id)) for r in rows], total

    def list_heads(
        self,
        *,
        search: str | None = None,
        author: str | None = None,
        sort: str = "lastModified",
        limit: int = 100,
        offset: int = 0,
        visibility: Visibility | None = None,
    ) -> list[tuple[HubRepo, HubCommit]]:
        """Like `list_repos`, with each repository's head commit, in one query (every repository has `main` from its
        creation on; one without would be left out): what a listing page needs, without a query per repository. The page is cut from `hub_repos` alone
        first, so only its own rows are joined to their refs and commits."""
        page = self._listing(search, author, visibility).order_by(*self._order(sort)).offset(offset).limit(limit)
        repo = aliased(HubRepoRow, page.subquery())
        q = sa.select(repo, HubCommitRow).join(HubRefRow, sa.and_(HubRefRow.repo_id == repo.id, HubRefRow.name == DEFAULT_BRANCH))
        q = q.join(HubCommitRow, HubCommitRow.id == HubRefRow.commit_id).order_by(*self._order(sort, repo))
        with self.db.session() as s:
            return [(self._to_repo(r, c.id), self._to_commit(c)) for r, c in s.execute(q).all()]

    def files_of(self, commits: Iterable[str]) -> dict[str, list[HubFile]]:
        """The files of several commits in one query: commit id -> files sorted by path."""
        ids = sorted(set(commits))
        out: dict[str, list[HubFile]] = {c: [] for c in ids}
        if not ids:
            return out
        f = HubCommitFileRow  # plain columns: no ORM identity map for a whole page
        q = (
            sa.select(f.commit_id, f.path, f.sha256, f.git_sha1, f.size, f.lfs)
            .where(f.commit_id.in_(ids))
            .order_by(f.commit_id, f.path)
        )
        with self.db.session() as s:
            for cid, path, sha256, git_sha1, size, lfs in s.execute(q).tuples():
                out[cid].append(HubFile(path=path, sha256=sha256, git_sha1=git_sha1, size=size, lfs=lfs))
        return out

    @staticmethod
    def _listing(search: str | None, author: str | None, visibility: Visibility | None) -> sa.Select[HubRepoRow]:
        q = sa.select(HubRepoRow)
        if search:
            escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            q = q.where(sa.func.lower(HubRepoRow.namespace + "/" + HubRepoRow.name).like(f"%{escaped}%", escape="\\"))
        if author:
            q = q.where(HubRepoRow.namespace == author)
        if visibility is not None:
            q = q.where(hub_repo_visible(visibility))
        return q

    @staticmethod
    def _order(sort: str, table: Any = HubRepoRow) -> list[sa.ColumnElement[Any]]:
        """`id` sorts by name; `createdAt` newest first; anything else (the Hub's downloads, likes...) by last change."""
        if sort == "id":
            return [table.namespace.asc(), table.name.asc()]
        column = table.created_at if sort == "createdAt" else table.last_modified
        return [column.desc(), table.id.desc()]

    # --- revisions and files -----------------------------------------------------------------------------------

    def resolve(self, namespace: str, name: str, revision: str) -> tuple[HubRepo, HubCommit]:
        """A branch name or a full commit id -> the repository and the commit; RepoNotFound/RevisionNotFound."""
        with self.db.session() as s:
            row = self._repo_row(s, namespace, name)
            if row is None:
                raise RepoNotFound(f"{namespace}/{name}")
            head = self._ref(s, row.id, DEFAULT_BRANCH)
            cid = self._resolve_in(s, row, revision)
            commit = s.get(HubCommitRow, cid)
            assert commit is not None  # a ref always points at an existing commit (foreign key)
            return self._to_repo(row, head), self._to_commit(commit)

    def _resolve_in(self, s: Session, row: HubRepoRow, revision: str) -> str:
        """A branch, then a tag (`v3`, `prod`: see `tags`), then a full commit id of this repository -> commit id."""
        if len(revision) > tags.MAX_REVISION:
            raise RevisionNotFound(f"{row.namespace}/{row.name}", revision[:80] + "...")
        cid = self._ref(s, row.id, revision) or tags.tag_commit(s, row, revision)
        if cid is None and _is_commit_id(revision):
            cid = s.scalar(sa.select(HubCommitRow.id).where(HubCommitRow.id == revision, HubCommitRow.repo_id == row.id))
        if cid is None:
            raise RevisionNotFound(f"{row.namespace}/{row.name}", revision)
        return cid

    # --- refs: tags, branches, delete and move (the rules are in `tags`) ----------------------------------------

    def refs(self, namespace: str, name: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(branches, tags) of a repository, each a list of (name, commit id)."""
        with self.db.session() as s:
            row = tags.find_repo(s, namespace, name)
            branches = tags.list_branches(s, row)
            names = {b for b, _ in branches}  # an alias named like a branch is hidden by it, as in `resolve`
            return branches, [(t, c) for t, c in tags.list_tags(s, row) if t not in names]

    def create_tag(self, namespace: str, name: str, tag: str, revision: str) -> None:
        self._write_ref(namespace, name, lambda s, row: tags.create_tag(s, row, tag, self._resolve_in(s, row, revision)))

    def delete_tag(self, namespace: str, name: str, tag: str) -> None:
        self._write_ref(namespace, name, lambda s, row: tags.delete_tag(s, row, tag))

    def create_branch(self, namespace: str, name: str, branch: str, revision: str) -> None:
        self._write_ref(namespace, name, lambda s, row: tags.create_branch(s, row, branch, self._resolve_in(s, row, revision)))

    def delete_branch(self, namespace: str, name: str, branch: str) -> None:
        self._write_ref(namespace, name, lambda s, row: tags.delete_branch(s, row, branch))

    def delete_repo(self, namespace: str, name: str) -> None:
        self._write_ref(namespace, name, tags.delete_repo)

    def move_repo(self, namespace: str, name: str, to_namespace: str, to_name: str) -> None:
        check_segment(to_namespace, "namespace")
        check_segment(to_name, "repository name")
        check_namespace_allowed(to_namespace)
        self._write_ref(namespace, name, lambda s, row: tags.move_repo(s, row, to_namespace, to_name))

    def _write_ref(self, namespace: str, name: str, change: Callable[[Session, HubRepoRow], None]) -> None:
        """Run one ref change in a write transaction; a concurrent writer winning a unique constraint is a 409."""
        try:
            with self.db.write() as s:
                row = s.scalar(
                    sa.select(HubRepoRow).where(HubRepoRow.namespace == namespace, HubRepoRow.name == name).with_for_update()
                )
                if row is None:
                    raise RepoNotFound(f"{namespace}/{name}")
                change(s, row)
        except sa.exc.IntegrityError:
            raise AlreadyExists(f"a ref or name of {namespace}/{name}", hint="it changed concurrently; list refs again") from None

    def files(self, commit: str) -> list[HubFile]:
        """All files of a commit, sorted by path."""
        with self.db.session() as s:
            rows = s.scalars(
                sa.select(HubCommitFileRow).where(HubCommitFileRow.commit_id == commit).order_by(HubCommitFileRow.path)
            )
            return [self._to_file(r) for r in rows]

    def file(self, repo_id: str, commit: str, path: str) -> HubFile:
        with self.db.session() as s:
            row = s.get(HubCommitFileRow, (commit, path))
            if row is None:
                raise EntryNotFound(repo_id, commit, path)
            return self._to_file(row)

    def head_tree(self, namespace: str, name: str, branch: str = DEFAULT_BRANCH) -> tuple[str | None, dict[str, HubFile]]:
        """The branch head and its files, read without a write lock (a commit's checks run against this)."""
        with self.db.session() as s:
            repo = self._repo_row(s, namespace, name)
            if repo is None:
                raise RepoNotFound(f"{namespace}/{name}")
            head = self._ref(s, repo.id, branch)
            if head is None:
                return None, {}
            rows = s.scalars(sa.select(HubCommitFileRow).where(HubCommitFileRow.commit_id == head))
            return head, {r.path: self._to_file(r) for r in rows}

    def referenced_blobs(self, namespace: str, name: str, sha256s: Iterable[str]) -> dict[str, tuple[str, int]]:
        """Which of `sha256s` some commit of this repository (any revision) holds, with the git blob id and size it
        recorded: the only blobs a commit may copy by hash (an `lfsFile`), so a writer cannot adopt, or probe for, the
        bytes of another repository; and a copy needs no read of the bytes."""
        wanted = sorted(set(sha256s))
        if not wanted:
            return {}
        with self.db.session() as s:
            repo = self._repo_row(s, namespace, name)
            if repo is None:
                raise RepoNotFound(f"{namespace}/{name}")
            q = (
                sa.select(HubCommitFileRow.sha256, HubCommitFileRow.git_sha1, HubCommitFileRow.size).distinct()
                .join(HubCommitRow, HubCommitRow.id == HubCommitFileRow.commit_id)
                .where(HubCommitRow.repo_id == repo.id, HubCommitFileRow.sha256.in_(wanted))
            )  # fmt: skip
            return {sha: (git_sha1, size) for sha, git_sha1, size in s.execute(q)}

    def history(self, namespace: str, name: str, revision: str = DEFAULT_BRANCH, *, limit: int = 1000) -> list[HubCommit]:
        """Commits reachable from `revision`, newest first (follows parent links)."""
        _, commit = self.resolve(namespace, name, revision)
        out = [commit]
        with self.db.session() as s:
            while out[-1].parent_id and len(out) < limit:
                row = s.get(HubCommitRow, out[-1].parent_id)
                if row is None:
                    break
                out.append(self._to_commit(row))
        return out

    # --- commits -----------------------------------------------------------------------------------------------

    def commit(
        self,
        namespace: str,
        name: str,
        *,
        additions: list[FileAddition],
        deletions: Iterable[str] = (),
        summary: str = "",
        description: str = "",
        parent: str | None = None,
        branch: str = DEFAULT_BRANCH,
        hook: CommitHook | None = None,
        checked_head: str | None | bool = False,
    ) -> HubCommit:
        """Apply additions and deletions on top of `branch`; with `parent`, refuse (CommitConflict) if the head moved.

        Deletions name files or folders (a trailing '/' or any prefix that is a folder). Blobs must be stored first.
        `checked_head` (a commit id or None for an empty branch) is the head the caller checked the new tree
        against: if the branch has moved since, HeadMoved is raised and nothing is written.
        """
        if branch != DEFAULT_BRANCH:
            raise UsageError(f"cannot commit to {branch!r}: this hub has one branch, {DEFAULT_BRANCH}")
        for a in additions:
            check_relative_path(a.path)
            if not self.blobs.has(a.sha256):
                raise UsageError(f"file {a.path}: blob {a.sha256[:12]} was not uploaded")
        with self.db.write() as s:
            repo = self._repo_row(s, namespace, name)
            if repo is None:
                raise RepoNotFound(f"{namespace}/{name}")
            # Lock the branch row (PostgreSQL); on SQLite the write transaction already serialises writers.
            ref = s.scalar(sa.select(HubRefRow).where(HubRefRow.repo_id == repo.id, HubRefRow.name == branch).with_for_update())
            head = ref.commit_id if ref is not None else None
            if parent is not None and parent != head:
                raise CommitConflict(f"{namespace}/{name}", parent, head)
            if checked_head is not False and checked_head != head:
                raise HeadMoved(f"{namespace}/{name}", str(checked_head), head)
            tree: dict[str, HubFile] = {}
            if head is not None:
                rows = s.scalars(sa.select(HubCommitFileRow).where(HubCommitFileRow.commit_id == head))
                tree = {r.path: self._to_file(r) for r in rows}
            tree = apply_changes(f"{namespace}/{name}", head, tree, deletions, additions)
            now = _now()
            cid = commit_id(head, [(f.path, f.oid) for f in tree.values()], summary, now, secrets.token_hex(8))
            row = HubCommitRow(id=cid, repo_id=repo.id, parent_id=head, summary=summary, description=description, created_at=now)
            s.add(row)
            s.flush()
            s.add_all(HubCommitFileRow(commit_id=cid, **f.model_dump()) for f in tree.values())
            if ref is None:
                s.add(HubRefRow(repo_id=repo.id, name=branch, commit_id=cid))
            else:
                ref.commit_id = cid
            repo.last_modified = now
            s.flush()
            if hook is not None:
                row.adapter_ref = hook(s, f"{namespace}/{name}", tree)
                s.flush()
            return self._to_commit(row)

    def blob_bytes(self, f: HubFile, *, limit: int | None = None) -> bytes:
        """A small file's bytes (cards, configs; at most `limit`), from whichever store keeps the blobs."""
        return self.blobs.read_bytes(f.sha256, limit=limit)

    # --- rows -> domain types ----------------------------------------------------------------------------------

    @staticmethod
    def _repo_row(s: Session, namespace: str, name: str) -> HubRepoRow | None:
        return s.scalar(sa.select(HubRepoRow).where(HubRepoRow.namespace == namespace, HubRepoRow.name == name))

    @staticmethod
    def _ref(s: Session, repo_pk: int, name: str) -> str | None:
        return s.scalar(sa.select(HubRefRow.commit_id).where(HubRefRow.repo_id == repo_pk, HubRefRow.name == name))

    @staticmethod
    def _to_repo(row: HubRepoRow, head: str | None) -> HubRepo:
        return HubRepo(
            namespace=row.namespace, name=row.name, repo_type=row.repo_type, private=row.private,
            created_at=_aware(row.created_at), last_modified=_aware(row.last_modified), head=head,
        )  # fmt: skip

    @staticmethod
    def _to_commit(row: HubCommitRow) -> HubCommit:
        return HubCommit(
            id=row.id, parent_id=row.parent_id, summary=row.summary, description=row.description,
            adapter_ref=row.adapter_ref, created_at=_aware(row.created_at),
        )  # fmt: skip

    @staticmethod
    def _to_file(row: HubCommitFileRow) -> HubFile:
        return HubFile(path=row.path, sha256=row.sha256, git_sha1=row.git_sha1, size=row.size, lfs=row.lfs)
