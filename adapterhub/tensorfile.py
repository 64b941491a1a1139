"""Safetensors headers without torch: parse, validate, and refuse pickles by their names and magic bytes.

Reading a header costs a few kilobytes of I/O, so shape checks and architecture hashes never load weights. The
check is at least as strict as the `safetensors` library (0.8) itself, so nothing is registered that PEFT cannot
load; `tests/test_tensorfile_strict.py` compares the two on generated headers.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidAdapter, InvalidFile, PickleRefused

MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit (MAX_HEADER_SIZE)
MAX_TENSORS = 65_536  # per file; a 70B all-linear LoRA has ~2,240 tensors, with DoRA ~3,400
MAX_JSON_DEPTH = 127  # serde_json refuses deeper nesting (recursion limit 128)
_U64 = 1 << 64
# The dtypes adapterhub reads (bytes per element); safetensors knows a few more (`SAFETENSORS_DTYPE_BITS`).
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
# Every dtype safetensors 0.8 accepts, in bits per element (F4/F6 pack several elements per byte).
SAFETENSORS_DTYPE_BITS = {
    **{d: 8 * n for d, n in DTYPE_SIZES.items()},
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "C64": 64,
}  # fmt: skip
# File names that hold pickles (torch.save, pickle.dump): refused everywhere by name, before any byte is read.
# The one list: `add`, `push`, the hub's commits and model loading all use it.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def is_pickle_name(path: str | Path) -> bool:
    """True for a file name with a pickle suffix (any case): such files are never read, stored or registered."""
    return str(path).lower().endswith(PICKLE_SUFFIXES)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Header:
    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int
    file_size: int


def looks_like_pickle(head: bytes) -> bool:
    """True for a torch zip checkpoint, a raw pickle stream, or a legacy torch tar file.

    Pass at least 9 bytes: a safetensors header whose length's low byte is 0x80 is told apart by the `{` at byte 8."""
    if head[8:9] == b"{":
        return False
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80" or head.startswith(b"\x1f\x8b")


