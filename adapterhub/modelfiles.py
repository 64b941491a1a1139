"""Find a base model's safetensors files on disk and read their headers, without touching any tensor bytes.

Accepts a model folder (single file or sharded with an index), one `.safetensors` file, a shard index JSON, or a
Hugging Face cache entry (`models--org--name/` or its `snapshots/<rev>/`). Pickle checkpoints are refused unread.
`resolve_base` is the one rule for what names a base (folder, file, cache folder, or a Hub id `org/name`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BaseModelNotFound, InvalidModel, InvalidReference, PickleRefused
from .fsutil import check_relative_path, check_segment
from .tensorfile import Header, TensorInfo, is_pickle_name, looks_like_pickle, read_header

SINGLE_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
INDEX_SUFFIX = ".safetensors.index.json"


@dataclass(frozen=True)
class ModelHeaders:
    """A resolved model: its weight files (in a stable order) and every tensor's header entry by name."""

    folder: Path  # the folder holding the weights (and config.json, when present)
    files: list[Path]
    headers: list[Header]
    tensors: dict[str, TensorInfo]
    tensor_file: dict[str, Path]  # tensor name -> the file holding it


@dataclass(frozen=True)
class _Resolved:
    folder: Path
    files: list[Path]
    weight_map: dict[str, str] | None  # from the shard index, when there is one
    index: Path | None


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
# what a base download fetches: weights as safetensors, configs, tokenizer files and remote code (never pickles)
_HUB_FILES = ["*.safetensors", "*.safetensors.index.json", "*.json", "*.txt", "*.model", "*.tiktoken", "*.py", "*.jinja"]


def is_hub_id(text: str) -> bool:
    """Whether `text` has the form of a Hugging Face Hub model id (`org/name`), as opposed to a path."""
    return bool(_HUB_ID.fullmatch(text)) and not text.startswith((".", "~"))


def resolve_base(base: Path | str, *, revision: str | None = None, download: bool = True) -> Path:
    """What names a base, as one path: a folder or file as is, a Hugging Face cache entry (`models--org--name/`) as
    its snapshot, or a Hub id `org/name` from the local Hugging Face cache (HF_HOME / HF_HUB_CACHE; `revision`
    defaults to main) or, when not cached, downloaded through huggingface_hub unless HF_HUB_OFFLINE is set or
    `download` is False. Not found anywhere: BaseModelNotFound."""
    text = str(base)
    p = Path(text).expanduser()
    if p.exists():
        return _snapshot_of(p) if p.is_dir() and _is_hf_repo_root(p) else p
    if not is_hub_id(text):
        raise BaseModelNotFound(text)
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(text, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass  # not (completely) in the cache
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    if offline or not download:
        raise BaseModelNotFound(text) from None
    try:
        return Path(snapshot_download(text, revision=revision, allow_patterns=_HUB_FILES))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError):
        raise BaseModelNotFound(text) from None


def resolve_model_files(path: Path | str) -> list[Path]:
    """The safetensors files that make up the model at `path`; InvalidModel/PickleRefused with one line otherwise."""
    return _resolve(Path(path).expanduser()).files


def model_folder(path: Path | str) -> Path:
    """The folder the weights live in (a HF cache root resolves to its `refs/main` snapshot)."""
    return _resolve(Path(path).expanduser()).folder


def read_model_headers(path: Path | str) -> ModelHeaders:
    """Resolve `path` and parse every file's header; checks the index against the shards and refuses duplicates."""
    res = _resolve(Path(path).expanduser())
    headers = [read_header(f, error=InvalidModel) for f in res.files]
    tensors: dict[str, TensorInfo] = {}
    tensor_file: dict[str, Path] = {}
    for f, hdr in zip(res.files, headers, strict=True):
        for name, info in hdr.tensors.items():
            if name in tensor_file:
                raise InvalidModel(
                    str(f), [f"tensor {name!r} is also stored in {tensor_file[name].name}"],
                    hint="each tensor must live in exactly one shard; re-save the model",
                )  # fmt: skip
            tensors[name] = info
            tensor_file[name] = f
    if not tensors:
        raise InvalidModel(str(res.files[0] if len(res.files) == 1 else res.folder), ["the model holds no tensors"])
    if res.weight_map is not None and res.index is not None:
        wrong = [
            f"index puts {name!r} in {shard} but that shard does not hold it"
            for name, shard in sorted(res.weight_map.items())
            if tensor_file.get(name) != res.folder / shard
        ]
        if wrong:
            raise InvalidModel(str(res.index), wrong, hint="the index and the shards disagree; download the model again")
    return ModelHeaders(res.folder, res.files, headers, tensors, tensor_file)


CONFIG_NAME = "config.json"


def read_model_config(path: Path | str) -> dict[str, Any] | None:
    """The transformers `config.json` beside the model's weights (a folder, a weights file, or a Hugging Face cache
    entry), or None when there is none or it is unreadable: the one reader of a base model's config."""
    p = Path(path).expanduser()
    try:
        folder = p.parent if p.is_file() else _snapshot_of(p) if _is_hf_repo_root(p) else p
        obj = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError, InvalidModel):
        return None
    return obj if isinstance(obj, dict) else None


def model_type(path: Path | str) -> str | None:
    """`model_type` from the config.json beside the weights, or None when there is none or it is unreadable."""
    obj = read_model_config(path)  # informational: a model without a config (or a broken one) still hashes
    value = obj.get("model_type") if obj is not None else None
    return value if isinstance(value, str) and value else None


