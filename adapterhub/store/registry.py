"""The Registry: add, find, tag, export and remove adapters; register base models. Returns pydantic cards only.

`add` does its slow work (reading headers, hashing, copying bytes into the blob store) before it opens a write
transaction, then records everything in that one transaction: a failure anywhere leaves no row behind, and the
blobs it already wrote are unreferenced until `gc` removes them.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..card import (
    AdapterCard,
    AdapterRef,
    BaseModelInfo,
    EvalScore,
    FileEntry,
    Fingerprint,
    Lineage,
    ScoreSource,
    SearchQuery,
    SearchResult,
)
from ..errors import AdapterNotFound, BaseModelNotFound, IncompatibleAdapter, InvalidAdapter, StoreError, UsageError
from ..fsutil import atomic_directory, check_relative_path
from ..paths import adapterhub_home
from ..tensorfile import is_pickle_name
from . import convert
from .bases import base_named, verified_base
from .blobs import Blobs, link_or_copy
from .blobstores import BLOBS_ENV, open_blobs
from .db import Database, default_database_url
from .orm import AdapterRow, AliasRow, BaseEvalScoreRow, BaseModelRow, FileRow, RepoRow
from .records import VersionFields, record_version, score_row, set_alias
from .search import run_search
from .visibility import Visibility, adapter_visible

RESERVED_ALIASES = {"latest"}


@dataclass
class GcReport:
    removed: list[str] = field(default_factory=list)
    kept: int = 0  # blobs some row points at
    young: int = 0  # orphan blobs kept because they are younger than the grace period
    freed_bytes: int = 0
    stale_staging: int = 0  # staging folders of interrupted operations removed


@dataclass
class FsckReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)  # "ns/name@v path sha256"
    corrupt: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.corrupt)


class Registry:
    """A local adapter registry: a metadata database plus a content-addressed blob store under one home folder."""

    def __init__(
        self,
        home: Path | str | None = None,
        database_url: str | None = None,
        *,
        blobs: str | None = None,
        auto_migrate: bool = True,
    ) -> None:
        """`blobs`: where the blobs live (s3://bucket/prefix or a folder; default ADAPTERHUB_BLOBS, else home/blobs)."""
        self.home = Path(home) if home is not None else adapterhub_home()
        _check_home(self.home, sqlite_here=database_url is None)
        self.db = Database(database_url or default_database_url(self.home), lock_dir=self.home, auto_migrate=auto_migrate)
        self.blobs: Blobs = open_blobs(blobs if blobs is not None else os.environ.get(BLOBS_ENV), self.home)

    def __repr__(self) -> str:
        return f"Registry(home={str(self.home)!r}, database={self.db.engine.url.render_as_string(hide_password=True)!r})"

    # --- base models -------------------------------------------------------------------------------------

    def register_base(self, path: Path | str, name: str | None = None, *, lineage: Lineage | None = None) -> BaseModelInfo:
        """Fingerprint a model's weights and record it (idempotent by content hash)."""
        from ..fingerprint import fingerprint, model_type

        fp = fingerprint(Path(path))
        with self.db.write() as s:
            row = self._upsert_base(s, Path(path), fp, name, model_type(Path(path)), lineage)
            return convert.base_info(row)

    def _upsert_base(
        self, s: Session, path: Path, fp: Fingerprint, name: str | None, mtype: str | None, lineage: Lineage | None
    ) -> BaseModelRow:
        row = s.scalar(sa.select(BaseModelRow).where(BaseModelRow.content_hash == fp.content_hash))
        if row is None:
            row = BaseModelRow(
                name=name or _model_name(path), arch_hash=fp.arch_hash, content_hash=fp.content_hash,
                parameter_count=fp.parameter_count, dtype=fp.dtype, model_type=mtype,
                lineage=lineage.model_dump(mode="json") if lineage else None,
            )  # fmt: skip
            s.add(row)
            s.flush()
        else:
            if not verified_base(row):  # first seen by hash only (a pull or hub commit): fill in what the weights say
                row.parameter_count, row.dtype, row.arch_hash = fp.parameter_count, fp.dtype, fp.arch_hash
                row.model_type = row.model_type or mtype
                # the declared name and its provenance were a pusher's label; the name is now this registry's
                row.name, row.lineage = name or _model_name(path), lineage.model_dump(mode="json") if lineage else None
            if name and row.name != name:
                row.name = name
            if lineage and not row.lineage:
                row.lineage = lineage.model_dump(mode="json")
        return row

    def get_base(self, key: str) -> BaseModelInfo:
        """A registered base by name, or by a prefix (6+ hex characters) of its content or arch hash."""
        with self.db.session() as s:
            return convert.base_info(_find_base(s, key))

    def list_bases(self) -> list[BaseModelInfo]:
        with self.db.session() as s:
            return [convert.base_info(r) for r in s.scalars(sa.select(BaseModelRow).order_by(BaseModelRow.id))]

    # --- adding ------------------------------------------------------------------------------------------

    def add(
        self,
        folder: Path | str,
        name: str,
        task: str,
        *,
        base: Path | str | None = None,
        scores: Sequence[EvalScore] = (),
        tags: Iterable[str] = (),
        description: str = "",
        license: str | None = None,
        lineage: Lineage | None = None,
        aliases: Iterable[str] = (),
        force_new: bool = False,
    ) -> AdapterCard:
        """Check a PEFT adapter folder and record it as the next version of `name` (`namespace/name`).

        Same bytes, same version: when the newest version of `name` has exactly these files (paths and sha256), that
        version is returned as it is (only `aliases` are pointed at it) unless `force_new`."""
        from ..peft_format import nonfinite_tensors, read_layout

        ref = AdapterRef.parse(name)
        if ref.version is not None or ref.alias is not None:
            raise UsageError(f"add takes a name without @version: {name!r}", hint="the version is assigned by the registry")
        if not task.strip():
            raise UsageError("task must not be empty", hint="pass --task, e.g. sentiment")
        aliases = [_check_alias(a) for a in aliases]
        folder = Path(folder)
        layout = read_layout(folder)
        bad = nonfinite_tensors(layout)
        if bad:
            raise InvalidAdapter(str(folder), [f"tensor {n} contains NaN or Inf" for n in bad])
        fp = mtype = None
        if base is not None:
            from ..fingerprint import fingerprint, model_type
            from ..shapefit import BaseTensors, shape_issues, tied_embeddings

            issues = shape_issues(layout, BaseTensors.from_path(base), tied_embeddings(Path(base)))
            # a full-parameter head the base lacks (e.g. a classifier) may still be registered against it
            problems = [i.describe() for i in issues if not (i.problem == "missing" and i.module in layout.overrides)]
            if problems:
                raise IncompatibleAdapter(str(folder), str(base), problems)
            fp, mtype = fingerprint(Path(base)), model_type(Path(base))
        entries = [
            FileEntry(path=p.name, sha256=sha, size=size)
            for p in _adapter_files(folder)
            for sha, size in [self.blobs.put_file(p)]
        ]
        fields = VersionFields(task, description, license, tags, scores, lineage, entries)
        with self.db.write() as s:
            same = None if force_new else _same_files_row(s, ref, entries)
            if same is not None:
                for a in aliases:
                    set_alias(s, same.repo, a, same)
                s.flush()
                s.expire(same.repo, ["aliases"])
                return convert.card(s, same)
            base_row = self._upsert_base(s, Path(base), fp, None, mtype, None) if fp is not None and base is not None else None
            return record_version(s, ref.namespace, ref.name, layout, fields, base=base_row, aliases=aliases)

    # --- reading -----------------------------------------------------------------------------------------

    def get(self, ref: str | AdapterRef) -> AdapterCard:
        with self.db.session() as s:
            return convert.card(s, _find_adapter(s, ref))

    def versions(self, name: str) -> list[AdapterCard]:
        """Every version of `namespace/name`, newest first."""
        ref = AdapterRef.parse(name)
        with self.db.session() as s:
            rows = s.scalars(
                convert.card_query()
                .join(RepoRow)
                .where(RepoRow.namespace == ref.namespace, RepoRow.name == ref.name)
                .order_by(AdapterRow.version.desc())
            ).all()
            if not rows:
                raise AdapterNotFound(ref.full_name)
            return [convert.card(s, r) for r in rows]

    def list(
        self,
        *,
        namespace: str | None = None,
        all_versions: bool = False,
        limit: int | None = None,
        visibility: Visibility | None = None,
    ) -> list[AdapterCard]:
        """Adapters, newest first (only the newest version of each name unless `all_versions`). `visibility` as in
        `search`: a hub caller's hidden adapters are left out inside the SQL."""
        with self.db.session() as s:
            q = convert.card_query().join(RepoRow)
            if namespace:
                q = q.where(RepoRow.namespace == namespace)
            if visibility is not None and not visibility.everything:
                q = q.where(adapter_visible(visibility))
            if not all_versions:
                q = q.where(AdapterRow.is_latest == sa.true())
            q = q.order_by(AdapterRow.created_at.desc(), AdapterRow.id.desc())
            if limit:
                q = q.limit(limit)
            return [convert.card(s, r) for r in s.scalars(q)]

    def search(
        self,
        query: SearchQuery,
        *,
        visibility: Visibility | None = None,
        local_paths: bool = True,
        count_limit: int | None = None,
    ) -> SearchResult:
        """Adapters matching `query`. `visibility` (a hub's caller) leaves out adapters of private hub repositories the
        caller may not read, inside the SQL, so `total` is exact; None sees everything. `local_paths=False` (a server
        answering remote callers) never treats `base` as a path on this machine. `count_limit` stops counting after
        that many matches (a web page shows "1,000+" rather than scan a huge match set): `total_exact` is then False."""
        if local_paths and query.base:
            from ..fingerprint import search_key

            query = query.model_copy(update={"base": search_key(query.base)})  # adapters of the same architecture
        with self.db.session() as s:
            total, cards = run_search(s, query, visibility, count_limit)
            if count_limit is not None and total > count_limit:
                return SearchResult(query=query, total=count_limit, items=cards, total_exact=False)
            return SearchResult(query=query, total=total, items=cards)

    # --- measured scores ---------------------------------------------------------------------------------

    def same_content(self, name: str | AdapterRef, files: Iterable[FileEntry]) -> AdapterCard | None:
        """The newest version of `name` when its files are exactly `files` (same paths, same sha256), else None:
        the one rule for "same bytes, same version" that `add` and `pull` apply before recording a new version."""
        with self.db.session() as s:
            row = _same_files_row(s, AdapterRef.parse(name) if isinstance(name, str) else name, files)
            return None if row is None else convert.card(s, row)

    def record_scores(
        self, ref: str | AdapterRef, scores: Sequence[EvalScore], *, source: ScoreSource = ScoreSource.MEASURED
    ) -> AdapterCard:
        """Record scores on an existing version: `measured` by `adapterhub eval` (with provenance), `reported` by
        `adapterhub score` (typed in). A score of the same source and dataset/metric/split replaces the old one; scores
        of the other source stay beside it."""
        with self.db.write() as s:
            row = _find_adapter(s, ref)
            keys = {(x.dataset, x.metric, x.split) for x in scores}
            row.scores = [x for x in row.scores if not (x.source == source.value and (x.dataset, x.metric, x.split) in keys)]
            row.scores.extend(score_row(x, source) for x in scores)
            s.flush()
            return convert.card(s, row)

    def record_base_scores(self, key: str, scores: Sequence[EvalScore]) -> BaseModelInfo:
        """Record a base model's own measured scores (`adapterhub eval --base-only`), replacing older ones."""
        with self.db.write() as s:
            row = _find_base(s, key)
            keys = {(x.dataset, x.metric, x.split) for x in scores}
            row.scores = [x for x in row.scores if (x.dataset, x.metric, x.split) not in keys]
            row.scores.extend(
                BaseEvalScoreRow(dataset=x.dataset, metric=x.metric, split=x.split, value=x.value, higher_is_better=x.higher_is_better,
                                 source="measured", provenance=x.provenance.model_dump(mode="json") if x.provenance else None)
                for x in scores
            )  # fmt: skip
            s.flush()
            return convert.base_info(row)

    # --- changing ----------------------------------------------------------------------------------------

    def tag(self, ref: str | AdapterRef, alias: str) -> AdapterCard:
        """Point `alias` (e.g. `prod`) at one version; it moves if it pointed elsewhere."""
        alias = _check_alias(alias)
        with self.db.write() as s:
            row = _find_adapter(s, ref)
            set_alias(s, row.repo, alias, row)
            s.flush()
            s.expire(row.repo, ["aliases"])
            return convert.card(s, row)

    def untag(self, name: str, alias: str) -> None:
        """Remove `alias` from `namespace/name`; the version it pointed at stays."""
        alias = _check_alias(alias)
        ref = AdapterRef.parse(name)
        with self.db.write() as s:
            repo = s.scalar(sa.select(RepoRow).where(RepoRow.namespace == ref.namespace, RepoRow.name == ref.name))
            n = (
                0
                if repo is None
                else _deleted(s.execute(sa.delete(AliasRow).where(AliasRow.repo_id == repo.id, AliasRow.alias == alias)))
            )
            if not n:
                raise AdapterNotFound(f"{ref.full_name}@{alias}")

    def remove(self, ref: str | AdapterRef) -> builtins.list[AdapterCard]:  # `list` is a method in this class
        """Remove one version (`ns/name@3`, `@alias`) or every version (`ns/name`); blobs stay until `gc`."""
        r = AdapterRef.parse(ref) if isinstance(ref, str) else ref
        with self.db.write() as s:
            if r.version is None and r.alias is None:
                repo = s.scalar(sa.select(RepoRow).where(RepoRow.namespace == r.namespace, RepoRow.name == r.name))
                rows = list(repo.adapters) if repo else []
                if not rows:
                    raise AdapterNotFound(str(r))
                cards = [convert.card(s, x) for x in rows]
                s.delete(repo)
                return cards
            row = _find_adapter(s, r)
            card = convert.card(s, row)
            repo = row.repo
            s.delete(row)
            s.flush()
            newest = s.scalar(
                sa.select(AdapterRow).where(AdapterRow.repo_id == repo.id).order_by(AdapterRow.version.desc()).limit(1)
            )
            if newest is None:
                s.delete(repo)
            else:
                newest.is_latest = True
            return [card]

    # --- files -------------------------------------------------------------------------------------------

    def export(self, ref: str | AdapterRef, dest: Path | str, *, overwrite: bool = False) -> Path:
        """Write the adapter's files (PEFT format) to `dest`, verifying every byte against its sha256."""
        card = self.get(ref)
        with atomic_directory(Path(dest), overwrite=overwrite) as tmp:
            for f in card.files:
                self.blobs.copy_to(f.sha256, tmp / check_relative_path(f.path), expected_size=f.size)
        return Path(dest)

    def adapter_path(self, ref: str | AdapterRef) -> Path:
        """A local folder with the adapter's files, for loading; materialised once per version from the blobs."""
        card = self.get(ref)
        key = _files_key(card.files)
        folder = self.home / "checkouts" / card.namespace / card.name / f"{card.version}-{key}"
        if not folder.is_dir():
            try:
                with atomic_directory(folder) as tmp:
                    for f in card.files:
                        target = tmp / check_relative_path(f.path)
                        link_or_copy(self.blobs, f.sha256, target, expected_size=f.size)
            except FileExistsError:
                pass  # another process materialised it first
        return folder

    def gc(self, *, grace_seconds: float = 600.0, dry_run: bool = False) -> GcReport:
        """Remove blobs no row points at. Blobs younger than `grace_seconds` are kept (counted in `young`): an `add`
        running right now writes its blobs before its rows. `dry_run` reports what would be removed."""
        import time

        referenced = self._referenced_digests()
        stats = {b.digest: b for b in self.blobs.iter_blobs() if b.digest not in referenced}
        orphans = list(stats)
        report = GcReport(kept=len(referenced))
        if dry_run:
            now = time.time()
            report.removed = [d for d in orphans if now - stats[d].mtime >= grace_seconds]
            report.young = len(orphans) - len(report.removed)
            report.freed_bytes = sum(stats[d].size for d in report.removed)
            return report
        report.removed = self.blobs.delete(orphans, older_than_s=grace_seconds)
        report.young = len(orphans) - len(report.removed)
        report.freed_bytes = sum(stats[d].size for d in report.removed)
        report.stale_staging = _remove_stale(self.home / "tmp", grace_seconds)  # e.g. a pull killed part-way
        return report

    def fsck(self, *, verify_hashes: bool = True) -> FsckReport:
        """Check every recorded file's blob exists (and hashes right); list blobs nothing points at."""
        report = FsckReport()
        with self.db.session() as s:
            rows = s.execute(
                sa.select(RepoRow.namespace, RepoRow.name, AdapterRow.version, FileRow.path, FileRow.sha256, FileRow.size)
                .join(AdapterRow, AdapterRow.repo_id == RepoRow.id)
                .join(FileRow, FileRow.adapter_id == AdapterRow.id)
            ).all()
        checked: dict[str, bool] = {}
        for ns, nm, v, path, sha, size in rows:
            report.checked += 1
            label = f"{ns}/{nm}@{v} {path} {sha[:12]}"
            stored = self.blobs.size(sha)
            if stored is None:
                report.missing.append(label)
            elif stored != size or (verify_hashes and not checked.setdefault(sha, self.blobs.verify(sha))):
                report.corrupt.append(label)
        referenced = self._referenced_digests()
        report.orphans = [d for d in self.blobs.iter_digests() if d not in referenced]
        return report

    def _referenced_digests(self) -> set[str]:
        """sha256 values named by any table with a `sha256` column (adapter files and hub commits alike)."""
        out: set[str] = set()
        with self.db.session() as s:
            for table in convert.tables_with_blob_refs():
                out.update(x for x in s.scalars(sa.select(table.c.sha256).distinct()) if x)
        return out


# --- helpers -----------------------------------------------------------------------------------------------


def _deleted(result: sa.Result[Any]) -> int:
    """How many rows a DELETE removed (its result is a CursorResult, which the generic Result type does not say)."""
    return result.rowcount if isinstance(result, sa.CursorResult) else 0


def _check_home(home: Path, *, sqlite_here: bool) -> None:
    """Create the registry folder, or say in one line why it cannot be used (a file in the way, no permission)."""
    hint = "set ADAPTERHUB_HOME to a folder you can write"
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the registry folder {home}: {exc.strerror or exc}", hint=hint) from None
    if sqlite_here and not os.access(home, os.W_OK | os.X_OK):  # its SQLite database and lock file live there
        raise StoreError(f"the registry folder {home} is not writable", hint=hint)


def _remove_stale(folder: Path, older_than_s: float) -> int:
    """Delete entries of a staging folder not touched for `older_than_s` seconds; returns how many."""
    import shutil
    import time

    if not folder.is_dir():
        return 0
    n = 0
    for entry in folder.iterdir():
        try:
            if time.time() - entry.stat().st_mtime < older_than_s:
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            n += 1
        except FileNotFoundError:
            continue
    return n


def _model_name(path: Path) -> str:
    """The base's name when none is given: `_name_or_path` from its config.json unless that is a local path, else
    the folder's (or file's) own name."""
    from ..modelfiles import read_model_config

    name = (read_model_config(path) or {}).get("_name_or_path")
    return str(name) if name and not str(name).startswith("/") else path.name if path.is_dir() else path.stem


def _adapter_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and not is_pickle_name(p.name))


