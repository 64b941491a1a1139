"""A hub in a child process on 127.0.0.1 and a free port: for the demo, the benchmark and tests.

The child is the real `adapterhub serve` command, so what runs is exactly what a user runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from typing_extensions import Self

from ...errors import RemoteError

if TYPE_CHECKING:
    from ...store.registry import Registry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A server command running as a child process: stopped with Ctrl-C (then killed if it lingers) on exit."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 20.0) -> None:
        """Ctrl-C the server (uvicorn shuts down cleanly on SIGINT), then kill it if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)

    def wait_ready(self, probe: str, *, timeout: float, what: str, **request: Any) -> None:
        """Poll `probe` (a path under `url`) until it answers 200; RemoteError with the log's tail if the process dies
        or `timeout` passes first (the process is stopped then)."""
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RemoteError(self.url, f"{what} exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}{probe}", timeout=2, **request).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RemoteError(self.url, f"{what} did not answer within {timeout:.0f} s: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class BackgroundHub(ServerProcess):
    home: Path  # the hub's registry home: blob store and SQLite database (or only scratch, with --blobs and PostgreSQL)
    blobs: str | None = None  # the --blobs URL it was started with

    def registry(self, database_url: str | None = None) -> Registry:
        """The hub's own registry, opened from this process (same database and blob store)."""
        from ...sources import default_registry

        return default_registry(self.home, database_url, blobs=self.blobs)


def start_hub(home: Path, *, args: list[str] | None = None, timeout: float = 120.0, blobs: str | None = None) -> BackgroundHub:
    """Start `adapterhub serve` over `home` (and the blob store `blobs`, when given) and wait until it answers;
    RemoteError (with its log) if it dies first."""

    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = home / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "ADAPTERHUB_HOME": str(home)}
    env.pop("ADAPTERHUB_DATABASE_URL", None)
    env.pop("ADAPTERHUB_BLOBS", None)
    cmd = [sys.executable, "-m", "adapterhub", "serve", "--storage", str(home), "--port", str(port), *(args or [])]
    if blobs:
        cmd += ["--blobs", blobs]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    hub = BackgroundHub(f"http://127.0.0.1:{port}", proc, log, home, blobs)
    hub.wait_ready("/api/models", timeout=timeout, what="adapterhub serve", params={"limit": 1})
    return hub
