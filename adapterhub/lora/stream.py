"""Streaming safetensors: read one tensor at a time by its header offsets, write shards header-first.

Merge and extract touch models far larger than the memory they may use, so nothing here holds more than one
tensor, and merge only a block of its rows: reads go from the file straight into a buffer of that size,
untouched tensors are copied byte for byte (kernel-side where the OS allows), and a writer lays out its header
up front because every shape is known.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from ..errors import InvalidModel, UsageError
from ..modelfiles import INDEX_NAME, SINGLE_NAME, read_model_headers
from ..tensorfile import DTYPE_SIZES, TensorInfo

_COPY_CHUNK = 64 * 1024 * 1024

TORCH_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64,
    "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
    "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}  # fmt: skip
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in TORCH_DTYPES.items()}
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
_USER_DTYPES = {
    "float32": "F32",
    "fp32": "F32",
    "float16": "F16",
    "fp16": "F16",
    "half": "F16",
    "bfloat16": "BF16",
    "bf16": "BF16",
}


def parse_dtype(text: str | torch.dtype | None) -> str | None:
    """A user's dtype (`bf16`, `float32`, torch.bfloat16) as its safetensors name; None keeps each tensor's own."""
    if text is None:
        return None
    if isinstance(text, torch.dtype):
        if text not in DTYPE_NAMES or DTYPE_NAMES[text] not in FLOAT_DTYPES:
            raise UsageError(f"unsupported output dtype {text}: use float32, float16 or bfloat16")
        return DTYPE_NAMES[text]
    key = text.strip().lower().removeprefix("torch.")
    if key not in _USER_DTYPES:
        raise UsageError(f"unknown dtype {text!r}: use float32, float16 or bfloat16")
    return _USER_DTYPES[key]


def parse_size(text: str | int) -> int:
    """`2GB` (10^9, as transformers counts), `500MiB` (2^20), or a byte count -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*", text.upper())
    if not m:
        raise UsageError(f"bad size {text!r}: expected e.g. 2GB, 500MB, 1GiB or a number of bytes")
    unit = m.group(2).rstrip("B") or ""
    base = 1024 if unit.endswith("I") else 1000
    power = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit.rstrip("I")]
    size = int(float(m.group(1)) * base**power)
    if size <= 0:
        raise UsageError(f"bad size {text!r}: must be positive")
    return size


