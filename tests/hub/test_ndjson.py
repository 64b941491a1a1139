"""The streamed commit-payload reader: any split of the body into chunks gives the same files, big lines never
sit in memory whole, and a broken payload leaves no temp file behind."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapterhub.errors import UsageError
from adapterhub.hub.server.ndjson import SMALL_LINE, CommitPayload, read_commit_payload

BIG = os.urandom(3 * SMALL_LINE)  # its base64 line is several times SMALL_LINE: the streamed path
SMALL = b"tiny file\n"


def _body(escape_slashes: bool = False) -> bytes:
    lines = [
        {"key": "header", "value": {"summary": "s", "description": "", "parentCommit": "a" * 40}},
        {"key": "file", "value": {"content": base64.b64encode(BIG).decode(), "path": "w.safetensors", "encoding": "base64"}},
        {"key": "file", "value": {"content": base64.b64encode(SMALL).decode(), "path": "d/a.txt", "encoding": "base64"}},
        {"key": "deletedFile", "value": {"path": "old.txt"}},
        {"key": "deletedFolder", "value": {"path": "olddir"}},
    ]
    text = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    return text.replace(b"/", b"\\/") if escape_slashes else text


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _read(data: bytes, size: int, tmp: Path) -> CommitPayload:
    return asyncio.run(read_commit_payload(_chunks(data, size), tmp))


@pytest.mark.parametrize("size", [1 << 16, 4093, 1 << 20, 10 << 20])
@pytest.mark.parametrize("escape", [False, True])
def test_any_chunking_gives_the_same_files(tmp_path: Path, size: int, escape: bool) -> None:
    out = _read(_body(escape), size, tmp_path)
    try:
        assert out.header["parentCommit"] == "a" * 40
        got = {f.path: (f.tmp.read_bytes(), f.sha256, f.size) for f in out.files}
        assert got == {
            "w.safetensors": (BIG, hashlib.sha256(BIG).hexdigest(), len(BIG)),
            "d/a.txt": (SMALL, hashlib.sha256(SMALL).hexdigest(), len(SMALL)),
        }
        assert out.deletions == ["old.txt", "olddir/"]
    finally:
        out.cleanup()
    assert list(tmp_path.iterdir()) == []


def test_one_byte_chunks_of_small_lines(tmp_path: Path) -> None:
    body = b'{"key": "header", "value": {"summary": "x"}}\n{"key": "file", "value": {"content": "aGk=", "path": "h.txt"}}'
    out = _read(body, 1, tmp_path)
    assert [(f.path, f.tmp.read_bytes()) for f in out.files] == [("h.txt", b"hi")]
    out.cleanup()


@pytest.mark.parametrize("cut", [0.5, 0.999])
def test_truncated_payload_fails_and_cleans_up(tmp_path: Path, cut: float) -> None:
    body = _body()
    with pytest.raises(UsageError):
        _read(body[: int(len(body) * cut) - 3] + b'"}}', 1 << 16, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_bad_base64_is_refused(tmp_path: Path) -> None:
    body = json.dumps({"key": "file", "value": {"content": "!!!!" * 10, "path": "x"}}).encode()
    with pytest.raises(UsageError):
        _read(body, 1 << 16, tmp_path)
    assert list(tmp_path.iterdir()) == []