def _files_key(files: Sequence[FileEntry]) -> str:
    import hashlib

    return hashlib.sha256("".join(f"{f.path}\0{f.sha256}\n" for f in files).encode()).hexdigest()[:12]


def _check_alias(alias: str) -> str:
    from ..card import ALIAS_PATTERN

    if alias in RESERVED_ALIASES:
        raise UsageError(f"alias {alias!r} is reserved", hint="`latest` always means the newest version")
    if not ALIAS_PATTERN.fullmatch(alias):
        raise UsageError(f"bad alias {alias!r}", hint="an alias starts with a letter: letters, digits, '.', '_', '-'")
    return alias


def _find_adapter(s: Session, ref: str | AdapterRef) -> AdapterRow:
    r = AdapterRef.parse(ref) if isinstance(ref, str) else ref
    q = convert.card_query().join(RepoRow).where(RepoRow.namespace == r.namespace, RepoRow.name == r.name)
    if r.version is not None:
        q = q.where(AdapterRow.version == r.version)
    elif r.alias is not None and r.alias != "latest":
        q = q.join(AliasRow, AliasRow.adapter_id == AdapterRow.id).where(AliasRow.alias == r.alias)
    else:
        q = q.where(AdapterRow.is_latest == sa.true())
    row = s.scalars(q.limit(1)).first()
    if row is None:
        raise AdapterNotFound(str(r))
    return row


