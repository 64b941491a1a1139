"""Push a model folder to a hub: a base, or the merged model `adapterhub merge` wrote, so that
`AutoModel*.from_pretrained("ns/name")` with `HF_ENDPOINT` at the hub loads it.

The folder must be a model transformers can load (a `config.json` and safetensors weights whose headers check out,
`modelfiles.read_model_headers`); pickles are never pushed (`tensorfile.is_pickle_name`, the one list). Every other
non-hidden file goes too (tokenizer, generation config, shard index). Each file is hashed while it streams out (one
read), the hub's sha256 checked against ours and cached here by (path, size, mtime, inode), so a push that was cut
off asks the hub which files it already holds and sends only the rest (`client.upload_commit`). A README model card
is added when the folder has none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from ..card import FileEntry
from ..errors import InvalidModel, UsageError
from ..fingerprint import RACY_NS
from ..fsutil import atomic_write_bytes, check_relative_path
from ..modelfiles import read_model_config, read_model_headers
from ..paths import cache_dir
from ..tensorfile import is_pickle_name
from .adapters import README_FILE
from .client import PushResult, _check_repo_id, endpoint_url, upload_commit
from .streamed import LocalFile


def model_files(folder: Path) -> list[Path]:
    """The files of a model folder that are pushed: regular files, none hidden, no pickles, sorted."""
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file() or is_pickle_name(p.name):
            continue
        out.append(p)
    return out


SHA_CACHE = "file-sha256"  # under $ADAPTERHUB_HOME/cache: a pushed file's sha256 by (path, size, mtime_ns, inode)


def _file_key(path: Path) -> dict[str, Any]:
    real = os.path.realpath(path)
    st = os.stat(real)
    return {"path": real, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _entry(key: dict[str, Any]) -> Path:
    return cache_dir(SHA_CACHE) / f"{hashlib.sha256(str(key['path']).encode('utf-8', 'surrogateescape')).hexdigest()[:40]}.json"


def cached_sha256(path: Path) -> str | None:
    """The sha256 an earlier push computed for exactly this version of the file, else None: lets a push that was cut
    off ask the hub which files it holds before sending them again."""
    key = _file_key(path)
    try:
        obj = json.loads(_entry(key).read_bytes())
    except (OSError, ValueError):
        return None
    sha = obj.get("sha256") if isinstance(obj, dict) and obj.get("key") == key else None
    return sha if isinstance(sha, str) and len(sha) == 64 else None


def remember_sha256(f: LocalFile, key: dict[str, Any]) -> None:
    """Cache the sha256 the hub confirmed, if the file is still the version listed and not modified in the last 2 s
    (a same-size rewrite within one timestamp tick would keep the key: git's "racy clean" rule)."""
    if f.sha256 is None or _file_key(f.local) != key or time.time_ns() - int(key["mtime_ns"]) < RACY_NS:
        return
    with contextlib.suppress(OSError):  # a read-only home only costs a resend next time
        atomic_write_bytes(_entry(key), json.dumps({"key": key, "sha256": f.sha256}).encode())


def model_card(repo_id: str) -> str:
    """A minimal model card: transformers loads the repository; the front matter says so."""
    return (f"---\nlibrary_name: transformers\ntags:\n- adapterhub\n---\n\n# {repo_id}\n\n"
            "Model weights pushed with `adapterhub push`; load them with `AutoModel*.from_pretrained`.\n")  # fmt: skip


def push_model(
    folder: Path | str,
    *,
    repo: str,
    remote: str | None = None,
    private: bool = False,
    token: str | None = None,
    progress: bool | None = None,
) -> PushResult:
    """Upload the model in `folder` (a base or a merged model) to `repo` on a hub; checked as loadable first."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise UsageError(f"{folder} is not a folder", hint="pass the model's folder (what `adapterhub merge --out` wrote)")
    read_model_headers(path)  # safetensors weights whose headers check out; an adapter or a pickle-only folder is refused
    if read_model_config(path) is None:
        raise InvalidModel(str(path), ["no config.json"], hint="push a folder transformers can load")
    repo_id = _check_repo_id(repo)
    found = model_files(path)
    keys = {p: _file_key(p) for p in found}
    local = [
        LocalFile(check_relative_path(p.relative_to(path).as_posix()), p, cached_sha256(p), int(keys[p]["size"])) for p in found
    ]
    inline = {} if any(f.path_in_repo == README_FILE for f in local) else {README_FILE: model_card(repo_id).encode()}
    endpoint = endpoint_url(remote)
    commit, sent = upload_commit(endpoint, repo_id, token, local, inline, f"adapterhub push {path.name}", private=private,
                                 label=f"push {path.name}", progress=progress,
                                 on_hashed=lambda f: remember_sha256(f, keys[f.local]))  # fmt: skip
    files = [FileEntry(path=f.path_in_repo, sha256=str(f.sha256), size=f.size) for f in sent]
    return PushResult(ref=str(path), repo_id=repo_id, commit=commit, url=f"{endpoint}/{repo_id}", files=files)


__all__ = ["model_files", "push_model"]
