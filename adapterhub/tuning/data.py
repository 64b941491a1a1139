"""Reading instruction data from JSONL: three formats, detected per file, one clear problem per bad line.

Formats (each line one JSON object; blank lines are skipped):
- `vertex`: Vertex AI supervised tuning, `{"input_text": ..., "output_text": ...}`
- `chat`: `{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}` as OpenAI and Hugging Face use;
  the last message is the answer (it must be the assistant's), everything before it is the prompt
- `prompt_completion`: `{"prompt": ..., "completion": ...}`

The file's format is the one its first object has; every later line must have the same one. Lines are read as bytes
with a length cap, so a multi-gigabyte line or a binary file costs bounded memory and gets one line of error each.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidFile, NotFound

MAX_LINE_BYTES = 1 << 20  # one example; longer lines are refused, not read into memory
MAX_PROBLEMS = 20  # problems collected before giving up on a file
ROLES = ("system", "user", "assistant")
FORMAT_KEYS = {"vertex": ("input_text", "output_text"), "chat": ("messages",), "prompt_completion": ("prompt", "completion")}
HINT = ('each line one JSON object: {"input_text": ..., "output_text": ...}, {"messages": [{"role": ..., "content": ...}]}'
        ' or {"prompt": ..., "completion": ...}, one format per file')  # fmt: skip


class InvalidData(InvalidFile):
    """A JSONL data file with bad lines: every problem names its line."""

    what = "invalid data file"
    default_hint = HINT


@dataclass(frozen=True)
class Example:
    """One training/eval example: the prompt as chat messages and the answer text, with the line it came from."""

    prompt: tuple[tuple[str, str], ...]  # (role, content) pairs
    answer: str
    line: int

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.prompt]


@dataclass(frozen=True)
class Dataset:
    """A parsed data file: its examples, format, and the sha256 and size of its bytes (for provenance)."""

    path: Path
    format: str
    examples: list[Example]
    sha256: str
    size: int

    def __len__(self) -> int:
        return len(self.examples)


def read_jsonl(path: Path | str) -> Dataset:
    """Parse `path`; raises InvalidData listing the bad lines (line number and what is wrong) if there are any."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"data file {path}", hint="pass a .jsonl file")
    digest = hashlib.sha256()
    size = 0
    fmt: str | None = None
    fmt_line = 0
    examples: list[Example] = []
    problems: list[str] = []
    for lineno, raw in _lines(path, digest):
        size += len(raw)
        if len(problems) >= MAX_PROBLEMS:
            continue  # keep hashing (the sha256 is of the whole file) but stop parsing
        if raw is _TOO_LONG:
            problems.append(f"line {lineno}: longer than {MAX_LINE_BYTES:,} bytes")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"line {lineno}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})")
            continue
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except RecursionError:
            problems.append(f"line {lineno}: JSON nested too deeply")
            continue
        except ValueError as exc:
            problems.append(f"line {lineno}: not JSON ({getattr(exc, 'msg', exc)} at column {getattr(exc, 'colno', '?')})")
            continue
        if not isinstance(obj, dict):
            problems.append(f"line {lineno}: expected a JSON object, found {_kind(obj)}")
            continue
        found = detect_format(obj)
        if found is None:
            problems.append(f"line {lineno}: no known format (keys {_keys(obj)}); expected input_text/output_text, messages, "
                            "or prompt/completion")  # fmt: skip
            continue
        if found == "ambiguous":
            problems.append(f"line {lineno}: keys of more than one format ({_keys(obj)}); use one")
            continue
        if fmt is None:
            fmt, fmt_line = found, lineno
        elif found != fmt:
            problems.append(f"line {lineno}: {found} example in a {fmt} file (format set by line {fmt_line})")
            continue
        try:
            examples.append(_example(obj, fmt, lineno))
        except ValueError as exc:
            problems.append(f"line {lineno}: {exc}")
    if len(problems) >= MAX_PROBLEMS:
        problems.append("stopped reading after this many problems")
    if problems:
        raise InvalidData(str(path), problems)
    if not examples:
        raise InvalidData(str(path), ["no examples (the file is empty or blank)"])
    return Dataset(path=path, format=fmt or "", examples=examples, sha256=digest.hexdigest(), size=size)


def detect_format(obj: dict[str, object]) -> str | None:
    """The format whose keys the object has: a name, "ambiguous", or None."""
    hits = [name for name, keys in FORMAT_KEYS.items() if any(k in obj for k in keys)]
    if len(hits) > 1:
        return "ambiguous"
    return hits[0] if hits else None


# --- helpers -------------------------------------------------------------------------------------------------

_TOO_LONG = b"\x00too-long\x00"  # sentinel (identity-compared) for a line over MAX_LINE_BYTES


def _lines(path: Path, digest: hashlib._Hash) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) for each line, hashing every byte read; an over-long line is skipped in chunks."""
    with path.open("rb") as f:
        lineno = 0
        while True:
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            lineno += 1
            digest.update(raw)
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # drain the rest of the line without keeping it
                    raw = f.readline(MAX_LINE_BYTES)
                    digest.update(raw)
                yield lineno, _TOO_LONG
                continue
            yield lineno, raw


def _text(obj: dict[str, object], key: str, *, allow_empty: bool = False) -> str:
    if key not in obj:
        raise ValueError(f"missing {key!r}")
    v = obj[key]
    if not isinstance(v, str):
        raise ValueError(f"{key!r} must be a string, found {_kind(v)}")
    if not allow_empty and not v.strip():
        raise ValueError(f"{key!r} is empty")
    return v


def _example(obj: dict[str, object], fmt: str, lineno: int) -> Example:
    if fmt == "vertex":
        return Example(prompt=(("user", _text(obj, "input_text")),), answer=_text(obj, "output_text"), line=lineno)
    if fmt == "prompt_completion":
        return Example(prompt=(("user", _text(obj, "prompt")),), answer=_text(obj, "completion"), line=lineno)
    msgs = obj["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise ValueError(f"'messages' must be a non-empty list, found {'an empty list' if msgs == [] else _kind(msgs)}")
    pairs: list[tuple[str, str]] = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise ValueError(f"messages[{i}] must be an object with role and content, found {_kind(m)}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role must be one of {', '.join(ROLES)}, found {_short(role)}")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content must be a string, found {_kind(content)}")
        pairs.append((str(role), content))
    if pairs[-1][0] != "assistant":
        raise ValueError("the last message must be the assistant's answer")
    if not pairs[-1][1].strip():
        raise ValueError("the assistant's answer is empty")
    if len(pairs) < 2 or all(r == "system" for r, _ in pairs[:-1]):
        raise ValueError("no user message before the answer")
    return Example(prompt=tuple(pairs[:-1]), answer=pairs[-1][1], line=lineno)


def _kind(v: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number",
            type(None): "null"}.get(type(v), type(v).__name__)  # fmt: skip


def _short(v: object) -> str:
    text = json.dumps(v) if isinstance(v, (str, int, float, bool, type(None))) else _kind(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _keys(obj: dict[str, object]) -> str:
    keys = sorted(obj)
    shown = ", ".join(_short(k) for k in keys[:6]) + (f", and {len(keys) - 6} more" if len(keys) > 6 else "")
    return shown or "none"
