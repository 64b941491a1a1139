"""Crash-safe file writing and safe names: nothing half-written ever sits at a final path."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import InvalidReference

TMP_PREFIX = ".ah-tmp-"
_PATH_HINT = "use a relative path like adapter_model.safetensors or sub/dir/file.json"
# Names are checked with fullmatch: `$` would also match before a final "\n", letting `name\n` through.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_writer(final: Path | str) -> Iterator[BinaryIO]:
    """Yield a temp file next to `final`; on success fsync it and rename it into place, on error remove it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(final: Path | str, data: bytes) -> None:
    with atomic_writer(final) as fh:
        fh.write(data)


@contextlib.contextmanager
def atomic_directory(final: Path | str, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temp folder beside `final`; rename it to `final` only when the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not overwrite and any(final.iterdir()):
        from .errors import AlreadyExists

        raise AlreadyExists(f"output folder {final}", hint="pass an empty or new folder")
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=final.parent))
    try:
        yield tmp
        for p in tmp.rglob("*"):
            if p.is_file():
                with open(p, "rb") as fh:
                    os.fsync(fh.fileno())
        if final.exists():
            old = final.with_name(f"{TMP_PREFIX}old-{final.name}-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_segment(value: str, what: str = "name") -> str:
    """Accept one path-safe name segment (no '/', '..', control characters, or leading dot)."""
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value) or ".." in value:
        raise InvalidReference(value, f"{what} must be 1-96 letters, digits, '-', '_' or '.', not starting with one")
    return value


def check_relative_path(path: str) -> str:
    """Accept a relative POSIX file path with safe segments; refuse '..', absolute paths, backslashes, drives."""
    if not path or len(path) > 512 or "\\" in path or path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise InvalidReference(path, "file paths must be relative, use '/', and be at most 512 characters", what="file path", hint=_PATH_HINT)
    for seg in path.split("/"):
        if seg in ("", ".", "..") or any(ord(c) < 32 or ord(c) == 127 for c in seg):
            raise InvalidReference(path, "file paths may not contain empty, '.', '..' or control-character segments", what="file path", hint=_PATH_HINT)
    return path
