"""Hostile input against a real hub on SQLite and PostgreSQL: unsafe names and paths, oversized uploads, bytes that
do not match what the client declared, stale parents, malformed JSON / NDJSON / YAML / safetensors / adapter configs.
Every refusal is a 4xx whose error is one line, nothing is stored, and Hypothesis fuzzes each entry point."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapterhub.hub.server.background import BackgroundHub
from adapterhub.store.registry import Registry

from .conftest import BACKENDS, assert_store_consistent, big_adapter, fresh_database, hub_registry, serve

LIMIT = 256 * 1024  # --max-upload-bytes of the hub under test
REPO = "t/target"
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

BAD_PATHS = [
    "../escape", "a/../../escape", "/etc/passwd", "a\\b", "..\\..\\x", "C:/x", "c:x", "a/\x00b", "a/\x1fb", "a/\x7fb",
    "x" * 600, "a//b", "./a", "a/./b", "",
]  # fmt: skip
BAD_SEGMENTS = ["..", ".hidden", "a b", "x" * 97, "a\\b", "C:", "a\x01", "-dash", "a/b/../c", "%2e%2e"]


@dataclass
class Target:
    hub: BackgroundHub
    db_url: str | None
    weights: bytes  # a valid adapter_model.safetensors
    config: bytes  # its adapter_config.json
    card: bytes  # its adapterhub.json (what `push` sends: every file's sha256 and size)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.hub.url, timeout=60)

    def registry(self) -> Registry:
        return hub_registry(self.hub.home, self.db_url)


@pytest.fixture(scope="module", params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    folder = big_adapter(tmp_path_factory.mktemp("small") / "a", layers=1, width=64, rank=4)
    src = Registry(home=tmp_path_factory.mktemp("src"))
    card = src.add(folder, REPO, "t")
    src.db.dispose()
    with fresh_database(request.param) as db_url:
        with serve(tmp_path_factory.mktemp(f"hostile-{request.param}") / "home", db_url, "--max-upload-bytes", str(LIMIT)) as hub:
            HfApi(endpoint=hub.url, token=False).create_repo(REPO)
            yield Target(hub, db_url, (folder / "adapter_model.safetensors").read_bytes(), (folder / "adapter_config.json").read_bytes(),
                         card.model_dump_json().encode())  # fmt: skip
            assert hub.proc.poll() is None, "the hub died"
            reg = hub_registry(hub.home, db_url)
            assert_store_consistent(reg, [REPO])
            reg.db.dispose()


def check(r: httpx.Response, *allowed: int) -> None:
    """Never a 5xx; an error is JSON whose message is one line (no traceback); with `allowed`, one of those codes."""
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if allowed:
        assert r.status_code in allowed, (r.status_code, r.text[:500])
    if r.status_code >= 400 and r.request.method != "HEAD":
        body = r.json()
        msg = body.get("error") or body.get("detail")
        assert isinstance(msg, str) and msg and "\n" not in msg and "Traceback" not in msg, body


def ndjson(*lines: object) -> bytes:
    return b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines)


def file_line(path: str, data: bytes) -> dict[str, object]:
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}}


def state(t: Target) -> tuple[object, ...]:
    """What a refused request must not change: the head, the registry's versions, the blobs, files under the home."""
    files = sorted(str(p.relative_to(t.hub.home)) for p in t.hub.home.rglob("*")
                   if p.is_file() and p.name != "server.log" and not p.name.startswith("registry.db"))  # fmt: skip
    reg = t.registry()
    try:
        versions = [c.version for c in reg.versions(REPO)]
    except LookupError:
        versions = []
    reg.db.dispose()
    head = HfApi(endpoint=t.hub.url, token=False).model_info(REPO).sha
    return head, versions, files


def enc(s: str, safe: str = "/") -> str:
    """Percent-encode for a URL, dots too, so the client cannot collapse '..' segments before the server sees them."""
    return quote(s, safe=safe).replace(".", "%2E")


def commit(t: Target, body: bytes, repo: str = REPO) -> httpx.Response:
    with t.client() as c:
        return c.post(f"/api/models/{repo}/commit/main", content=body, headers={"Content-Type": "application/x-ndjson"})


