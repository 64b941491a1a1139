"""`adapterhub deploy` in a child process on 127.0.0.1 and a free port: for tests, the demo and the benchmark.

The child is the real command, so what runs is exactly what a user runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import RemoteError
from ..hub.server.background import ServerProcess, free_port


@dataclass
class BackgroundDeploy(ServerProcess):
    """`url` is the server root; the OpenAI base_url is `base_url`."""

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


def start_deploy(base: Path, home: Path, *, args: list[str] | None = None, log: Path | None = None, timeout: float = 300.0,
                 env: dict[str, str] | None = None) -> BackgroundDeploy:  # fmt: skip
    """Start `adapterhub deploy BASE` over the registry at `home`; wait until /health answers (RemoteError if it dies)."""
    import httpx

    port = free_port()
    log = log or home / f"deploy-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, "ADAPTERHUB_HOME": str(home), **(env or {})}
    cmd = [sys.executable, "-m", "adapterhub", "deploy", str(base), "--port", str(port), *(args or [])]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=child_env)
    server = BackgroundDeploy(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + timeout
    key = (env or {}).get("ADAPTERHUB_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    while True:
        if proc.poll() is not None:
            raise RemoteError(server.url, f"adapterhub deploy exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2, headers=headers).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RemoteError(server.url, f"adapterhub deploy did not answer within {timeout:.0f} s: {log.read_text()[-2000:]}")
        time.sleep(0.2)