def _same_files_row(s: Session, ref: AdapterRef, files: Iterable[FileEntry]) -> AdapterRow | None:
    """The newest version of `ref`'s name if its file set (path, sha256) equals `files`."""
    newest: AdapterRow | None = s.scalars(
        convert.card_query().join(RepoRow)
        .where(RepoRow.namespace == ref.namespace, RepoRow.name == ref.name, AdapterRow.is_latest == sa.true()).limit(1)
    ).first()  # fmt: skip
    if newest is None or {(f.path, f.sha256) for f in newest.files} != {(f.path, f.sha256) for f in files}:
        return None
    return newest


def _find_base(s: Session, key: str) -> BaseModelRow:
    rows = s.scalars(sa.select(BaseModelRow).where(base_named(key))).all()
    if not rows and len(key) >= 6 and all(c in "0123456789abcdef" for c in key.lower()):
        k = key.lower()
        rows = s.scalars(
            sa.select(BaseModelRow).where(sa.or_(BaseModelRow.content_hash.startswith(k), BaseModelRow.arch_hash.startswith(k)))
        ).all()
    if not rows:
        raise BaseModelNotFound(key)
    if len(rows) > 1:
        raise UsageError(f"{key!r} matches {len(rows)} base models", hint="give more characters of the hash")
    return rows[0]


__all__ = ["FsckReport", "GcReport", "Registry"]
