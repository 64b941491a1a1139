"""Safetensors headers without torch: parse, validate, and refuse pickles by their magic bytes.

Reading a header costs a few kilobytes of I/O, so shape checks and architecture hashes never load weights.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidAdapter, InvalidFile, PickleRefused

MAX_HEADER_BYTES = 100 * 1024 * 1024
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


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


def read_header(path: Path | str, error: type[InvalidFile] = InvalidAdapter) -> Header:
    """Parse and bounds-check a safetensors header; raise `error` (or PickleRefused) with the reason."""
    path = Path(path)
    if path.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"):
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
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise error(str(path), [f"header length {n} exceeds file size {size} (truncated or not safetensors)"])
            raw = fh.read(n)
    except OSError as exc:
        raise error(str(path), [f"cannot read file: {exc.strerror or exc}"]) from exc
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise error(str(path), [f"safetensors header is not valid JSON ({exc})"]) from exc
    if not isinstance(obj, dict):
        raise error(str(path), ["safetensors header is not a JSON object"])
    data_start = 8 + n
    metadata = obj.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise error(str(path), ["safetensors __metadata__ is not a JSON object"])
    tensors: dict[str, TensorInfo] = {}
    problems: list[str] = []
    for name, info in obj.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
            if not isinstance(dtype, str) or not isinstance(info["shape"], list) or min(shape, default=0) < 0:
                raise ValueError("malformed")
            begin, end = int(begin), int(end)
        except (KeyError, TypeError, ValueError, OverflowError):
            problems.append(f"tensor {name!r} has a malformed header entry")
            continue
        t = TensorInfo(name, dtype, shape, data_start + int(begin), data_start + int(end))
        if dtype not in DTYPE_SIZES:
            problems.append(f"tensor {name!r} has unknown dtype {dtype}")
        elif t.nbytes != t.numel * DTYPE_SIZES[dtype] or t.start < data_start:
            problems.append(f"tensor {name!r} byte range does not match its shape {list(shape)} and dtype {dtype}")
        elif t.end > size:
            problems.append(f"tensor {name!r} extends past the end of the file (truncated download?)")
        tensors[name] = t
    if problems:
        raise error(str(path), problems)
    return Header(path, tensors, {str(k): str(v) for k, v in metadata.items()}, data_start, size)


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
