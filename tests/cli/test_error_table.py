"""One error table for every command: explained errors are one line with exit 1 (failed) or 2 (usage), a bug keeps
its traceback, and ADAPTERHUB_DEBUG=1 shows the traceback of an explained error too."""

from __future__ import annotations

import pytest

from adapterhub.cli import COMMANDS, main
from adapterhub.cli._common import exit_for
from adapterhub.errors import AdapterNotFound, InvalidReference, StoreError


def test_table() -> None:
    assert exit_for(InvalidReference("x y", "spaces")) == (2, str(InvalidReference("x y", "spaces")))
    assert exit_for(AdapterNotFound("a/b"))[0] == 1  # type: ignore[index]
    assert exit_for(StoreError("db gone"))[0] == 1  # type: ignore[index]
    assert exit_for(KeyError("bug")) is None


def test_no_command_carries_its_own_handler() -> None:
    import importlib
    import inspect

    for target in set(COMMANDS.values()):
        module = importlib.import_module(target.split(":")[0])
        assert "handle_errors" not in inspect.getsource(module), target


def test_explained_error_is_one_line(run) -> None:  # type: ignore[no-untyped-def]
    code, out = run("show", "nobody/nothing")
    assert code == 1
    assert out.strip().splitlines() == [f"error: {AdapterNotFound('nobody/nothing')}"]
    code, out = run("show", "not a ref")
    assert code == 2 and "Traceback" not in out


def test_debug_shows_the_traceback(run, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ADAPTERHUB_DEBUG", "1")
    code, out = run("show", "nobody/nothing")
    assert code == 1
    assert "Traceback (most recent call last)" in out and "AdapterNotFound" in out
    assert out.strip().splitlines()[-1] == f"error: {AdapterNotFound('nobody/nothing')}"


def test_a_bug_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import adapterhub.cli.registry as reg

    def broken() -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(reg, "_registry", broken)
    result = CliRunner().invoke(main, ["ls"])
    assert isinstance(result.exception, KeyError)
