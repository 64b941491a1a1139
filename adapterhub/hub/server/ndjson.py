"""The commit payload (NDJSON: a header line, then one line per file or deletion), read as a stream.

`huggingface_hub` sends each "regular" file inline as base64 on one JSON line, so a 200 MB adapter arrives as a
270 MB line. Lines longer than `SMALL_LINE` are not buffered: the base64 of their `content` field is decoded
straight into a temporary file while it arrives, and only the rest of the line is parsed as JSON. Memory stays at
a few chunks whatever the file size: everything but a file's content (paths, the header, any extra field) is capped
at `MAX_FIELDS` bytes per line, a payload at `MAX_ENTRIES` lines, and what is kept of each line is small.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ...errors import PayloadTooLarge, UsageError

SMALL_LINE = 1 << 20  # a line up to this size is parsed whole, content and all
MAX_FIELDS = 2 * SMALL_LINE  # bytes of one line other than a streamed "content" value
MAX_ENTRIES = 10_000  # lines (files, deletions, header) in one commit payload
MAX_VALUE_CHARS = 4096  # a path, oid or algo kept from a line (paths are refused over 512 later, with the reason)
_CONTENT_KEY = re.compile(rb'"content"\s*:\s*"')


@dataclass
class UploadedFile:
    """A file decoded from the payload into a temp file: where, its sha256, and its size."""

    path: str
    tmp: Path
    sha256: str
    size: int


@dataclass
class CommitPayload:
    header: dict[str, Any] = field(default_factory=dict)
    files: list[UploadedFile] = field(default_factory=list)
    lfs_files: list[dict[str, Any]] = field(default_factory=list)  # {"path", "oid", "size"}: bytes already stored
    deletions: list[str] = field(default_factory=list)

    def cleanup(self) -> None:
        for f in self.files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f.tmp)


class _Base64Sink:
    """Decodes base64 text arriving in arbitrary pieces into a temp file, hashing the decoded bytes."""

    def __init__(self, tmp_dir: Path) -> None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="upload-", dir=tmp_dir)
        self.path = Path(name)
        self._fh: BinaryIO = os.fdopen(fd, "wb")
        self._pending = b""
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, text: bytes) -> None:
        # JSON may escape '/' as '\/'; base64 itself never contains a backslash.
        data = self._pending + text.replace(b"\\", b"")
        cut = len(data) - len(data) % 4
        self._pending = data[cut:]
        if cut:
            self._emit(data[:cut])

    def _emit(self, b64: bytes) -> None:
        try:
            raw = base64.b64decode(b64, validate=True)
        except binascii.Error as exc:
            raise UsageError(f"bad base64 in commit payload: {exc}") from None
        self._sha.update(raw)
        self._fh.write(raw)
        self.size += len(raw)

    def close(self) -> tuple[str, int]:
        if self._pending:
            raise UsageError("bad base64 in commit payload: length is not a multiple of 4")
        self._fh.close()
        return self._sha.hexdigest(), self.size

    def abort(self) -> None:
        with contextlib.suppress(OSError):  # on a full disk closing flushes and fails again: the file goes anyway
            self._fh.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class _Parser:
    """Feed it the body in pieces; small lines are parsed whole, long ones have their "content" streamed."""

    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = tmp_dir
        self.out = CommitPayload()
        self.buf = bytearray()
        self.sink: _Base64Sink | None = None
        self.prefix = b""  # a streamed line up to and including the opening quote of its "content" value
        self.streamed: UploadedFile | None = None  # decoded content waiting for the rest of its line
        self.entries = 0

    def feed(self, data: bytes) -> None:
        while data:
            if self.sink is not None:
                end = data.find(b'"')
                if end < 0:
                    self.sink.write(data)
                    return
                self.sink.write(data[:end])
                sha256, size = self.sink.close()
                self.streamed = UploadedFile("", self.sink.path, sha256, size)
                self.sink = None
                # Parse the rest of the line as if the content were "": path and encoding are what is left.
                self.buf = bytearray(self.prefix + b'"')
                data = data[end + 1 :]
                continue
            nl = data.find(b"\n")
            end = nl if nl >= 0 else len(data)
            self.buf += data[:end]
            data = data[end:]  # empty, or the newline and what follows it
            if self.streamed is None and len(self.buf) > SMALL_LINE:
                m = _CONTENT_KEY.search(self.buf)
                if m is not None and m.end() <= MAX_FIELDS:
                    self.prefix = bytes(self.buf[: m.end()])
                    data = bytes(self.buf[m.end() :]) + data
                    self.buf = bytearray()
                    self.sink = _Base64Sink(self.tmp_dir)
                    continue
            if len(self.buf) > MAX_FIELDS:
                raise PayloadTooLarge(f"commit payload: a line has over {MAX_FIELDS} bytes besides a file's content",
                                      hint="send file bytes in 'content' and keep other fields short")  # fmt: skip
            if data:
                data = data[1:]
                self._line()

    def finish(self) -> CommitPayload:
        if self.sink is not None:
            raise UsageError("commit payload ended inside a file's content")
        self._line()
        return self.out

    def abort(self) -> None:
        if self.sink is not None:
            self.sink.abort()
        if self.streamed is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.streamed.tmp)
        self.out.cleanup()

    def _line(self) -> None:
        line = bytes(self.buf)
        self.buf = bytearray()
        if not line.strip():
            return
        self.entries += 1
        if self.entries > MAX_ENTRIES:
            raise PayloadTooLarge(f"commit payload over {MAX_ENTRIES} entries", hint="split the upload into several commits")
        try:
            item = json.loads(line)
            key, value = item["key"], item["value"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise UsageError("commit payload: each line must be a JSON object with 'key' and 'value'") from None
        if not isinstance(value, dict):
            raise UsageError("commit payload: each line's 'value' must be a JSON object")
        if key in ("file", "lfsFile", "deletedFile", "deletedFolder") and not isinstance(value.get("path"), str):
            raise UsageError(f"commit payload: a {key} entry without a path")
        if key in ("file", "lfsFile", "deletedFile", "deletedFolder") and len(value["path"]) > MAX_VALUE_CHARS:
            raise UsageError(f"commit payload: a {key} path of {len(value['path'])} characters")
        if self.streamed is not None:
            streamed, self.streamed = self.streamed, None
            self.out.files.append(streamed)  # appended first so abort() removes it whatever happens next
            if key != "file" or value.get("encoding", "base64") != "base64":
                raise UsageError("commit payload: only base64 'file' entries may carry large content")
            streamed.path = value["path"]
        elif key == "header":
            self.out.header = value if isinstance(value, dict) else {}
        elif key == "file":
            if value.get("encoding", "base64") != "base64" or not isinstance(value.get("content"), str):
                raise UsageError("commit payload: file content must be a base64 string")
            sink = _Base64Sink(self.tmp_dir)
            try:
                sink.write(value["content"].encode("ascii", "replace"))  # non-ASCII: '?', refused as bad base64
                sha256, size = sink.close()
            except BaseException:
                sink.abort()
                raise
            self.out.files.append(UploadedFile(value["path"], sink.path, sha256, size))
        elif key == "lfsFile":
            kept = {k: value[k] for k in ("path", "algo", "oid", "size") if k in value}  # not any extra fields
            if any(isinstance(v, str) and len(v) > MAX_VALUE_CHARS for v in kept.values()):
                raise UsageError("commit payload: an lfsFile entry with an over-long value")
            self.out.lfs_files.append(kept)
        elif key in ("deletedFile", "deletedFolder"):
            self.out.deletions.append(value["path"].rstrip("/") + ("/" if key == "deletedFolder" else ""))
        else:
            raise UsageError(f"commit payload: unknown entry {key!r}")


async def read_commit_payload(chunks: AsyncIterator[bytes], tmp_dir: Path, *, max_bytes: int | None = None) -> CommitPayload:
    """Parse a streamed NDJSON commit body; inline files land in temp files under `tmp_dir` (call cleanup()).

    A body longer than `max_bytes` is refused (PayloadTooLarge) as soon as it is, and its temp files removed."""
    parser = _Parser(tmp_dir)
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if max_bytes is not None and received > max_bytes:
                raise PayloadTooLarge(
                    f"commit body over this hub's limit of {max_bytes} bytes", hint="upload fewer or smaller files"
                )
            parser.feed(bytes(chunk))
        return parser.finish()
    except BaseException:
        parser.abort()
        raise
