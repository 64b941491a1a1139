"""What every command shares: the error table (exit codes), JSON vs table output, progress on terminals only."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import click
from pydantic import BaseModel

from ..errors import AdapterHubError, UsageError

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")


def _database_error(exc: BaseException) -> str | None:
    """A database that is unreachable or from another schema: one line with what to do, not a traceback."""
    if not type(exc).__module__.startswith("sqlalchemy"):
        return None
    first = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    return f"database error: {first}; check ADAPTERHUB_DATABASE_URL, or run `adapterhub db upgrade`"


def exit_for(exc: BaseException) -> tuple[int, str] | None:
    """The CLI's one error table: (exit code, line for stderr) for an error it explains, None for a bug.

    2: usage (a bad argument, reference or method; click prints it with the usage hint); 1: an operation failed."""
    if isinstance(exc, UsageError):
        return 2, str(exc)
    if isinstance(exc, AdapterHubError):
        return 1, str(exc)
    line = _database_error(exc)
    return (1, line) if line is not None else None


def debug_enabled() -> bool:
    """`ADAPTERHUB_DEBUG=1` prints the traceback of an explained error too."""
    return os.environ.get("ADAPTERHUB_DEBUG", "") not in ("", "0")


def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(o) for o in obj]
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    return obj


def print_json(obj: Any) -> None:
    click.echo(json.dumps(to_jsonable(obj), indent=2, sort_keys=False, default=str))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned table; empty result prints a short note instead."""
    if not rows:
        click.echo("(nothing)")
        return
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip())
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def show_progress() -> bool:
    """Progress bars only when a person is watching: stderr is a terminal."""
    return sys.stderr.isatty()


def parse_ref_weight(text: str) -> tuple[str, float]:
    """`REF[:WEIGHT]` -> (ref, weight); the weight defaults to 1.0."""
    ref, sep, w = text.rpartition(":")
    if not sep:
        return text, 1.0
    try:
        return ref, float(w)
    except ValueError:
        raise UsageError(f"bad weight in {text!r}: expected REF[:WEIGHT] with a number") from None