# --- names and paths ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", BAD_PATHS)
def test_unsafe_file_paths_are_refused_before_anything_is_stored(target: Target, path: str) -> None:
    before = state(target)
    r = commit(target, ndjson({"key": "header", "value": {"summary": "x"}}, file_line(path, b"payload")))
    check(r, 400)
    assert state(target) == before
    with target.client() as c:
        if path:
            check(c.get(f"/{REPO}/resolve/main/{enc(path)}"), 400)
            check(c.head(f"/{REPO}/resolve/main/{enc(path)}"), 400)
            check(c.get(f"/api/models/{REPO}/tree/main/{enc(path)}"), 400, 404)  # the tree strips a leading "/"
        check(c.post(f"/api/models/{REPO}/preupload/main", json={"files": [{"path": path, "size": 1, "sample": ""}]}), 400)
        check(
            c.post(
                f"/api/models/{REPO}/commit/main", content=ndjson({"key": "lfsFile", "value": {"path": path, "oid": "0" * 64}})
            ),
            400,
        )
    assert state(target) == before


@pytest.mark.parametrize("segment", BAD_SEGMENTS)
def test_unsafe_repo_names_are_refused(target: Target, segment: str) -> None:
    before = state(target)
    with target.client() as c:
        check(c.post("/api/repos/create", json={"name": segment, "organization": "t"}), 400)
        check(c.post("/api/repos/create", json={"name": "fine", "organization": segment}), 400)
        q = enc(segment, safe="")
        for url in (
            f"/api/models/t/{q}",
            f"/api/models/{q}/x/tree/main",
            f"/t/{q}/resolve/main/a.txt",
            f"/api/adapterhub/adapters/t/{q}",
        ):
            check(c.get(url), 400, 404)
        check(c.post(f"/api/models/t/{q}/commit/main", content=ndjson(file_line("a.txt", b"a"))), 400, 404)
    assert state(target) == before


# --- sizes, hashes, parents -------------------------------------------------------------------------------------


def test_upload_over_the_limit_is_413_and_nothing_is_kept(target: Target) -> None:
    before = state(target)
    api = HfApi(endpoint=target.hub.url, token=False)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit(REPO, [CommitOperationAdd("big.bin.txt", b"\x01" * (LIMIT + 1))], commit_message="too big")
    assert err.value.response.status_code == 413
    r = commit(target, ndjson(file_line("big.txt", b"\x02" * LIMIT)))  # the declared length alone is over the limit
    check(r, 413)
    assert state(target) == before
    api.create_commit(REPO, [CommitOperationAdd("small.txt", b"\x03" * 1000)], commit_message="small")  # under it: fine
    assert state(target)[0] != before[0]


def test_bytes_not_matching_the_declared_sha256_are_refused(target: Target) -> None:
    """adapterhub.json declares each file's sha256: the server recomputes it from what it received."""
    card = json.loads(target.card)
    for f in card["files"]:
        if f["path"] == "adapter_model.safetensors":
            f["sha256"] = "0" * 64
    before = state(target)
    r = commit(target, ndjson({"key": "header", "value": {"summary": "lie"}}, file_line("adapter_config.json", target.config),
                              file_line("adapter_model.safetensors", target.weights), file_line("adapterhub.json", json.dumps(card).encode())))  # fmt: skip
    check(r, 400)
    assert "integrity" in r.json()["error"]
    tampered = bytearray(target.weights)
    tampered[-1] ^= 0xFF  # declared right, received wrong: the same refusal
    r = commit(target, ndjson(file_line("adapter_config.json", target.config), file_line("adapter_model.safetensors", bytes(tampered)),
                              file_line("adapterhub.json", target.card)))  # fmt: skip
    check(r, 400)
    r = commit(
        target, ndjson({"key": "lfsFile", "value": {"path": "w.safetensors", "oid": "ab" * 32, "algo": "sha256", "size": 3}})
    )
    check(r, 400)
    assert state(target) == before  # refused before any blob was stored
    r = commit(target, ndjson(file_line("adapter_config.json", target.config), file_line("adapter_model.safetensors", target.weights),
                              file_line("adapterhub.json", target.card)))  # fmt: skip
    check(r, 200)
    assert r.json()["adapterhub"]["adapter_ref"].startswith(f"{REPO}@")


def test_a_commit_on_a_stale_parent_is_409(target: Target) -> None:
    api = HfApi(endpoint=target.hub.url, token=False)
    old = api.model_info(REPO).sha
    new = api.create_commit(REPO, [CommitOperationAdd("p.txt", b"1")], commit_message="p", parent_commit=old).oid
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit(REPO, [CommitOperationAdd("p.txt", b"2")], commit_message="stale", parent_commit=old)
    assert err.value.response.status_code == 409
    assert api.model_info(REPO).sha == new


