"""A real hub for the tests: `adapterhub serve` in a subprocess on 127.0.0.1 and a free port, spoken to by the
unmodified huggingface_hub client. One server per test module keeps the suite fast; tests use distinct repo names."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapterhub.hub.server.background import BackgroundHub
from adapterhub.hub.server.background import start_hub as _start

HubServer = BackgroundHub
PAGE_SIZE = 3  # small pages so every listing of a real adapter repo spans several Link-paginated pages


def start_hub(home: Path, blobs: str | None = None) -> BackgroundHub:
    """An open hub (`--open`): these tests push and read without tokens; tests/trust covers the closed hub."""
    return _start(home, args=["--open", "--page-size", str(PAGE_SIZE)], blobs=blobs)


def stop_hub(server: BackgroundHub) -> None:
    server.stop()


@pytest.fixture(scope="module", params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundHub]:
    """One hub per module and blob store: the local folder, and S3 (a fresh prefix in the Ceph bucket)."""
    if request.param == "local":
        server = start_hub(tmp_path_factory.mktemp("hub") / "home")
    else:
        from tests.s3 import fresh_prefix

        with fresh_prefix("hub") as url:
            server = start_hub(tmp_path_factory.mktemp("hub") / "home", blobs=url)
    yield server
    server.stop()
    shutil.rmtree(server.home, ignore_errors=True)
