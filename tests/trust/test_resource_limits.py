"""One request must not stall or exhaust a real hub (SQLite and PostgreSQL): 300 MB bodies answer 413 while the
server's memory stays flat, a regex from an adapter config cannot freeze it, a YAML alias bomb in a README does not
blow up model info, and idle or half-open connections neither block other callers nor stay open."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError

from adapterhub.hub.server.background import BackgroundHub

from .conftest import BACKENDS, assert_store_consistent, big_adapter, fresh_database, hub_registry, serve

TOKEN = "limits-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPO = "lim/target"
HUGE = 300 << 20  # what each oversized request sends
CHUNK = b"A" * (1 << 20)  # one reused chunk: the test itself holds no more than this
RSS_SLACK = 64 << 20  # allowed growth of the server's peak memory per oversized request
HEAD_TIMEOUT = 2  # --head-timeout of the hub under test
BODY_TIMEOUT = 3  # --body-timeout of the hub under test


@dataclass
class Hub:
    hub: BackgroundHub
    db_url: str | None

    def client(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.hub.url, timeout=timeout, headers=AUTH)

    def api(self) -> HfApi:
        return HfApi(endpoint=self.hub.url, token=TOKEN)


@pytest.fixture(scope="module", params=BACKENDS)
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    folder = big_adapter(tmp_path_factory.mktemp("small") / "a", layers=1, width=64, rank=4)
    with fresh_database(request.param) as db_url:
        home = tmp_path_factory.mktemp(f"limits-{request.param}") / "home"
        with serve(home, db_url, "--token", f"lim:{TOKEN}", "--head-timeout", str(HEAD_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT)) as bg:
            h = Hub(bg, db_url)
            h.api().create_repo(REPO)
            h.api().upload_folder(repo_id=REPO, folder_path=folder, commit_message="adapter")
            yield h
            assert bg.proc.poll() is None, "the hub died"
            reg = hub_registry(bg.home, db_url)
            assert_store_consistent(reg, [REPO])
            reg.db.dispose()


# --- memory -------------------------------------------------------------------------------------------------------


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


class PeakMemory:
    """The server process's peak resident memory during a block, above its resident memory before it (Linux)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.growth = 0

    def __enter__(self) -> PeakMemory:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # resets VmHWM (the peak) to the current VmRSS
        self.before = _status(self.pid, "VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth = _status(self.pid, "VmHWM") - self.before


def _stream(prefix: bytes, total: int = HUGE) -> Iterator[bytes]:
    """`prefix`, then "A"s up to `total` bytes, a chunk at a time (sent chunked: no Content-Length)."""
    yield prefix
    sent = len(prefix)
    while sent < total:
        yield CHUNK
        sent += len(CHUNK)


def _commit_line(*fields: tuple[str, str]) -> bytes:
    """A commit payload whose file line holds `fields` in this order; the value "HUGE" is streamed last, unfinished."""
    header = json.dumps({"key": "header", "value": {"summary": "x"}}).encode() + b"\n"
    parts = []
    for key, value in fields:
        parts.append(f'"{key}": "' + (value if value != "HUGE" else ""))
        if value != "HUGE":
            parts[-1] += '"'
    return header + b'{"key": "file", "value": {' + ", ".join(parts).encode()


B64 = base64.b64encode(b"hello").decode()
OVERSIZED = {
    "paths-info": ("POST", f"/api/models/{REPO}/paths-info/main", b"paths=", "application/x-www-form-urlencoded"),
    "search": ("POST", "/api/adapterhub/search", b'{"text": "', "application/json"),
    "create-repo": ("POST", "/api/repos/create", b'{"name": "x", "organization": "', "application/json"),
    "preupload": ("POST", f"/api/models/{REPO}/preupload/main", b'{"files": [{"path": "', "application/json"),
    "validate-yaml": ("POST", "/api/validate-yaml", b'{"content": "---\\nlicense: ', "application/json"),
    "commit-extra-after-content": ("POST", f"/api/models/{REPO}/commit/main",
                                   _commit_line(("content", B64), ("path", "a.txt"), ("extra", "HUGE")), "application/x-ndjson"),
    "commit-extra-before-content": ("POST", f"/api/models/{REPO}/commit/main",
                                    _commit_line(("path", "a.txt"), ("extra", "HUGE")), "application/x-ndjson"),
    "commit-huge-path": ("POST", f"/api/models/{REPO}/commit/main", _commit_line(("content", B64), ("path", "HUGE")), "application/x-ndjson"),
}  # fmt: skip


def _answers(h: Hub) -> None:
    """The hub still serves a normal request (and the adapter committed at the start is intact)."""
    with h.client() as c:
        r = c.get(f"/api/models/{REPO}")
        assert r.status_code == 200, r.text[:300]


@pytest.mark.slow
@pytest.mark.parametrize("route", list(OVERSIZED))
def test_300mb_bodies_are_413_with_flat_server_memory(hub: Hub, route: str) -> None:
    method, url, prefix, ctype = OVERSIZED[route]
    head = hub.api().model_info(REPO).sha
    _answers(hub)  # warm: the route's first use allocates nothing we would count
    with PeakMemory(hub.hub.proc.pid) as mem, hub.client(timeout=300) as c:
        r = c.request(method, url, content=_stream(prefix), headers={"Content-Type": ctype})
    assert r.status_code == 413, (r.status_code, r.text[:300])
    msg = r.json()["error"]
    assert isinstance(msg, str) and "\n" not in msg
    assert mem.growth < RSS_SLACK, f"server peak memory grew by {mem.growth >> 20} MiB for a {HUGE >> 20} MB body"
    _answers(hub)
    assert hub.api().model_info(REPO).sha == head


@pytest.mark.parametrize("route", ["paths-info", "search", "create-repo", "preupload", "validate-yaml"])
def test_small_routes_refuse_bodies_over_1mib(hub: Hub, route: str) -> None:
    """Routes that take a small form or JSON body stop at 1 MiB, whether the length is declared or not."""
    method, url, prefix, ctype = OVERSIZED[route]
    body = prefix + b"A" * (2 << 20)
    with hub.client() as c:
        declared = c.request(method, url, content=body, headers={"Content-Type": ctype})
        chunked = c.request(method, url, content=_stream(prefix, len(body)), headers={"Content-Type": ctype})
    assert declared.status_code == 413, (declared.status_code, declared.text[:300])
    assert chunked.status_code == 413, (chunked.status_code, chunked.text[:300])


def test_commits_have_a_default_body_limit(hub: Hub) -> None:
    """Without --max-upload-bytes a declared commit body of 20 GiB is refused before a byte of it is read."""
    s = socket.create_connection(("127.0.0.1", int(hub.hub.url.rsplit(":", 1)[1])), timeout=60)
    with s:
        s.sendall(f"POST /api/models/{REPO}/commit/main HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                  f"Content-Type: application/x-ndjson\r\nContent-Length: {20 << 30}\r\n\r\n".encode())  # fmt: skip
        status = s.recv(4096).split(b"\r\n", 1)[0]
    assert status.startswith(b"HTTP/1.1 413"), status


# --- regex patterns from adapter configs ---------------------------------------------------------------------------


def _hostile_adapter(n: int = 36) -> tuple[bytes, bytes]:
    """A one-module LoRA whose rank_pattern backtracks exponentially on its module name (n a's, then X)."""
    module = "layers.0." + "a" * n + "X"
    header: dict[str, object] = {}
    offset = 0
    for part, shape in (("lora_A", [4, 8]), ("lora_B", [8, 4])):
        size = 4 * shape[0] * shape[1]
        header[f"base_model.model.{module}.{part}.weight"] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    weights = struct.pack("<Q", len(raw)) + raw + b"\x00" * offset
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["a" * n + "X"], "rank_pattern": {"(a|aa)+": 4}}
    return weights, json.dumps(config).encode()


def test_hostile_rank_pattern_is_refused_and_the_server_keeps_answering(hub: Hub) -> None:
    repo = "lim/regex"
    hub.api().create_repo(repo)
    weights, config = _hostile_adapter()
    answered: list[int] = []
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=hub.hub.url, timeout=120) as c:
            while not done.is_set():
                answered.append(c.get("/api/models", params={"limit": 1}).status_code)
                time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        with pytest.raises(HfHubHTTPError) as err:
            hub.api().create_commit(repo, [CommitOperationAdd("adapter_config.json", config),
                                           CommitOperationAdd("adapter_model.safetensors", weights)], commit_message="poison")  # fmt: skip
    finally:
        done.set()
        poller.join()
    assert err.value.response.status_code == 400, err.value.response.text[:300]
    assert "pattern" in err.value.response.json()["error"]
    assert answered and all(code == 200 for code in answered), answered
    reg = hub_registry(hub.hub.home, hub.db_url)
    try:
        with pytest.raises(LookupError):
            reg.versions(repo)
    finally:
        reg.db.dispose()
    assert [f for f in hub.api().list_repo_files(repo) if f.startswith("adapter_")] == []


