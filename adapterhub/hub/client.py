"""push / pull / remote_search: the same code talks to `adapterhub serve` and to huggingface.co.

Push uploads the PEFT files, `adapterhub.json` (the AdapterCard with every file's sha256 and size) and a README
model card: to an adapterhub hub streamed, one raw `PUT` per file and a small commit (`streamed`), to any other
hub with `huggingface_hub.HfApi` (create_repo + one create_commit). Pull reads the revision's file list,
streams each file into the blob store while hashing it, refuses any mismatch before anything is registered, then
records the version in one transaction. Files already verified in the blob store are not fetched again, so a pull
that failed half-way resumes where it stopped; nothing partial is ever left at a final path.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import random
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

from ..card import LATEST, AdapterCard, AdapterRef, FileEntry, SearchQuery, SearchResult
from ..errors import (
    IntegrityError,
    InvalidAdapter,
    PickleRefused,
    RemoteError,
    UsageError,
)
from ..fsutil import check_relative_path, check_segment
from ..progress import progress_bar
from ..sources import registry_or_default
from ..tensorfile import is_pickle_name
from . import modelcard, streamed
from .adapters import CARD_FILE, README_FILE, describe_adapter, record_adapter, stage_files
from .remote import remote_errors as _remote_errors
from .remote import server_message
from .streamed import LocalFile

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from ..store.registry import Registry

DEFAULT_ENDPOINT = "https://huggingface.co"
PUSH_ATTEMPTS = 30  # a push that loses the race for the head (409) commits again on the new head, this many times at most
PUSH_BACKOFF_S = (
    0.05,
    2.0,
)  # first and largest wait before a retry; each wait is drawn at random up to the bound ("full jitter")
PUSH_RETRY_BUDGET_S = 60.0  # and the waits together stay under this
_VERSION_TAG = re.compile(r"v[1-9][0-9]{0,8}")
CHUNK = 1 << 20  # the blob store reads 1 MiB at a time: equal chunks pass through without copies


class PushResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ref: str  # the local version pushed
    repo_id: str
    commit: str
    url: str
    files: list[FileEntry]
    tags: list[str] = []  # the hub's tags on the pushed commit: `vN` for the version, then the version's aliases


class _RemoteFile(BaseModel):
    """A file as the remote lists it: size, git blob id, and sha256 when it is an LFS file."""

    path: str
    size: int | None = None
    blob_id: str | None = None
    sha256: str | None = None


def endpoint_url(remote: str | None) -> str:
    """`--remote`, else $HF_ENDPOINT, else huggingface.co."""
    return (remote or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _api(endpoint: str, token: str | None) -> HfApi:
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token)


# --- push --------------------------------------------------------------------------------------------------


def push(
    ref: str,
    *,
    remote: str | None = None,
    repo: str | None = None,
    private: bool = False,
    token: str | None = None,
    registry: Registry | None = None,
    progress: bool | None = None,
) -> PushResult:
    """Upload one registered version (`NAME[@V]`) to a hub repo (default: the same `namespace/name`).

    `progress` (None: when stderr is a terminal) shows a bar over the version's bytes: on an adapterhub hub it moves
    as each file streams out (`streamed`); elsewhere it fills when the hub has accepted the commit."""
    reg = registry_or_default(registry)
    card = reg.get(ref)
    folder = reg.adapter_path(card.ref)
    endpoint = endpoint_url(remote)
    repo_id = _check_repo_id(repo or card.full_name)
    # The README pushed is the model card; an adapter's own README (PEFT writes one) is not part of the upload.
    files = [f for f in card.files if f.path != README_FILE]
    for f in files:
        if is_pickle_name(f.path):
            raise PickleRefused(f.path)
    pushed = card.model_copy(update={"files": files})
    readme = modelcard.render(pushed, repo_id=repo_id)
    local = [LocalFile(check_relative_path(f.path), folder / f.path, f.sha256, f.size) for f in files]
    inline = {CARD_FILE: pushed.model_dump_json(indent=2).encode(), README_FILE: readme.encode()}
    commit, _ = upload_commit(endpoint, repo_id, token, local, inline, f"adapterhub push {card.ref}", private=private,
                              label=f"push {card.ref}", progress=progress)  # fmt: skip
    with _remote_errors(endpoint, repo_id, write=True):
        tags = _tag_pushed(_api(endpoint, token), repo_id, commit, card)
    return PushResult(ref=card.ref, repo_id=repo_id, commit=commit, url=f"{endpoint}/{repo_id}", files=files, tags=tags)


def upload_commit(
    endpoint: str,
    repo_id: str,
    token: str | None,
    files: list[LocalFile],
    inline: dict[str, bytes],
    message: str,
    *,
    private: bool = False,
    label: str = "push",
    progress: bool | None = None,
    on_hashed: Callable[[LocalFile], Any] | None = None,
) -> tuple[str, list[LocalFile]]:
    """Create the repository if needed and commit `files` (from disk) and `inline` (small generated files) on top of
    its head; the commit id and `files` with every sha256 known. An adapterhub hub gets the bytes streamed, one `PUT`
    per file it does not hold yet (a file without a sha256 is hashed while it is sent, `on_hashed` told); any other
    hub one `huggingface_hub` commit. A README in `inline` is checked by the hub's validate-yaml first."""
    from huggingface_hub import CommitOperationAdd

    api = _api(endpoint, token)
    total = sum(f.size for f in files)
    with _remote_errors(endpoint, repo_id, write=True), progress_bar(total, label, enabled=progress) as bar:
        _ensure_repo(api, repo_id, private)
        if README_FILE in inline:
            _validate_yaml(api, endpoint, inline[README_FILE].decode())
        sent = (
            streamed.upload_files(endpoint, repo_id, token, files, bar.update, on_hashed)
            if endpoint != DEFAULT_ENDPOINT
            else None
        )
        if sent is not None:
            info = api.model_info(repo_id, files_metadata=True)
            if info.sha and streamed.unchanged(info.siblings or [], sent, inline):
                return info.sha, sent  # as huggingface_hub does: pushing the same files again commits nothing
            commit = _commit_on_head(
                api, repo_id, lambda parent: streamed.post_commit(
                    endpoint, repo_id, token, streamed.commit_body(sent, inline, message, parent))
            )  # fmt: skip
            return commit, sent
        files = [f if f.sha256 is not None else replace(f, sha256=streamed.hash_file(f.local)) for f in files]
        ops = [CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=str(f.local)) for f in files]
        ops += [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in inline.items()]
        oid = _commit_on_head(api, repo_id, lambda parent: api.create_commit(repo_id, ops, commit_message=message,
                                                                               parent_commit=parent).oid)  # fmt: skip
        bar.update(total)
        return oid, files


