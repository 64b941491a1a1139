"""Push a model folder to a hub: a base, or the merged model `adapterhub merge` wrote, so that
`AutoModel*.from_pretrained("ns/name")` with `HF_ENDPOINT` at the hub loads it.

The folder must be a model transformers can load (a `config.json` and safetensors weights whose headers check out,
`modelfiles.read_model_headers`); pickles are never pushed (`tensorfile.is_pickle_name`, the one list). Every other
non-hidden file goes too (tokenizer, generation config, shard index). Files are hashed here, then streamed as an
adapter's are (`client.upload_commit`); a README model card is added when the folder has none.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..card import FileEntry
from ..errors import InvalidModel, UsageError
from ..fsutil import check_relative_path
from ..modelfiles import read_model_config, read_model_headers
from ..progress import progress_bar
from ..tensorfile import is_pickle_name
from .adapters import README_FILE
from .client import PushResult, _check_repo_id, endpoint_url, upload_commit
from .streamed import CHUNK, LocalFile


def model_files(folder: Path) -> list[Path]:
    """The files of a model folder that are pushed: regular files, none hidden, no pickles, sorted."""
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file() or is_pickle_name(p.name):
            continue
        out.append(p)
    return out


def _sha256(path: Path, bar: object) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            bar.update(len(chunk))  # type: ignore[attr-defined]  # a tqdm bar
    return h.hexdigest()


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
    total = sum(p.stat().st_size for p in found)
    with progress_bar(total, f"hash {path.name}", enabled=progress) as bar:
        local = [
            LocalFile(check_relative_path(p.relative_to(path).as_posix()), p, _sha256(p, bar), p.stat().st_size) for p in found
        ]
    inline = {} if any(f.path_in_repo == README_FILE for f in local) else {README_FILE: model_card(repo_id).encode()}
    endpoint = endpoint_url(remote)
    commit = upload_commit(endpoint, repo_id, token, local, inline, f"adapterhub push {path.name}", private=private,
                           label=f"push {path.name}", progress=progress)  # fmt: skip
    files = [FileEntry(path=f.path_in_repo, sha256=f.sha256, size=f.size) for f in local]
    return PushResult(ref=str(path), repo_id=repo_id, commit=commit, url=f"{endpoint}/{repo_id}", files=files)


__all__ = ["model_files", "push_model"]
