"""`adapterhub deploy` in a child process on 127.0.0.1 and a free port: for tests, the demo and the benchmark.

The child is the real command, so what runs is exactly what a user runs."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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
    port = free_port()
    log = log or home / f"deploy-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, "ADAPTERHUB_HOME": str(home), **(env or {})}
    cmd = [sys.executable, "-m", "adapterhub", "deploy", str(base), "--port", str(port), *(args or [])]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=child_env)
    server = BackgroundDeploy(f"http://127.0.0.1:{port}", proc, log)
    key = (env or {}).get("ADAPTERHUB_API_KEY")
    server.wait_ready(
        "/health", timeout=timeout, what="adapterhub deploy", headers={"Authorization": f"Bearer {key}"} if key else {}
    )
    return server