def _tag_pushed(api: HfApi, repo_id: str, commit: str, card: AdapterCard) -> list[str]:
    """Tag the pushed commit: `vN` (an adapterhub hub makes it itself, numbered by the versions it recorded; another
    hub gets `v<local version>`) and each alias of the version, moved here from wherever it pointed. A hub without
    tag routes (404/405: an adapterhub hub from before tags) keeps the pushed commit untagged."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return _apply_tags(api, repo_id, commit, card)
    except HfHubHTTPError as exc:
        if exc.response is not None and exc.response.status_code in (404, 405):
            return []
        raise


def _apply_tags(api: HfApi, repo_id: str, commit: str, card: AdapterCard) -> list[str]:
    refs = api.list_repo_refs(repo_id)
    where = {t.name: t.target_commit for t in refs.tags}
    version_tags = [name for name, c in where.items() if c == commit and _VERSION_TAG.fullmatch(name)]
    if not version_tags:
        api.create_tag(repo_id, tag=f"v{card.version}", revision=commit, exist_ok=True)
        version_tags = [f"v{card.version}"]
    aliases = [a for a in card.aliases if a != LATEST]  # `latest` is the hub's `main`, never a tag
    for alias in aliases:
        if where.get(alias) == commit:
            continue
        if alias in where:
            api.delete_tag(repo_id, tag=alias)
        api.create_tag(repo_id, tag=alias, revision=commit)
    return [*version_tags, *aliases]


def _ensure_repo(api: HfApi, repo_id: str, private: bool) -> None:
    """Create the repository unless it exists. huggingface_hub's `create_repo(exist_ok=True)` answers a 401/403 on
    an existing repository with a URL it cannot parse off huggingface.co (HfUriError, 80 lines); here a refusal on
    an existing repository goes on to the commit, whose own 401/403 carries the hub's real message."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_repo(repo_id, private=private)
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 409:
            return  # it exists
        if status in (401, 402, 403):
            try:
                api.repo_info(repo_id)
            except HfHubHTTPError:
                raise exc from None
            return
        raise


