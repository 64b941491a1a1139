"""CLI test helpers: invoke `adapterhub` in-process and get (exit code, output), or stdout and stderr apart."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner

from adapterhub.cli import main


@pytest.fixture
def run() -> Callable[..., tuple[int, str]]:
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        result = runner.invoke(main, list(args), catch_exceptions=False)
        return result.exit_code, result.output

    return invoke


@pytest.fixture
def run_split() -> Callable[..., tuple[int, str, str]]:
    """(exit code, stdout, stderr): for checking that stdout carries only the JSON or the references."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> tuple[int, str, str]:
        result = runner.invoke(main, list(args), catch_exceptions=False, input=input)
        return result.exit_code, result.stdout, result.stderr

    return invoke