# --- malformed bodies -------------------------------------------------------------------------------------------

MALFORMED_JSON = [b"", b"{", b"[1, 2]", b"null", b'"s"', b"\xff\xfe\x00", b'{"a": ' * 50_000]
JSON_ENDPOINTS = ["/api/repos/create", "/api/validate-yaml", f"/api/models/{REPO}/preupload/main", "/api/adapterhub/search"]


@pytest.mark.parametrize("body", MALFORMED_JSON, ids=range(len(MALFORMED_JSON)))
def test_malformed_json_bodies_are_400(target: Target, body: bytes) -> None:
    with target.client() as c:
        for url in JSON_ENDPOINTS:
            check(c.post(url, content=body, headers={"Content-Type": "application/json"}), 400)


@pytest.mark.parametrize("body", [
    b"not json\n", b"[1]\n", b"{\"key\": \"file\"}\n", b"{\"key\": \"file\", \"value\": \"x\"}\n",
    b"{\"key\": \"file\", \"value\": {\"path\": 3}}\n", b"{\"key\": \"file\", \"value\": {\"path\": \"a\", \"content\": \"@@@\"}}\n",
    b"{\"key\": \"file\", \"value\": {\"path\": \"a\", \"content\": \"\\u00e9\\u00e9\\u00e9\\u00e9\"}}\n",
    b"{\"key\": \"file\", \"value\": {\"path\": \"a\", \"content\": \"YQ\"}}\n", b"{\"key\": \"nope\", \"value\": {}}\n",
    b"{\"key\": \"header\", \"value\": {\"parentCommit\": [1]}}\n", b"{\"key\": \"deletedFile\", \"value\": {\"path\": \"missing\"}}\n",
    b"{\"key\": \"file\", \"value\": {\"path\": \"a\", \"content\": \"" + b"QUFB" * 300_000,  # ends inside a streamed file
    b"{\"key\": \"file\", \"value\": {\"path\": \"a\", \"encoding\": \"hex\", \"content\": \"" + b"QUFB" * 300_000 + b"\"}}\n",
    b"[" * 100_000 + b"\n",
], ids=range(14))  # fmt: skip
def test_malformed_ndjson_is_refused_and_leaves_no_scratch(target: Target, body: bytes) -> None:
    before = state(target)
    check(commit(target, body), 400, 404, 413)
    assert state(target) == before


def test_malformed_yaml_model_card(target: Target) -> None:
    with target.client() as c:
        for text in (
            "---\n: : [\n---\nbody",
            "---\n- a list\n---\n",
            "---\n!!python/object:os.system x\n---\n",
            "---\n\t\x00\n---\n",
        ):
            check(c.post("/api/validate-yaml", json={"content": text}), 400)
        check(c.post("/api/validate-yaml", json={"content": "---\nlicense: mit\n---\nok"}), 200)


@pytest.mark.parametrize("weights,config", [
    (b"", None), (b"\x00" * 7, None), (struct.pack("<Q", 1 << 40) + b"{}", None), (struct.pack("<Q", 4) + b"{[}]", None),
    (struct.pack("<Q", 2) + b"[]", None), (None, b"{"), (None, b"[]"), (None, b"{\"r\": \"x\", \"peft_type\": \"LORA\"}"),
    (None, b"{\"peft_type\": \"PREFIX_TUNING\"}"), (None, b"{\"r\": -1, \"lora_alpha\": 8, \"peft_type\": \"LORA\", \"target_modules\": [\"down_proj\"]}"),
], ids=range(10))  # fmt: skip
def test_malformed_safetensors_and_configs_are_400(target: Target, weights: bytes | None, config: bytes | None) -> None:
    before = state(target)
    r = commit(target, ndjson(file_line("adapter_config.json", config or target.config),
                              file_line("adapter_model.safetensors", target.weights if weights is None else weights)))  # fmt: skip
    check(r, 400)
    after = state(target)
    assert after[:2] == before[:2]


