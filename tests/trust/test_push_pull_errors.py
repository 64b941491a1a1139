"""Every push/pull failure is one line on stderr with the hub's own message and what to do, exit code 1, no
traceback (issue 11: a bad token on an existing repo printed 80 lines ending in `HfUriError`).

Each case is the SECOND version of an existing repository: v1 went through, then v2 meets the failure. 401, 403,
404 (pull) and 413 come from a real closed `adapterhub serve` (SQLite and PostgreSQL); 404 (push), 409 and the 5xx
answers are injected by a pass-through proxy in front of it (the hub itself has no way to be made to fail on
command); connection refused is a port nobody listens on. Through the CLI, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from adapterhub.hub.server.background import BackgroundHub, free_port
from adapterhub.store.registry import Registry
from adapterhub.store.tokens import TokenStore
from tests.factories import write_large_adapter

from .conftest import BACKENDS, fresh_database, hub_registry, serve

UPLOAD_LIMIT = 40_000  # v1 (a few KiB) fits, v2 (~130 KiB) does not
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length", "date", "server"}


@dataclass
class Proxy:
    """Forwards every request to `target`, except those matching `inject` ((method, path regex) -> (status, message)),
    which get the Hub's error shape: a JSON `{"error": ...}` body and `X-Error-Message`."""

    target: str
    inject: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    url: str = ""

    def start(self) -> ThreadingHTTPServer:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = bytearray()
                    while size := int(self.rfile.readline().strip() or b"0", 16):
                        out += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return bytes(out)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                for (method, pattern), (status, message) in proxy.inject.items():
                    if method == self.command and re.fullmatch(pattern, self.path.split("?")[0]):
                        data = json.dumps({"error": message}).encode()
                        self.send_response(status)
                        for k, v in (("Content-Type", "application/json"), ("X-Error-Message", message),
                                     ("Content-Length", str(len(data))), ("Retry-After", "30")):  # fmt: skip
                            self.send_header(k, v)
                        self.end_headers()
                        self.wfile.write(b"" if self.command == "HEAD" else data)
                        return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP | {"host"}}
                r = httpx.request(self.command, proxy.target + self.path, headers=headers, content=body, timeout=60)
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in _HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(r.content)

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _handle  # noqa: N815 - http.server's names

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


@dataclass
class Setup:
    hub: BackgroundHub
    proxy: Proxy
    src: Path  # ADAPTERHUB_HOME holding team/qv@1 and team/qv@2
    write: str
    read: str
    other: str