def _resolve(p: Path) -> _Resolved:
    try:
        return _resolve_unguarded(p)
    except (OSError, UnicodeDecodeError) as exc:  # an unreadable folder, refs file or index: one line, not a trace
        raise InvalidModel(str(p), [f"cannot read: {getattr(exc, 'strerror', None) or exc}"]) from exc


def _resolve_unguarded(p: Path) -> _Resolved:
    if p.is_symlink() and not p.exists():
        raise InvalidModel(str(p), ["broken symlink (an incomplete Hugging Face download?)"])
    if not p.exists():
        raise InvalidModel(str(p), ["no such file or folder"])
    if p.is_file():
        if p.name.endswith(INDEX_SUFFIX):
            return _from_index(p)
        _refuse_pickle_file(p)
        return _Resolved(p.parent, [p], None, None)
    if not p.is_dir():
        raise InvalidModel(str(p), ["not a regular file or folder"])
    if _is_hf_repo_root(p):
        p = _snapshot_of(p)
    return _from_folder(p)


def _refuse_pickle_file(p: Path) -> None:
    """Refuse by suffix or by magic bytes, so a checkpoint renamed to .safetensors is never handed to a loader."""
    if is_pickle_name(p):
        raise PickleRefused(str(p))
    try:
        with open(p, "rb") as fh:
            head = fh.read(9)  # looks_like_pickle needs byte 8 to tell a safetensors header apart
    except OSError as exc:
        raise InvalidModel(str(p), [f"cannot read file: {exc.strerror or exc}"]) from exc
    if looks_like_pickle(head):
        raise PickleRefused(str(p))


def _from_folder(folder: Path) -> _Resolved:
    # transformers' order: a single model.safetensors wins over an index
    single = folder / SINGLE_NAME
    if single.is_symlink() and not single.exists():
        raise InvalidModel(str(single), ["broken symlink (an incomplete Hugging Face download?)"])
    if single.is_file():
        _refuse_pickle_file(single)
        return _Resolved(folder, [single], None, None)
    if (folder / INDEX_NAME).is_file():
        return _from_index(folder / INDEX_NAME)
    if (folder / "adapter_config.json").is_file():
        raise InvalidModel(str(folder), ["this is a PEFT adapter folder, not a base model"], hint="pass the base model's folder")
    indexes = sorted(q for q in folder.glob(f"*{INDEX_SUFFIX}") if q.is_file())
    if len(indexes) == 1:
        return _from_index(indexes[0])
    if len(indexes) > 1:
        raise InvalidModel(str(folder), [f"{len(indexes)} shard indexes ({', '.join(q.name for q in indexes)})"],
                           hint="pass the index JSON of the model you mean")  # fmt: skip
    singles = sorted(q for q in folder.glob("*.safetensors") if q.exists())
    if len(singles) == 1:
        _refuse_pickle_file(singles[0])
        return _Resolved(folder, singles, None, None)
    if len(singles) > 1:
        raise InvalidModel(str(folder), [f"{len(singles)} .safetensors files but no {INDEX_NAME} saying how they fit"],
                           hint="pass one file, or add the shard index the model was saved with")  # fmt: skip
    if any(is_pickle_name(q) for q in folder.iterdir()):
        raise PickleRefused(str(folder))
    raise InvalidModel(str(folder), [f"no {SINGLE_NAME} or {INDEX_NAME} in this folder"])


def _from_index(index: Path) -> _Resolved:
    try:
        obj = json.loads(index.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidModel(str(index), [f"cannot read shard index: {exc.strerror or exc}"]) from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise InvalidModel(str(index), [f"shard index is not valid JSON ({exc})"]) from exc
    weight_map = obj.get("weight_map") if isinstance(obj, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise InvalidModel(str(index), ["shard index has no 'weight_map' object naming the shards"])
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise InvalidModel(str(index), ["shard index 'weight_map' must map tensor names to shard file names"])
    folder = index.parent
    problems: list[str] = []
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        try:
            check_relative_path(shard)  # an index must not point outside its folder
        except InvalidReference:
            problems.append(f"shard path {shard!r} is not a plain relative path")
            continue
        if is_pickle_name(shard):
            raise PickleRefused(str(folder / shard))
        if not (folder / shard).is_file():
            problems.append(f"shard {shard} listed in the index is missing")
    if problems:
        raise InvalidModel(str(index), problems, hint="download the missing shards again, or re-save the model")
    files = [folder / s for s in shards]
    for f in files:
        _refuse_pickle_file(f)
    return _Resolved(folder, files, dict(weight_map), index)


def _is_hf_repo_root(p: Path) -> bool:
    return p.name.startswith("models--") and (p / "snapshots").is_dir()


def _snapshot_of(root: Path) -> Path:
    """`models--org--name/` -> `snapshots/<refs/main>/`; a lone snapshot is used when refs/main is absent."""
    ref = root / "refs" / "main"
    if ref.is_file():
        rev = ref.read_text(encoding="utf-8").strip()
        try:
            check_segment(rev, "revision")
        except InvalidReference:
            raise InvalidModel(str(ref), [f"refs/main holds {rev[:80]!r}, not a revision"]) from None
        snap = root / "snapshots" / rev
        if not snap.is_dir():
            raise InvalidModel(str(root), [f"refs/main names snapshot {rev} which is not in snapshots/"])
        return snap
    snaps = sorted(q for q in (root / "snapshots").iterdir() if q.is_dir())
    if len(snaps) == 1:
        return snaps[0]
    raise InvalidModel(str(root), [f"no refs/main and {len(snaps)} snapshots"], hint="pass snapshots/<revision> itself")