class _Refused(ValueError):
    """A header that safetensors (or adapterhub, where it is stricter) would not load; the message says why."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON objects without duplicate keys: Python's json keeps the last silently, so two readers could disagree."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"duplicate key {key!r}")
            seen.add(key)
    return out


def _parse_int(text: str) -> int | float:
    """Integers as serde_json reads them: beyond 64 bits, or `-0`, they are floats (so never a shape or offset)."""
    if text == "-0" or len(text.lstrip("-")) > 20:
        return _parse_float(text)
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused(f"number {text[:20]} out of range")
    return value


def _refuse_constant(text: str) -> Any:
    raise _Refused(f"{text} is not JSON")


def _decoder(max_objects: int) -> json.JSONDecoder:
    """A decoder refusing duplicate keys, serde_json's number rules, and more than `max_objects` JSON objects (each
    tensor entry is one), so a header of 300,000 tensors is refused part-way rather than parsed whole."""
    seen = 0

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal seen
        seen += 1
        if seen > max_objects:
            raise _Refused(f"more than {max_objects} objects")
        return _pairs(items)

    return json.JSONDecoder(object_pairs_hook=pairs, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant)


def _check_tree(value: Any, depth: int = 1) -> None:
    """Nesting no deeper than serde_json allows, and strings that are valid Unicode (no lone surrogates)."""
    stack = [(value, depth)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, str):
            _utf8(v)
        elif isinstance(v, (dict, list)):
            if d > MAX_JSON_DEPTH:
                raise _Refused(f"nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(v, dict):
                for k, item in v.items():
                    _utf8(k)
                    stack.append((item, d + 1))
            else:
                stack.extend((item, d + 1) for item in v)


def _utf8(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise _Refused(f"string {s[:40]!r} holds a lone surrogate escape") from None


def _u64(value: Any) -> bool:
    return type(value) is int and 0 <= value < _U64


def parse_header_json(raw: bytes, data_len: int, *, max_tensors: int = MAX_TENSORS) -> tuple[dict[str, tuple[str, tuple[int, ...], int, int]], dict[str, str]]:
    """Validate a safetensors header as safetensors 0.8 does (`read_metadata` + `Metadata::validate`), and a bit more.

    Returns {name: (dtype, shape, begin, end)} with offsets relative to the data section, and the `__metadata__`.
    Raises ValueError with the reason. Stricter than safetensors on purpose: duplicate keys anywhere, a tensor entry
    that is not an object, a dtype given as anything but its name, dtypes adapterhub does not read (F4, F6_*, C64...),
    and more than `max_tensors` tensors.
    """
    try:
        text = raw.decode("utf-8")  # strict: json.loads(bytes) would also take UTF-16/32, which safetensors refuses
    except UnicodeDecodeError as exc:
        raise ValueError(f"header is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if raw.count(b'"data_offsets"') > max_tensors:  # cheap early answer for a header far over the limit
        raise ValueError(f"more than {max_tensors} tensors in one file, over the limit")
    try:
        # tensor entries + the header + __metadata__, and room for the odd extra object inside entries
        obj = _decoder(2 * max_tensors + 16).decode(text)
    except _Refused as exc:
        raise ValueError(f"header is not valid JSON: {exc}") from None
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"header is not valid JSON ({why})") from None
    if not isinstance(obj, dict):
        raise ValueError("header is not a JSON object")
    try:
        _check_tree(obj)
    except _Refused as exc:
        raise ValueError(f"header is not valid JSON: {exc}") from None
    metadata = obj.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("__metadata__ must map strings to strings")
    if len(obj) > max_tensors:
        raise ValueError(f"{len(obj)} tensors in one file, over the limit of {max_tensors}")
    entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    for name, info in obj.items():
        entries[name] = _entry(name, info)
    end = 0
    for name, (dtype, shape, begin, stop) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin != end or stop < begin:
            raise ValueError(f"tensor {name!r}: data_offsets [{begin}, {stop}] do not start where the previous tensor ends ({end}): "
                             "tensors must cover the data without gaps or overlaps")  # fmt: skip
        end = stop
        nelements = 1
        for d in shape:
            nelements *= d
            if nelements >= _U64:
                raise ValueError(f"tensor {name!r}: shape {list(shape)} overflows")
        nbits = nelements * SAFETENSORS_DTYPE_BITS[dtype]
        if nbits >= _U64:
            raise ValueError(f"tensor {name!r}: shape {list(shape)} overflows")
        if nbits % 8:
            raise ValueError(f"tensor {name!r}: {nelements} elements of {dtype} are not a whole number of bytes")
        if stop - begin != nbits // 8:
            raise ValueError(f"tensor {name!r}: byte range [{begin}, {stop}] does not match its shape {list(shape)} and dtype {dtype}")
    if end > data_len:
        raise ValueError(f"tensor data extends past the end of the file: the tensors need {end} bytes after the header, "
                         f"the file has {data_len} (truncated download?)")  # fmt: skip
    if end < data_len:
        raise ValueError(f"{data_len - end} trailing bytes after the last tensor (safetensors refuses a file its tensors do not cover)")
    for name, (dtype, *_rest) in entries.items():
        if dtype not in DTYPE_SIZES:
            raise ValueError(f"tensor {name!r} has dtype {dtype}, which adapterhub does not read")
    return entries, metadata


def _entry(name: str, info: Any) -> tuple[str, tuple[int, ...], int, int]:
    if not isinstance(info, dict):
        raise ValueError(f"tensor {name!r}: header entry is not an object")
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in info]
    if missing:
        raise ValueError(f"tensor {name!r}: header entry has no {missing[0]}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPE_BITS:
        raise ValueError(f"tensor {name!r} has unknown dtype {str(dtype)[:20]}")
    if not isinstance(shape, list) or not all(_u64(d) for d in shape):
        raise ValueError(f"tensor {name!r}: shape must be a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_u64(o) for o in offsets):
        raise ValueError(f"tensor {name!r}: data_offsets must be two non-negative integers")
    return dtype, tuple(shape), offsets[0], offsets[1]


def read_header(path: Path | str, error: type[InvalidFile] = InvalidAdapter, *, max_tensors: int = MAX_TENSORS) -> Header:
    """Parse and check a safetensors header (every rule safetensors applies, see `parse_header_json`); raise
    `error` (or PickleRefused) with the reason."""
    path = Path(path)
    if is_pickle_name(path):
        raise PickleRefused(str(path))
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(9)
            if looks_like_pickle(head):
                raise PickleRefused(str(path))
            head = head[:8]
            fh.seek(8)
            if len(head) < 8:
                raise error(str(path), ["file is shorter than a safetensors header (truncated?)"])
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES:
                raise error(str(path), [f"header length {n} is over safetensors' limit of {MAX_HEADER_BYTES} bytes"])
            if 8 + n > size:
                raise error(str(path), [f"header length {n} exceeds file size {size} (truncated or not safetensors)"])
            raw = fh.read(n)
    except OSError as exc:
        raise error(str(path), [f"cannot read file: {exc.strerror or exc}"]) from exc
    data_start = 8 + n
    try:
        entries, metadata = parse_header_json(raw, size - data_start, max_tensors=max_tensors)
    except ValueError as exc:
        raise error(str(path), [f"invalid safetensors header: {exc}"]) from None
    tensors = {name: TensorInfo(name, dtype, shape, data_start + b, data_start + e) for name, (dtype, shape, b, e) in entries.items()}
    return Header(path, tensors, metadata, data_start, size)


def count_nonfinite(path: Path | str, info: TensorInfo) -> int:
    """How many NaN/Inf values a floating tensor holds, read through a memory map (bf16 checked by its bits)."""
    import numpy as np

    float_views = {"F16": (np.float16, None), "F32": (np.float32, None), "F64": (np.float64, None), "BF16": (np.uint16, 0x7F80)}
    if info.dtype not in float_views or info.numel == 0:
        return 0
    np_dtype, exp_mask = float_views[info.dtype]
    arr = np.memmap(path, dtype=np_dtype, mode="r", offset=info.start, shape=(info.numel,))
    if exp_mask is not None:
        # bfloat16: all exponent bits set means Inf or NaN
        return int(np.count_nonzero((arr & exp_mask) == exp_mask))
    return int(arr.size - np.count_nonzero(np.isfinite(arr)))