def test_over_long_patterns_are_refused(hub: Hub) -> None:
    repo = "lim/longpattern"
    hub.api().create_repo(repo)
    weights, config = _hostile_adapter(4)
    cfg = json.loads(config)
    cfg["rank_pattern"] = {"a" * 300: 4}
    with pytest.raises(HfHubHTTPError) as err:
        hub.api().create_commit(repo, [CommitOperationAdd("adapter_config.json", json.dumps(cfg).encode()),
                                       CommitOperationAdd("adapter_model.safetensors", weights)], commit_message="long")  # fmt: skip
    assert err.value.response.status_code == 400
    assert "300 characters" in err.value.response.json()["error"]


# --- YAML alias bomb ----------------------------------------------------------------------------------------------

BOMB = "---\n" + "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else '"lol"'] * 9) + "]\n" for i in range(9)) + "---\nhi\n"


def _raw_commit(path: str, data: bytes) -> bytes:
    lines = [{"key": "header", "value": {"summary": "raw"}},
             {"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}}]
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def test_yaml_alias_bomb_readme_keeps_model_info_small(hub: Hub) -> None:
    assert len(BOMB) < 1000  # expands to 9**9 strings
    repo = "lim/bomb"
    hub.api().create_repo(repo)
    with hub.client() as c:
        r = c.post("/api/validate-yaml", json={"content": BOMB})
        assert r.status_code == 400 and "alias" in r.json()["error"], r.text[:300]
    with pytest.raises(ValueError, match="Invalid metadata"):  # the client asks validate-yaml before a README commit
        hub.api().upload_file(repo_id=repo, path_or_fileobj=BOMB.encode(), path_in_repo="README.md")
    with hub.client() as c:  # committed by other means, it is stored but its front matter is not read
        c.post(f"/api/models/{repo}/commit/main", content=_raw_commit("README.md", BOMB.encode())).raise_for_status()
        info = c.get(f"/api/models/{repo}")
        listing = c.get("/api/models", params={"search": "bomb", "full": "true", "cardData": "true"})
    assert info.status_code == 200 and len(info.content) < 10_000, len(info.content)
    assert info.json()["cardData"] is None
    assert listing.status_code == 200 and len(listing.content) < 10_000, len(listing.content)


def test_oversized_readme_is_not_parsed(hub: Hub) -> None:
    repo = "lim/bigcard"
    hub.api().create_repo(repo)
    text = "---\nlicense: mit\n---\n" + "x" * (2 << 20)
    with hub.client() as c:
        c.post(f"/api/models/{repo}/commit/main", content=_raw_commit("README.md", text.encode())).raise_for_status()
        info = c.get(f"/api/models/{repo}")
        assert info.status_code == 200 and info.json()["cardData"] is None
        assert c.post("/api/validate-yaml", json={"content": "---\nlicense: mit\n---\n" + "x" * 900_000}).status_code == 200


# --- slow clients -------------------------------------------------------------------------------------------------

IDLE = 200


def _closed_by_peer(s: socket.socket, deadline: float) -> bool:
    """Whether the server closes `s` (EOF or reset) before `deadline` (time.monotonic)."""
    while time.monotonic() < deadline:
        s.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            data = s.recv(4096)
        except TimeoutError:
            return False
        except OSError:
            return True
        if not data:
            return True
    return False


def test_half_open_connections_neither_block_others_nor_stay_open(hub: Hub) -> None:
    port = int(hub.hub.url.rsplit(":", 1)[1])
    idle = []
    try:
        for _ in range(IDLE):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(b"GET /api/models HTTP/1.1\r\nHost: 127")  # half a request, never finished
            idle.append(s)
        with httpx.Client(base_url=hub.hub.url, timeout=30) as c:
            for _ in range(5):
                assert c.get("/api/models", params={"limit": 1}).status_code == 200
                assert c.get(f"/api/models/{REPO}").status_code == 200
        # Bounded wait (not a speed check): with --head-timeout 2 they are closed after ~2 s; before, never.
        deadline = time.monotonic() + 60
        still_open = [s for s in idle if not _closed_by_peer(s, deadline)]
        assert still_open == [], f"{len(still_open)} of {IDLE} half-open connections still open"
    finally:
        for s in idle:
            s.close()


def test_trickled_request_head_is_cut_off(hub: Hub) -> None:
    """Sending a request line one byte at a time does not keep a connection alive past the head timeout."""
    port = int(hub.hub.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        line = b"GET /api/models?" + b"x" * 10_000
        deadline = time.monotonic() + 60
        closed = False
        for byte in line:
            if time.monotonic() > deadline:
                break
            try:
                s.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.2)
        if not closed:
            closed = _closed_by_peer(s, time.monotonic() + 1)
        assert closed, "a trickling client kept its connection for 60 s"
    with httpx.Client(base_url=hub.hub.url, timeout=30) as c:
        assert c.get("/api/models", params={"limit": 1}).status_code == 200


def test_stalled_body_is_cut_off(hub: Hub) -> None:
    """A client that sends headers and part of a body, then nothing, loses its connection after --body-timeout."""
    port = int(hub.hub.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"POST /api/adapterhub/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"text\": ")  # fmt: skip
        assert _closed_by_peer(s, time.monotonic() + 60), "a stalled body kept its connection for 60 s"
    _answers(hub)


def test_serve_shows_its_limits() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "adapterhub", "serve", "--help"], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200"}, check=True).stdout  # fmt: skip
    for option in ("--max-upload-bytes", "--head-timeout", "--body-timeout", "--keep-alive", "--max-connections"):
        assert option in out
    assert "10737418240" in " ".join(out.split())


def test_search_queries_are_bounded(hub: Hub) -> None:
    """A search within the 1 MiB body limit still cannot ask for thousands of filters (it took 100 s, then a 500)."""
    with hub.client() as c:
        many = c.post("/api/adapterhub/search", json={"min_scores": {f"d{i}/m": 0.5 for i in range(20_000)}})
        long_text = c.post("/api/adapterhub/search", json={"text": "ab" * 400_000})
        tags = c.get("/api/adapterhub/search", params={"tag": ["x"] * 33})
        bad_limit = c.get("/api/adapterhub/search", params={"limit": 0})
        fine = c.post("/api/adapterhub/search", json={"text": "target", "tags": ["a"] * 32, "min_scores": {"d/m": 0.1}})
    for r in (many, long_text, tags, bad_limit):
        assert r.status_code == 400, (r.status_code, r.text[:300])
        assert "\n" not in r.json()["error"]
    assert fine.status_code == 200, fine.text[:300]