def _commit_on_head(api: HfApi, repo_id: str, commit: Callable[[str | None], str]) -> str:
    """Commit on top of the current head; when another push lands first (HTTP 409), read the new head and retry.

    A push replaces whole files, so committing it on the newer head gives the same files as committing it first.
    Between tries it waits a random time under an exponentially growing bound, so many pushers racing for one head
    spread out instead of colliding again in lockstep (twenty at once used to exhaust ten immediate retries)."""
    from huggingface_hub.errors import HfHubHTTPError

    waited = 0.0
    for attempt in range(PUSH_ATTEMPTS):
        parent = api.model_info(repo_id).sha
        try:
            return commit(parent)
        except HfHubHTTPError as exc:
            if exc.response is None or exc.response.status_code != 409 or attempt == PUSH_ATTEMPTS - 1:
                raise
            if api.model_info(repo_id).sha == parent:
                raise  # the head did not move: a conflict no retry resolves
            delay = _backoff(attempt)
            if waited + delay > PUSH_RETRY_BUDGET_S:
                raise
            time.sleep(delay)
            waited += delay
    raise AssertionError("unreachable")


def _backoff(attempt: int) -> float:
    """Seconds to wait before retry `attempt + 1`: uniform in [0, min(largest, first * 2**attempt)]."""
    first, largest = PUSH_BACKOFF_S
    return random.uniform(0.0, min(largest, first * 2.0**attempt))


