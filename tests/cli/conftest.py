"""CLI test helpers: invoke `adapterhub` in-process and get (exit code, output)."""

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
