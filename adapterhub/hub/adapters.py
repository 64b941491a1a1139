"""Which files of a hub repository form an adapter, and recording them: checked before a commit's transaction
(`prepare_adapter`), recorded inside it (`PreparedAdapter.hook`), or recorded by a pull (`record_adapter`). The
version itself is written by `store.records.record_version`, the one way every path records one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from ..card import AdapterCard, FileEntry
from ..errors import IntegrityError, InvalidAdapter, PickleRefused
from ..fsutil import check_relative_path
from ..peft_format import CONFIG_NAME, WEIGHTS_NAME, AdapterLayout, load_config_json, nonfinite_tensors, read_layout
from ..store.blobs import Blobs, link_or_copy
from ..store.records import VersionFields, record_version
from ..tensorfile import is_pickle_name
from .modelcard import card_info, read_card
from .types import HubFile

CARD_FILE = "adapterhub.json"
README_FILE = "README.md"
# Files of a repo that describe the repo; they are not part of the adapter version a registry records.
REPO_ONLY_FILES = frozenset({CARD_FILE, README_FILE, ".gitattributes"})


def describe_adapter(
    files: Iterable[str], card_json: bytes | None, readme: str | None, config: dict[str, Any]
) -> tuple[list[str], VersionFields]:
    """Which files form the adapter and what to record about it: the card when there is one, else README + config."""
    if card_json is not None:
        try:
            card = AdapterCard.model_validate_json(card_json)
        except ValueError as exc:
            raise InvalidAdapter(CARD_FILE, [f"not an AdapterCard: {str(exc).splitlines()[0]}"]) from None
        fields = VersionFields(task=card.task, scores=card.scores, tags=card.tags, description=card.description,
                               license=card.license, lineage=card.lineage, base_model=card.base_model)  # fmt: skip
        pickles = [f.path for f in card.files if is_pickle_name(f.path)]
        if pickles:
            raise PickleRefused(f"{CARD_FILE}: {pickles[0]}")
        return [f.path for f in card.files], fields
    try:
        info = card_info(readme, config)
    except ValueError:  # unreadable front matter: the config alone still describes the adapter
        info = card_info(None, config)
    names = [p for p in files if "/" not in p and p not in REPO_ONLY_FILES and not p.startswith(".") and not is_pickle_name(p)]
    return names, VersionFields(
        task=info.task, scores=info.scores, tags=info.tags, description=info.description, license=info.license
    )


def stage_files(blobs: Blobs, files: dict[str, FileEntry], folder: Path) -> None:
    """Lay the blobs out as an adapter folder: hard links (blobs are read-only and immutable), verified copies across
    devices or from a remote store."""
    for path, f in files.items():
        target = folder / check_relative_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        link_or_copy(blobs, f.sha256, target, expected_size=f.size)


def check_staged(folder: Path, name: str) -> AdapterLayout:
    """Read and check an adapter laid out in `folder` (config, header, shapes, NaN/Inf): the slow part, run before
    any write transaction is opened."""
    layout = read_layout(folder)
    bad = nonfinite_tensors(layout)
    if bad:
        raise InvalidAdapter(name, [f"tensor {n} contains NaN or Inf" for n in bad])
    return layout


def record_checked(
    s: Session, layout: AdapterLayout, name: str, files: dict[str, FileEntry], fields: VersionFields, *, declared_by: str
) -> AdapterCard:
    """Record a checked adapter as the next version of `name`, inside the caller's transaction (rows only).

    A base seen first here is recorded as declared by `declared_by` (e.g. "push to evil/x"), never as verified."""
    namespace, short = name.split("/", 1)
    entries = [FileEntry(path=p, sha256=f.sha256, size=f.size) for p, f in sorted(files.items())]
    return record_version(s, namespace, short, layout, replace(fields, files=entries), declared_by=declared_by)


def record_adapter(
    s: Session, folder: Path, name: str, files: dict[str, FileEntry], fields: VersionFields, *, declared_by: str
) -> AdapterCard:
    """Check the staged adapter and record it as the next version of `name`, inside the caller's transaction.

    This is the registry's `add` for bytes that are already in the blob store with known hashes: a pull needs it
    inside its own transaction, and with the base known by hash rather than by weights."""
    return record_checked(s, check_staged(folder, name), name, files, fields, declared_by=declared_by)


@dataclass
class PreparedAdapter:
    """An adapter a commit contains, checked before the commit's transaction; `hook` records it inside it."""

    name: str
    files: dict[str, FileEntry]
    fields: VersionFields
    layout: AdapterLayout

    def hook(self, s: Session, repo_id: str, tree: dict[str, HubFile]) -> str | None:
        return record_checked(s, self.layout, self.name, self.files, self.fields, declared_by=f"push to {repo_id}").ref


def prepare_adapter(
    repo_id: str, tree: dict[str, HubFile], path_of: Callable[[str], Path], scratch: Path
) -> PreparedAdapter | None:
    """Check the adapter (PEFT config + safetensors) a commit's tree holds; None when the tree holds none.

    `path_of(sha256)` says where the bytes are: an upload still in scratch, or the blob store. An adapter that fails
    its checks refuses the commit before any blob is stored or lock taken, so the hub never serves a revision that
    search cannot see. `adapterhub.json`, when present, must agree with the committed bytes."""
    if CONFIG_NAME not in tree or WEIGHTS_NAME not in tree:
        return None
    card_json = path_of(tree[CARD_FILE].sha256).read_bytes() if CARD_FILE in tree else None
    readme = read_card(path_of(tree[README_FILE].sha256)) if README_FILE in tree else None
    config = load_config_json(path_of(tree[CONFIG_NAME].sha256), f"{repo_id}/{CONFIG_NAME}")
    names, fields = describe_adapter(tree, card_json, readme, config if isinstance(config, dict) else {})
    files: dict[str, FileEntry] = {}
    for n in names:
        got = tree.get(n)
        if got is None:
            raise InvalidAdapter(f"{repo_id}/{CARD_FILE}", [f"lists {n}, which the commit does not contain"])
        files[n] = FileEntry(path=n, sha256=got.sha256, size=got.size)
    if card_json is not None:
        for f in AdapterCard.model_validate_json(card_json).files:
            if (files[f.path].sha256, files[f.path].size) != (f.sha256, f.size):
                raise IntegrityError(f"{repo_id}/{f.path}", f"sha256 {f.sha256}, {f.size} bytes (per {CARD_FILE})",
                                     f"sha256 {files[f.path].sha256}, {files[f.path].size} bytes")  # fmt: skip
    scratch.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="commit-", dir=scratch))
    try:
        for path, f in files.items():
            target = folder / check_relative_path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path_of(f.sha256), target)
            except OSError:
                shutil.copyfile(path_of(f.sha256), target)
        return PreparedAdapter(repo_id, files, fields, check_staged(folder, repo_id))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