def _validate_yaml(api: HfApi, endpoint: str, readme: str) -> None:
    """Ask the hub to check the card's YAML before committing, as `ModelCard.validate` does."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    r = get_session().post(
        f"{endpoint}/api/validate-yaml", json={"content": readme, "repoType": "model"}, headers=build_hf_headers(token=api.token)
    )
    if r.status_code == 400:
        raise RemoteError(
            endpoint, f"the hub rejected the model card: {server_message(r)}", hint="fix the card's fields and push again"
        )
    hf_raise_for_status(r)


# --- pull --------------------------------------------------------------------------------------------------


def pull(
    spec: str,
    *,
    remote: str | None = None,
    name: str | None = None,
    token: str | None = None,
    registry: Registry | None = None,
    progress: bool | None = None,
    force_new: bool = False,
) -> AdapterCard:
    """Download `REPO[@REV]`, verify every byte, and register it as the next local version of `name` (default REPO).

    When the newest local version of `name` already has exactly these files, that version is returned (files already
    in the blob store are not fetched again) unless `force_new`."""
    from ..peft_format import CONFIG_NAME, WEIGHTS_NAME, config_json

    repo_id, _, revision = spec.partition("@")
    repo_id, revision = _check_repo_id(repo_id), hub_revision(revision)
    target = AdapterRef.parse(name or repo_id)  # checked before any download
    if target.version is not None or target.alias is not None:
        raise UsageError(f"pull registers a new version of a name; drop the @ from {name!r}")
    reg = registry_or_default(registry)
    endpoint = endpoint_url(remote)
    api = _api(endpoint, token)
    with _remote_errors(endpoint, repo_id, revision):
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    commit = info.sha or revision
    listing = {
        s.rfilename: _RemoteFile(path=s.rfilename, size=s.size, blob_id=s.blob_id, sha256=s.lfs.sha256 if s.lfs else None)
        for s in info.siblings or []
    }
    fetch = _Fetcher(api, endpoint, repo_id, commit, reg, progress)
    card_json = fetch.small(listing[CARD_FILE]) if CARD_FILE in listing else None
    small_readme = README_FILE in listing and (listing[README_FILE].size or 0) <= modelcard.MAX_CARD_BYTES  # else unread
    readme = fetch.small(listing[README_FILE]).decode("utf-8", "replace") if small_readme else None
    if WEIGHTS_NAME not in listing:
        pickles = [p for p in listing if is_pickle_name(p)]
        if pickles:
            raise PickleRefused(f"{repo_id}@{commit[:12]}/{pickles[0]}")
        raise InvalidAdapter(f"{repo_id}@{commit[:12]}", [f"no {WEIGHTS_NAME} in the repository"])
    if CONFIG_NAME not in listing:
        raise InvalidAdapter(f"{repo_id}@{commit[:12]}", [f"no {CONFIG_NAME} in the repository"])
    config = config_json(fetch.small(listing[CONFIG_NAME]), f"{repo_id}/{CONFIG_NAME}")
    names, fields = describe_adapter(listing, card_json, readme, config if isinstance(config, dict) else {})
    expected = _expected_files(repo_id, names, listing, card_json)
    files = {p: fetch.blob(listing[p], expected.get(p)) for p in names}
    same = None if force_new else reg.same_content(target, files.values())
    if same is not None:
        return same
    scratch = reg.home / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="pull-", dir=scratch))
    try:
        stage_files(reg.blobs, files, folder)
        with reg.db.write() as s:
            return record_adapter(s, folder, target.full_name, files, fields, declared_by=f"pull of {repo_id} from {endpoint}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def hub_revision(selector: str) -> str:
    """What `REPO@SELECTOR` asks the hub for: `@3` is tag `v3` (each push tags its version), `@latest` or nothing
    is `main`, anything else (`prod`, `v3`, a branch, a commit id) is a revision as it is."""
    if not selector or selector == "latest":
        return "main"
    return f"v{int(selector)}" if re.fullmatch(r"[0-9]{1,9}", selector) else selector


def _expected_files(
    repo_id: str, names: list[str], listing: dict[str, _RemoteFile], card_json: bytes | None
) -> dict[str, FileEntry]:
    """sha256 and size each file must have: from the card when there is one (checked against the listing)."""
    out: dict[str, FileEntry] = {}
    if card_json is not None:
        for f in AdapterCard.model_validate_json(card_json).files:
            out[f.path] = f
    for p in names:
        if is_pickle_name(p):
            raise PickleRefused(f"{repo_id}/{p}")
        if p not in listing:
            raise InvalidAdapter(f"{repo_id}/{CARD_FILE}", [f"lists {p}, which the repository does not contain"])
        remote, want = listing[p], out.get(p)
        if want is not None and remote.size is not None and remote.size != want.size:
            raise IntegrityError(
                f"{repo_id}/{p}", f"{want.size} bytes (per {CARD_FILE})", f"{remote.size} bytes listed by the hub"
            )
        if want is not None and remote.sha256 is not None and remote.sha256 != want.sha256:
            raise IntegrityError(
                f"{repo_id}/{p}", f"sha256 {want.sha256} (per {CARD_FILE})", f"sha256 {remote.sha256} listed by the hub"
            )
    return out


class _Fetcher:
    """Downloads one revision's files; every byte is hashed on the way and checked before it counts."""

    def __init__(self, api: HfApi, endpoint: str, repo_id: str, commit: str, reg: Registry, progress: bool | None) -> None:
        self.api, self.endpoint, self.repo_id, self.commit, self.reg, self.progress = (
            api,
            endpoint,
            repo_id,
            commit,
            reg,
            progress,
        )

    def _url(self, path: str) -> str:
        return f"{self.endpoint}/{self.repo_id}/resolve/{self.commit}/{quote(path)}"

    def _label(self, path: str) -> str:
        return f"{self.repo_id}@{self.commit[:12]}/{path}"

    @contextlib.contextmanager
    def _stream(self, f: _RemoteFile) -> Iterator[Iterator[bytes]]:
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        headers = build_hf_headers(token=self.api.token)
        with _remote_errors(self.endpoint, self.repo_id, self.commit):
            with get_session().stream("GET", self._url(f.path), headers=headers, follow_redirects=True) as r:
                hf_raise_for_status(r)
                yield r.iter_bytes(CHUNK)

    def small(self, f: _RemoteFile) -> bytes:
        """A small file (card, README, config) in memory, checked against its listed size and git blob id."""
        with self._stream(f) as chunks:
            data = b"".join(chunks)
        if f.size is not None and len(data) != f.size:
            raise IntegrityError(self._label(f.path), f"{f.size} bytes", f"{len(data)} bytes")
        if f.sha256 is not None:
            got = hashlib.sha256(data).hexdigest()
            if got != f.sha256:
                raise IntegrityError(self._label(f.path), f"sha256 {f.sha256}", f"sha256 {got}")
        elif f.blob_id is not None:
            from .oids import git_blob_sha1

            if git_blob_sha1(data) != f.blob_id:
                raise IntegrityError(self._label(f.path), f"git blob {f.blob_id}", f"git blob {git_blob_sha1(data)}")
        return data

    def blob(self, f: _RemoteFile, want: FileEntry | None) -> FileEntry:
        """Stream a file into the blob store; its sha256 must be the card's (or the listing's LFS sha256)."""
        sha = want.sha256 if want is not None else f.sha256
        size = want.size if want is not None else f.size
        if sha is not None and (stored := self.reg.blobs.size(sha)) is not None:
            return FileEntry(path=f.path, sha256=sha, size=stored)  # verified when stored
        bar = progress_bar(size, f.path, enabled=self.progress)
        git = hashlib.sha1(b"blob %d\0" % size) if sha is None and f.blob_id and size is not None else None
        try:
            with self._stream(f) as chunks, _Prefetch(chunks) as ahead:

                def on_chunk(b: bytes) -> None:
                    bar.update(len(b))
                    if git is not None:
                        git.update(b)

                reader = _IterReader(ahead, on_chunk=on_chunk)
                got_sha, got_size = self.reg.blobs.put_stream(reader, expected_sha256=sha, what=self._label(f.path))
        finally:
            bar.close()
        if size is not None and got_size != size:
            raise IntegrityError(self._label(f.path), f"{size} bytes", f"{got_size} bytes")
        if git is not None and git.hexdigest() != f.blob_id:
            raise IntegrityError(self._label(f.path), f"git blob {f.blob_id}", f"git blob {git.hexdigest()}")
        return FileEntry(path=f.path, sha256=got_sha, size=got_size)