@contextlib.contextmanager
def one_intra_op_thread() -> Iterator[None]:
    """Run torch ops single-threaded for the block, then restore the setting (process-wide, as torch's is).

    Merge blocks are cache-sized and memory-bound, and compose/extract SVDs are small: a second OpenMP thread buys
    little, while its barriers cost 10-100x when cores are shared (measured on a loaded 2-core machine: 0.2 ms vs
    17 ms per 1M-element op; 0.06 s vs 8.4 s for a 1536x384 SVD)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# --- reading -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceTensor:
    """Where one tensor of a (possibly sharded) checkpoint lives."""

    path: Path
    info: TensorInfo

    @property
    def name(self) -> str:
        return self.info.name


def model_tensors(path: Path | str) -> dict[str, SourceTensor]:
    """Every tensor of a model (folder, index, file or HF cache entry) by name, in file order then byte order,
    so reading them in order is sequential."""
    headers = read_model_headers(path)
    out: dict[str, SourceTensor] = {}
    for f, header in zip(headers.files, headers.headers):
        for info in sorted(header.tensors.values(), key=lambda t: t.start):
            out[info.name] = SourceTensor(f, info)
    if not out:
        raise InvalidModel(str(path), ["the model has no tensors"])
    return out


def read_row_chunks(src: SourceTensor, max_elements: int) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(first row, end row, rows) of a tensor, read in pieces of at most ~`max_elements` (whole rows each).

    The buffer is reused between pieces: each yielded tensor is valid only until the next one is read.
    """
    info = src.info
    dtype = TORCH_DTYPES[info.dtype]
    if not info.shape or info.numel == 0:
        yield 0, 1, read_tensor(src)
        return
    rows = info.shape[0]
    row_elems = info.numel // rows
    row_bytes = row_elems * DTYPE_SIZES[info.dtype]
    step = max(1, min(rows, max_elements // max(1, row_elems)))
    buf = torch.empty(step * row_bytes, dtype=torch.uint8)
    view = buf.numpy().data
    with open(src.path, "rb") as fh:
        fh.seek(info.start)
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            n = (r1 - r0) * row_bytes
            if fh.readinto(view[:n]) != n:
                raise InvalidModel(str(src.path), [f"tensor {info.name!r} is truncated"])
            yield r0, r1, buf[:n].view(dtype).reshape(r1 - r0, *info.shape[1:])


def read_tensor(src: SourceTensor) -> torch.Tensor:
    """One tensor read by its byte range into a buffer of exactly its size (no mapping of the whole shard)."""
    info = src.info
    buf = torch.empty(info.nbytes, dtype=torch.uint8)
    with open(src.path, "rb") as fh:
        fh.seek(info.start)
        got = fh.readinto(buf.numpy().data)
    if got != info.nbytes:
        raise InvalidModel(str(src.path), [f"tensor {info.name!r} is truncated ({got} of {info.nbytes} bytes)"])
    dtype = TORCH_DTYPES[info.dtype]
    t = buf.view(dtype) if info.nbytes else torch.empty(0, dtype=dtype)
    return t.reshape(info.shape)


# --- writing -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to be written: known before its bytes are, so the header can go first."""

    name: str
    dtype: str  # safetensors dtype name
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = DTYPE_SIZES[self.dtype]
        for d in self.shape:
            n *= d
        return n


class StreamWriter:
    """Writes one safetensors file: header from the specs, then each tensor's bytes in spec order.

    Safetensors needs the data section fully covered with no gaps, so tensors must arrive in exactly the order
    given; `close` checks all of them did.
    """

    def __init__(self, fh: BinaryIO, specs: Sequence[TensorSpec], metadata: dict[str, str] | None = None) -> None:
        self._fh = fh
        self._specs = list(specs)
        self._next = 0
        header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
        offset = 0
        for s in self._specs:
            header[s.name] = {"dtype": s.dtype, "shape": list(s.shape), "data_offsets": [offset, offset + s.nbytes]}
            offset += s.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned, as safetensors writes it
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        self.data_bytes = offset

    def _expect(self, name: str) -> TensorSpec:
        if self._next >= len(self._specs) or self._specs[self._next].name != name:
            want = self._specs[self._next].name if self._next < len(self._specs) else "nothing"
            raise RuntimeError(f"stream writer expected tensor {want!r}, got {name!r}")
        self._next += 1
        return self._specs[self._next - 1]

    def write(self, name: str, tensor: torch.Tensor) -> None:
        spec = self._expect(name)
        if DTYPE_NAMES.get(tensor.dtype) != spec.dtype or tuple(tensor.shape) != spec.shape:
            raise RuntimeError(
                f"tensor {name!r}: got {tensor.dtype} {list(tensor.shape)}, header says {spec.dtype} {list(spec.shape)}"
            )
        if spec.nbytes:
            t = tensor.detach().contiguous().cpu()
            self._fh.write(t.view(torch.uint8).reshape(-1).numpy().data)

    def copy(self, name: str, src: SourceTensor) -> None:
        """Copy a tensor's bytes unchanged from its source file, in chunks (kernel-side copy when possible)."""
        spec = self._expect(name)
        if spec.nbytes != src.info.nbytes:
            raise RuntimeError(f"tensor {name!r}: source has {src.info.nbytes} bytes, header says {spec.nbytes}")
        self._fh.flush()
        with open(src.path, "rb") as inp:
            _copy_range(inp, self._fh, src.info.start, src.info.nbytes)

    def write_parts(self, name: str, parts: Iterator[torch.Tensor]) -> None:
        """Write one tensor from consecutive pieces (row chunks), so it never exists whole in memory."""
        spec = self._expect(name)
        want = TORCH_DTYPES[spec.dtype]
        done = 0
        for part in parts:
            if part.dtype != want:
                raise RuntimeError(f"tensor {name!r}: a part has dtype {part.dtype}, header says {spec.dtype}")
            t = part.detach().contiguous().cpu()
            self._fh.write(t.view(torch.uint8).reshape(-1).numpy().data)
            done += t.numel() * t.element_size()
        if done != spec.nbytes:
            raise RuntimeError(f"tensor {name!r}: wrote {done} bytes, header says {spec.nbytes}")

    def close(self) -> None:
        if self._next != len(self._specs):
            raise RuntimeError(f"stream writer closed after {self._next} of {len(self._specs)} tensors")
        self._fh.flush()


def _copy_range(inp: BinaryIO, out: BinaryIO, start: int, length: int) -> None:
    done = 0
    if hasattr(os, "copy_file_range"):
        try:
            while done < length:
                n = os.copy_file_range(inp.fileno(), out.fileno(), min(_COPY_CHUNK, length - done), start + done)
                if n <= 0:
                    break
                done += n
            out.seek(0, os.SEEK_END)  # copy_file_range advanced the fd's offset; keep the Python object in step
        except OSError:
            out.seek(0, os.SEEK_END)
    inp.seek(start + done)
    while done < length:
        chunk = inp.read(min(_COPY_CHUNK, length - done))
        if not chunk:
            raise InvalidModel(str(getattr(inp, "name", "?")), ["file ended inside a tensor (truncated?)"])
        out.write(chunk)
        done += len(chunk)


def plan_shards(specs: Sequence[TensorSpec], max_shard_size: int) -> list[list[TensorSpec]]:
    """Split specs, in order, into shards of at most `max_shard_size` bytes (a bigger tensor gets its own)."""
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for s in specs:
        if shards[-1] and size + s.nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(s)
        size += s.nbytes
    return shards


def shard_names(count: int) -> list[str]:
    """transformers' shard file names: `model.safetensors` alone, else `model-0000i-of-0000n.safetensors`."""
    if count == 1:
        return [SINGLE_NAME]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def write_index(folder: Path, shards: Sequence[tuple[str, Sequence[TensorSpec]]]) -> Path:
    """`model.safetensors.index.json` as transformers writes it (total_size + weight_map)."""
    weight_map = {s.name: fname for fname, specs in shards for s in specs}
    total = sum(s.nbytes for _, specs in shards for s in specs)
    path = folder / INDEX_NAME
    path.write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2) + "\n"
    )
    return path
