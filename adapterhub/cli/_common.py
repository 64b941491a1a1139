"""What every command shares: error-to-exit-code mapping, JSON vs table output, progress on terminals only."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from pydantic import BaseModel

from ..errors import AdapterHubError, UsageError

F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")


def handle_errors(fn: F) -> F:
    """Turn AdapterHubError into one line on stderr: exit 2 for usage errors, 1 for failed operations."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UsageError as exc:
            raise click.UsageError(str(exc)) from None
        except AdapterHubError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except Exception as exc:
            # A database that is unreachable or from another schema: one line, not a traceback.
            if type(exc).__module__.startswith("sqlalchemy"):
                first = str(getattr(exc, "orig", None) or exc).splitlines()[0]
                click.echo(f"error: database error: {first}; check ADAPTERHUB_DATABASE_URL, or run `adapterhub db upgrade`", err=True)
                sys.exit(1)
            raise

    return wrapper  # type: ignore[return-value]


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