def cli(home: Path, *args: str, token: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ADAPTERHUB_HOME": str(home), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    env.pop("HF_TOKEN", None)
    env.pop("ADAPTERHUB_DATABASE_URL", None)
    if token is not None:
        env["HF_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "adapterhub", *args], env=env, capture_output=True, text=True, timeout=300)


def assert_one_line(p: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 1, and stderr is one line holding every needle (the hub's message and the fix), without a traceback."""
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1, (p.returncode, p.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module", params=BACKENDS)
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp(f"errors-{request.param}")
    src = Registry(home=root / "src")
    for seed, width in ((1, 64), (2, 4096)):
        src.add(write_large_adapter(root / f"a{seed}", seed=seed, layers=1, width=width, rank=4), "team/qv", "sentiment")
    src.db.dispose()
    with fresh_database(request.param) as db_url:
        home = root / "hub"
        home.mkdir()
        reg = hub_registry(home, db_url)
        tokens = TokenStore(reg.db)
        write, read, other = (
            tokens.create(ns, scope)[1] for ns, scope in (("team", "write"), ("team", "read"), ("other", "write"))
        )
        reg.db.dispose()
        with serve(home, db_url, "--max-upload-bytes", str(UPLOAD_LIMIT), open_hub=False) as hub:
            proxy = Proxy(hub.url)
            server = proxy.start()
            try:
                first = cli(root / "src", "push", "team/qv@1", "--remote", hub.url, token=write)
                assert first.returncode == 0, first.stderr
                yield Setup(hub, proxy, root / "src", write, read, other)
            finally:
                server.shutdown()


COMMIT = r"/api/models/team/qv/commit/main"
# a streamed push (adapterhub's own client) asks the LFS batch API first, then PUTs each file, then commits
WRITES = [("POST", r"/team/qv\.git/info/lfs/objects/batch"), ("PUT", r"/api/models/team/qv/uploads/.*"), ("POST", COMMIT)]
INJECTED = [
    (404, "hub repository 'team/qv' not found", ["not found", "check"]),
    (409, "commit to team/qv expected parent abc but the branch head is def", ["expected parent abc", "HTTP 409", "push again"]),
    (500, "the hub could not read or write its storage", ["could not read or write its storage", "HTTP 500", "retry"]),
    (502, "upstream gone", ["upstream gone", "HTTP 502", "retry"]),
    (503, "the database is busy: another writer held its lock too long", ["database is busy", "HTTP 503", "retry in 30 s"]),
    (507, "the hub's storage is full", ["storage is full", "HTTP 507", "operator"]),
]


def test_push_of_a_second_version_fails_in_one_line(setup: Setup) -> None:
    url, push2 = setup.hub.url, ("push", "team/qv@2", "--remote")
    assert_one_line(cli(setup.src, *push2, url, token="ah_not_a_real_token"), "writing to this hub needs a token",
                    "HTTP 401", "HF_TOKEN")  # fmt: skip
    assert_one_line(cli(setup.src, *push2, url, token=None), "writing to this hub needs a token", "HTTP 401")
    for token in (setup.read, setup.other):
        assert_one_line(cli(setup.src, *push2, url, token=token), "may not write to namespace 'team'", "HTTP 403",
                        "write scope for namespace 'team'")  # fmt: skip
    assert_one_line(cli(setup.src, *push2, url, token=setup.write), f"over this hub's limit of {UPLOAD_LIMIT} bytes",
                    "HTTP 413", "--max-upload-bytes")  # fmt: skip
    for status, message, needles in INJECTED:
        setup.proxy.inject = {route: (status, message) for route in WRITES}
        assert_one_line(cli(setup.src, *push2, setup.proxy.url, token=setup.write), *needles)
    setup.proxy.inject = {}
    refused = f"http://127.0.0.1:{free_port()}"
    assert_one_line(cli(setup.src, *push2, refused, token=setup.write), "cannot reach the hub", "connection refused", "--remote")
    # nothing of v2 landed: the hub still has v1 only
    refs = httpx.get(f"{url}/api/models/team/qv/refs", headers={"Authorization": f"Bearer {setup.read}"}).json()
    assert [t["name"] for t in refs["tags"]] == ["v1"]


RESOLVE = r"/team/qv/resolve/[0-9a-f]{40}/.+"


def test_pull_of_a_second_version_fails_in_one_line(setup: Setup, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    ok = cli(dest, "pull", "team/qv@1", "--remote", setup.hub.url, token=setup.read)
    assert ok.returncode == 0, ok.stderr
    assert_one_line(cli(dest, "pull", "team/qv@2", "--remote", setup.hub.url, token=setup.read),
                    "revision 'v2' not found", "tag (v1, v2")  # fmt: skip
    assert_one_line(cli(dest, "pull", "team/absent", "--remote", setup.hub.url, token=setup.read), "'team/absent' not found")
    for status, message, needles in [
        (401, "invalid token", ["invalid token", "HTTP 401", "HF_TOKEN"]),
        (403, "the token may not read namespace 'team'", ["may not read", "HTTP 403", "read scope"]),
        (409, "conflict", ["conflict", "HTTP 409", "retry"]),
        (413, "too large", ["too large", "HTTP 413"]),
        *[(s, m, n) for s, m, n in INJECTED if s >= 500],
    ]:
        setup.proxy.inject = {("GET", RESOLVE): (status, message)}
        assert_one_line(cli(dest, "pull", "team/qv@v1", "--as", "team/again", "--remote", setup.proxy.url, token=setup.read),
                        *needles)  # fmt: skip
    setup.proxy.inject = {}
    refused = f"http://127.0.0.1:{free_port()}"
    assert_one_line(
        cli(dest, "pull", "team/qv@1", "--remote", refused, token=setup.read), "cannot reach the hub", "connection refused"
    )
    reg = Registry(home=dest)
    assert [c.ref for c in reg.list()] == ["team/qv@1"]  # nothing half-registered
    reg.db.dispose()