def test_cli_reports_malformed_adapters_in_one_line(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("adapterhub"))
    good = big_adapter(tmp_path / "good", layers=1, width=64, rank=4)
    cases = {"config": b"{not json", "weights": struct.pack("<Q", 99) + b"{]"}
    for what, junk in cases.items():
        folder = tmp_path / what
        folder.mkdir()
        for f in good.iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        (folder / ("adapter_config.json" if what == "config" else "adapter_model.safetensors")).write_bytes(junk)
        r = subprocess.run(
            [exe, "add", str(folder), "--name", "t/bad", "--task", "t"], capture_output=True, text=True, timeout=120
        )
        _one_error_line(r)
    for spec in ("../x", "a/..", "/abs/x", "a\\b"):
        _one_error_line(
            subprocess.run([exe, "pull", spec, "--remote", "http://127.0.0.1:9"], capture_output=True, text=True, timeout=120)
        )


def _one_error_line(r: subprocess.CompletedProcess[str]) -> None:
    """Exit 1 (failed) or 2 (usage, after click's usage banner), with exactly one line saying what is wrong."""
    assert r.returncode in (1, 2), r
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:") or line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    if r.returncode == 1:
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


# --- fuzzing ----------------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(st.sampled_from(["name", "organization", "private", "type", "content", "files", "task", "limit", "text"]) | st.text(max_size=8), json_values, max_size=5)  # fmt: skip


@FUZZ
@given(body=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()) | json_objects.map(lambda v: json.dumps(v).encode()),
       url=st.sampled_from(JSON_ENDPOINTS))  # fmt: skip
def test_fuzz_json_endpoints(target: Target, body: bytes, url: str) -> None:
    with target.client() as c:
        check(c.post(url, content=body, headers={"Content-Type": "application/json"}))


ndjson_lines = st.one_of(
    st.binary(max_size=80),
    st.fixed_dictionaries(
        {
            "key": st.sampled_from(["header", "file", "lfsFile", "deletedFile", "deletedFolder", "x"]),
            "value": json_values | json_objects,
        }
    ).map(lambda d: json.dumps(d).encode()),  # fmt: skip
    st.builds(lambda p, b: json.dumps(file_line(p, b)).encode(), st.text(max_size=30), st.binary(max_size=64)),
)


@FUZZ
@given(lines=st.lists(ndjson_lines, max_size=5))
def test_fuzz_commit_ndjson(target: Target, lines: list[bytes]) -> None:
    check(commit(target, b"\n".join(lines)))


@FUZZ
@given(text=st.text(max_size=200))
def test_fuzz_yaml(target: Target, text: str) -> None:
    with target.client() as c:
        check(c.post("/api/validate-yaml", json={"content": f"---\n{text}\n---\nbody"}))


@FUZZ
@given(
    header=st.binary(max_size=200) | json_objects.map(lambda v: json.dumps(v).encode()),
    declared=st.integers(0, 1 << 20) | st.none(),
)
def test_fuzz_safetensors_header(target: Target, header: bytes, declared: int | None) -> None:
    weights = struct.pack("<Q", len(header) if declared is None else declared) + header
    check(
        commit(target, ndjson(file_line("adapter_config.json", target.config), file_line("adapter_model.safetensors", weights)))
    )


@FUZZ
@given(
    changes=json_objects,
    drop=st.lists(st.sampled_from(["r", "lora_alpha", "target_modules", "peft_type", "task_type", "rank_pattern"]), max_size=3),
)
def test_fuzz_adapter_config(target: Target, changes: dict[str, object], drop: list[str]) -> None:
    config = {k: v for k, v in json.loads(target.config).items() if k not in drop}
    config.update(changes)
    body = ndjson(
        file_line("adapter_config.json", json.dumps(config).encode()), file_line("adapter_model.safetensors", target.weights)
    )
    check(commit(target, body), 200, 400)


@FUZZ
@given(ns=st.text(max_size=100), name=st.text(max_size=100), path=st.text(max_size=300), rev=st.text(max_size=50))
def test_fuzz_names_paths_and_revisions(target: Target, ns: str, name: str, path: str, rev: str) -> None:
    q = lambda s: quote(s, safe="")  # noqa: E731
    with target.client() as c:
        for url in (f"/api/models/{q(ns)}/{q(name)}", f"/api/models/t/target/revision/{q(rev)}", f"/t/target/resolve/{q(rev) or 'main'}/{quote(path)}",
                    f"/api/models/t/target/tree/main/{quote(path)}", f"/{q(ns)}/{q(name)}/resolve/main/x"):  # fmt: skip
            check(c.get(url))
        check(c.post("/api/repos/create", json={"name": name, "organization": ns}))
