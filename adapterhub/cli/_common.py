"""What every command shares: the error table (exit codes), JSON vs table output, progress on terminals only."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import click
from pydantic import BaseModel

from ..errors import AdapterHubError, UsageError

_JSON_STDOUT = "adapterhub.json_stdout"  # ctx.meta key: the real stdout while --json sends everything else to stderr


def _json_mode(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    """`--json`: stdout carries the JSON document and nothing else. Libraries' log lines and progress bars
    (transformers' "Loading weights", huggingface_hub's downloads) are silenced while the command runs, and anything
    still printed to stdout goes to stderr. Both are undone when the command ends (in-process callers keep theirs)."""
    if value:
        ctx.with_resource(quiet_libraries())
        ctx.meta[_JSON_STDOUT] = sys.stdout
        ctx.with_resource(contextlib.redirect_stdout(sys.stderr))
    return value


_QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence transformers' and huggingface_hub's logging and progress bars, whether they are imported yet or not
    (the environment covers a later import), and restore everything afterwards."""
    saved_env = {k: os.environ.get(k) for k in _QUIET_ENV}
    os.environ.update(_QUIET_ENV)
    undo: list[Callable[[], object]] = []
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

        if not are_progress_bars_disabled():
            disable_progress_bars()
            undo.append(enable_progress_bars)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # transformers has no annotations here
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        undo.append(lambda: hf_logging.set_verbosity(level))
        if bars:
            undo.append(hf_logging.enable_progress_bar)
    try:
        yield
    finally:
        for fn in reversed(undo):
            fn()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


json_option = click.option("--json", "as_json", is_flag=True, callback=_json_mode, expose_value=True,
                           help="Print one JSON document for scripts instead of a table (log lines go to stderr).")  # fmt: skip
quiet_option = click.option("-q", "--quiet", is_flag=True, help="Print only the adapter references, one per line.")


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
    """The command's JSON document, on the real stdout (see `_json_mode`)."""
    ctx = click.get_current_context(silent=True)
    out: IO[str] | None = ctx.meta.get(_JSON_STDOUT) if ctx is not None else None
    click.echo(json.dumps(to_jsonable(obj), indent=2, sort_keys=False, default=str), file=out)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A table drawn by rich: fitted to a terminal, at its natural width (never wrapped) when piped. An empty result
    prints a short note instead."""
    if not rows:
        click.echo("(nothing)")
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False, header_style="bold")
    for h in headers:
        table.add_column(h.upper(), overflow="fold")
    for row in rows:
        table.add_row(*("" if c is None else str(c) for c in row))
    if sys.stdout.isatty():
        Console(file=sys.stdout, highlight=False).print(table)
        return
    piped = Console(file=io.StringIO(), highlight=False, color_system=None, width=100_000)
    piped.print(table)
    for line in piped.file.getvalue().splitlines():  # type: ignore[attr-defined]  # the StringIO given above
        click.echo(line.rstrip())


def print_refs(refs: Sequence[str]) -> None:
    """`-q`: only the references, one per line, for `xargs` and shell loops."""
    for r in refs:
        click.echo(r)


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