class _Prefetch:
    """Receives the next chunks on a thread while the caller hashes and writes the previous ones.

    Socket reads, sha256 and file writes all release the GIL, so overlapping them is most of a pull's speed.
    """

    _END = object()

    def __init__(self, chunks: Iterator[bytes], depth: int = 16) -> None:
        self._q: queue.Queue[object] = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(chunks,), name="adapterhub-pull", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, chunks: Iterator[bytes]) -> None:
        try:
            for chunk in chunks:
                if not self._put(chunk):
                    return
            self._put(self._END)
        except BaseException as exc:  # handed to the consuming thread, which raises it there
            self._put(exc)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        item = self._q.get()
        if item is self._END:
            self._q.put(self._END)  # stay exhausted
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return cast(bytes, item)

    def __enter__(self) -> _Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class _IterReader:
    """A file-like `read(n)` over an iterator of byte chunks, so BlobStore.put_stream can consume a download.

    Chunks no larger than `n` are handed over as they are (no copy); larger ones are split.
    """

    def __init__(self, chunks: Iterator[bytes], on_chunk: Callable[[bytes], Any] | None = None) -> None:
        self._chunks = chunks
        self._buf = b""
        self._on_chunk = on_chunk

    def _next(self) -> bytes:
        chunk = next(self._chunks, b"")
        if chunk and self._on_chunk is not None:
            self._on_chunk(chunk)
        return chunk

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            parts = [self._buf]
            while chunk := self._next():
                parts.append(chunk)
            self._buf = b""
            return b"".join(parts)
        if not self._buf:
            self._buf = self._next()
        out, self._buf = (self._buf, b"") if len(self._buf) <= n else (self._buf[:n], self._buf[n:])
        return out


# --- search ------------------------------------------------------------------------------------------------


def remote_search(url: str, query: SearchQuery, *, token: str | None = None) -> SearchResult:
    """Run a registry search on a hub's JSON API (`POST /api/adapterhub/search`).

    A `base` on this machine is sent as its architecture hash (`fingerprint.search_key`), as local search does.
    """
    from huggingface_hub.utils import build_hf_headers, get_session

    endpoint = url.rstrip("/")
    if query.base:
        from ..fingerprint import search_key

        query = query.model_copy(update={"base": search_key(query.base)})
    import httpx2

    body = query.model_dump(mode="json", exclude=None if query.offset else {"offset"})  # hubs from before `offset` accept it
    try:
        r = get_session().post(f"{endpoint}/api/adapterhub/search", json=body, headers=build_hf_headers(token=token))
    except httpx2.TransportError as exc:
        raise RemoteError(endpoint, f"cannot reach the hub ({type(exc).__name__}: {exc})") from None
    if r.status_code == 404:
        raise RemoteError(endpoint, "no adapterhub search API here", hint="point --remote at an `adapterhub serve` hub")
    if r.status_code >= 400:
        raise RemoteError(endpoint, f"HTTP {r.status_code}: {server_message(r)}")
    return SearchResult.model_validate(r.json())


def _check_repo_id(repo_id: str) -> str:
    """`namespace/name` with path-safe segments (what both the Hub and the registry accept)."""
    ns, sep, nm = repo_id.partition("/")
    if not sep:
        raise UsageError(f"repository {repo_id!r} needs a namespace", hint="use NAMESPACE/NAME")
    check_segment(ns, "namespace")
    check_segment(nm, "repository name")
    return repo_id


__all__ = ["PushResult", "endpoint_url", "pull", "push", "remote_search", "upload_commit"]
