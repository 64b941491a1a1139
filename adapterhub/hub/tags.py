"""Hub refs beyond `main`: tags (versions and aliases of the hub's registry) and extra branches.

One source of truth, the hub's registry: every commit that holds an adapter records a registry version
(`HubCommit.adapter_ref`, `ns/name@N`), so
- tag `vN` is the commit that recorded version N of `ns/name` (it exists while that version does);
- any other tag is a registry alias of `ns/name` (`prod`), pointing at the commit of the aliased version.
Creating a tag sets the alias, deleting it removes the alias, and moving an alias (here or with `adapterhub tag` on
the hub's registry) moves the tag. Version tags cannot be created or deleted by hand. Branches other than `main` are
plain refs (`hub_refs`) a caller may create and delete; commits still go to `main` only.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..card import ALIAS_PATTERN, LATEST
from ..errors import AlreadyExists, RepoNotFound, RevisionNotFound, UsageError
from ..store.orm import AdapterRow, AliasRow, HubCommitFileRow, HubCommitRow, HubRefRow, HubRepoRow, RepoRow

VERSION_TAG = re.compile(r"v([1-9][0-9]{0,8})")  # v1, v2, ...: the hub's own tag for each recorded version
MAX_REF_NAME = 64
MAX_REVISION = 255  # the longest branch name `hub_refs` holds; a longer revision is no ref and no commit id
MAIN = "main"


def check_ref_name(name: str, what: str) -> str:
    """A tag or branch name: a letter first, then letters, digits, '.', '_', '-' (64 at most), no '..'; the
    alias rule, so every tag is a valid registry alias. Hostile names (newlines, slashes, '..') are refused here."""
    if not isinstance(name, str) or len(name) > MAX_REF_NAME or not ALIAS_PATTERN.fullmatch(name) or ".." in name:
        raise UsageError(f"bad {what} name {str(name)[:80]!r}",
                         hint=f"a {what} starts with a letter: letters, digits, '.', '_', '-' (64 at most), no '..'")  # fmt: skip
    if name == LATEST:
        raise UsageError(f"{what} name {name!r} is reserved", hint="`latest` always means the newest version")
    return name


def _registry_repo(s: Session, repo: HubRepoRow) -> RepoRow | None:
    return s.scalar(sa.select(RepoRow).where(RepoRow.namespace == repo.namespace, RepoRow.name == repo.name))


def _commits_by_version(s: Session, repo: HubRepoRow) -> dict[int, str]:
    """version N -> the newest commit of this hub repository that recorded `ns/name@N`."""
    prefix = f"{repo.namespace}/{repo.name}@"
    rows = s.execute(
        sa.select(HubCommitRow.adapter_ref, HubCommitRow.id)
        .where(HubCommitRow.repo_id == repo.id, HubCommitRow.adapter_ref.is_not(None))
        .order_by(HubCommitRow.created_at, HubCommitRow.id)
    ).tuples()
    out: dict[int, str] = {}
    for ref, cid in rows:
        if ref is not None and ref.startswith(prefix) and ref[len(prefix) :].isdigit():
            out[int(ref[len(prefix) :])] = cid
    return out


def list_tags(s: Session, repo: HubRepoRow) -> list[tuple[str, str]]:
    """(tag, commit id) for every version tag and alias tag of a hub repository: versions in order, then aliases."""
    reg = _registry_repo(s, repo)
    if reg is None:
        return []
    commits = _commits_by_version(s, repo)
    versions = dict(s.execute(sa.select(AdapterRow.id, AdapterRow.version).where(AdapterRow.repo_id == reg.id)).tuples().all())
    out = [(f"v{v}", commits[v]) for v in sorted(versions.values()) if v in commits]
    aliases = s.execute(sa.select(AliasRow.alias, AliasRow.adapter_id).where(AliasRow.repo_id == reg.id).order_by(AliasRow.alias))
    for alias, adapter_id in aliases.tuples():
        v = versions.get(adapter_id)
        if v in commits and not VERSION_TAG.fullmatch(alias):  # a version tag always means its version
            out.append((alias, commits[v]))
    return out


def tag_commit(s: Session, repo: HubRepoRow, tag: str) -> str | None:
    """The commit a tag points at, or None when there is no such tag."""
    if not ALIAS_PATTERN.fullmatch(tag):
        return None
    reg = _registry_repo(s, repo)
    if reg is None:
        return None
    m = VERSION_TAG.fullmatch(tag)
    if m:
        version: int | None = s.scalar(
            sa.select(AdapterRow.version).where(AdapterRow.repo_id == reg.id, AdapterRow.version == int(m.group(1)))
        )
    else:
        version = s.scalar(
            sa.select(AdapterRow.version)
            .join(AliasRow, AliasRow.adapter_id == AdapterRow.id)
            .where(AliasRow.repo_id == reg.id, AliasRow.alias == tag)
        )
    if version is None:
        return None
    return _commit_of_version(s, repo, version)


def _commit_of_version(s: Session, repo: HubRepoRow, version: int) -> str | None:
    """The newest commit of this hub repository that recorded `ns/name@version` (one row read, not every commit)."""
    commit: str | None = s.scalar(
        sa.select(HubCommitRow.id)
        .where(HubCommitRow.repo_id == repo.id, HubCommitRow.adapter_ref == f"{repo.namespace}/{repo.name}@{version}")
        .order_by(HubCommitRow.created_at.desc(), HubCommitRow.id.desc())
        .limit(1)
    )
    return commit


def _version_of_commit(s: Session, repo: HubRepoRow, reg: RepoRow | None, commit: str) -> AdapterRow | None:
    """The registry version a commit of this repository recorded, if it still exists."""
    ref = s.scalar(sa.select(HubCommitRow.adapter_ref).where(HubCommitRow.id == commit, HubCommitRow.repo_id == repo.id))
    prefix = f"{repo.namespace}/{repo.name}@"
    if reg is None or ref is None or not ref.startswith(prefix) or not ref[len(prefix) :].isdigit():
        return None
    return s.scalar(sa.select(AdapterRow).where(AdapterRow.repo_id == reg.id, AdapterRow.version == int(ref[len(prefix) :])))


def create_tag(s: Session, repo: HubRepoRow, tag: str, commit: str) -> None:
    """Point a new alias tag at `commit` (already resolved in this repository). 409 when the tag or a branch of
    that name exists; 400 for a version-shaped name (the hub makes those) or a commit that recorded no version."""
    check_ref_name(tag, "tag")
    repo_id = f"{repo.namespace}/{repo.name}"
    if tag_commit(s, repo, tag) is not None:
        raise AlreadyExists(f"tag {tag!r} of {repo_id}", hint="delete it first to move it")
    if s.get(HubRefRow, (repo.id, tag)) is not None:
        raise AlreadyExists(f"branch {tag!r} of {repo_id}", hint="a tag and a branch cannot share a name")
    if VERSION_TAG.fullmatch(tag):
        raise UsageError(f"tag {tag!r}: version tags are made by the hub for each pushed version", hint="pick another name")
    reg = _registry_repo(s, repo)
    row = _version_of_commit(s, repo, reg, commit)
    if reg is None or row is None:
        raise UsageError(f"commit {commit[:12]} of {repo_id} recorded no adapter version; tags on this hub name versions",
                         hint="tag a commit that a push made (see list_repo_refs for v1, v2, ...)")  # fmt: skip
    existing = s.scalar(sa.select(AliasRow).where(AliasRow.repo_id == reg.id, AliasRow.alias == tag))
    if existing is not None:  # a version-shaped alias hidden by its version tag, or one whose version has no commit
        existing.adapter_id = row.id
    else:
        s.add(AliasRow(repo_id=reg.id, alias=tag, adapter_id=row.id))
    s.flush()


def delete_tag(s: Session, repo: HubRepoRow, tag: str) -> None:
    """Remove an alias tag (the version stays); a version tag cannot be deleted, a missing tag is RevisionNotFound."""
    repo_id = f"{repo.namespace}/{repo.name}"
    if not ALIAS_PATTERN.fullmatch(tag) or tag_commit(s, repo, tag) is None:
        raise RevisionNotFound(repo_id, tag)
    if VERSION_TAG.fullmatch(tag):
        raise UsageError(f"tag {tag!r} is version {tag[1:]} of {repo_id}; it lasts as long as the version",
                         hint="remove the version on the hub (`adapterhub rm`) to drop its tag")  # fmt: skip
    reg = _registry_repo(s, repo)
    assert reg is not None  # tag_commit found the alias through it
    s.execute(sa.delete(AliasRow).where(AliasRow.repo_id == reg.id, AliasRow.alias == tag))


def create_branch(s: Session, repo: HubRepoRow, branch: str, commit: str) -> None:
    """A new branch at `commit`; 409 when a branch or tag of that name exists."""
    check_ref_name(branch, "branch")
    repo_id = f"{repo.namespace}/{repo.name}"
    if s.get(HubRefRow, (repo.id, branch)) is not None:
        raise AlreadyExists(f"branch {branch!r} of {repo_id}", hint="pick another name")
    if tag_commit(s, repo, branch) is not None or VERSION_TAG.fullmatch(branch):
        raise AlreadyExists(f"tag {branch!r} of {repo_id}", hint="a tag and a branch cannot share a name")
    s.add(HubRefRow(repo_id=repo.id, name=branch, commit_id=commit))
    s.flush()


def delete_branch(s: Session, repo: HubRepoRow, branch: str) -> None:
    repo_id = f"{repo.namespace}/{repo.name}"
    if branch == MAIN:
        raise UsageError(f"cannot delete {MAIN!r} of {repo_id}", hint="delete the repository instead")
    row = s.get(HubRefRow, (repo.id, branch)) if ALIAS_PATTERN.fullmatch(branch) else None
    if row is None:
        raise RevisionNotFound(repo_id, branch)
    s.delete(row)


def list_branches(s: Session, repo: HubRepoRow) -> list[tuple[str, str]]:
    """(branch, commit id), `main` first."""
    rows = s.execute(sa.select(HubRefRow.name, HubRefRow.commit_id).where(HubRefRow.repo_id == repo.id)).tuples().all()
    return sorted(rows, key=lambda r: (r[0] != MAIN, r[0]))


def delete_repo(s: Session, repo: HubRepoRow) -> None:
    """The hub repository (refs, commits, file lists) and the registry versions its pushes recorded; blobs stay
    until `gc`."""
    commits = sa.select(HubCommitRow.id).where(HubCommitRow.repo_id == repo.id)
    s.execute(sa.delete(HubRefRow).where(HubRefRow.repo_id == repo.id))
    s.execute(sa.delete(HubCommitFileRow).where(HubCommitFileRow.commit_id.in_(commits)))
    s.execute(sa.delete(HubCommitRow).where(HubCommitRow.repo_id == repo.id))
    reg = _registry_repo(s, repo)
    if reg is not None:
        s.delete(reg)
    s.delete(repo)
    s.flush()


def move_repo(s: Session, repo: HubRepoRow, namespace: str, name: str) -> None:
    """Rename a hub repository and its registry name; its commits' version references follow. 409 when the new
    name is taken in either."""
    to = f"{namespace}/{name}"
    taken_hub = s.scalar(sa.select(HubRepoRow.id).where(HubRepoRow.namespace == namespace, HubRepoRow.name == name))
    taken_reg = s.scalar(sa.select(RepoRow.id).where(RepoRow.namespace == namespace, RepoRow.name == name))
    if taken_hub is not None or taken_reg is not None:
        raise AlreadyExists(f"repository {to}", hint="pick another name")
    old_prefix = f"{repo.namespace}/{repo.name}@"
    for row in s.scalars(sa.select(HubCommitRow).where(HubCommitRow.repo_id == repo.id, HubCommitRow.adapter_ref.is_not(None))):
        if row.adapter_ref is not None and row.adapter_ref.startswith(old_prefix):
            row.adapter_ref = f"{to}@{row.adapter_ref[len(old_prefix) :]}"
    reg = _registry_repo(s, repo)
    if reg is not None:
        reg.namespace, reg.name = namespace, name
    repo.namespace, repo.name = namespace, name
    s.flush()


def find_repo(s: Session, namespace: str, name: str) -> HubRepoRow:
    row = s.scalar(sa.select(HubRepoRow).where(HubRepoRow.namespace == namespace, HubRepoRow.name == name))
    if row is None:
        raise RepoNotFound(f"{namespace}/{name}")
    return row
