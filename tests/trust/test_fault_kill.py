"""SIGKILL at many points of `push` (the client, and the server mid-push), `pull` and `merge`, on SQLite and
PostgreSQL: afterwards fsck is clean, every blob at a final path is whole, hub commits point at present bytes,
version numbers have no gaps, no half-written output folder exists, and running the command again succeeds.
A server killed mid-upload leaves nothing once restarted, and the repo stays at its last good commit."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest
from huggingface_hub import HfApi

from adapterhub.fsutil import TMP_PREFIX
from adapterhub.hub.client import pull
from adapterhub.hub.server.background import BackgroundHub
from adapterhub.store.registry import Registry

from .conftest import BACKENDS, assert_store_consistent, big_adapter, fresh_database, hub_registry, leftovers, serve

KILL_POINTS = 6
EXE = str(Path(sys.executable).with_name("adapterhub"))
NAME = "crash/p"


def _env(home: Path, db_url: str | None = None) -> dict[str, str]:
    env = {**os.environ, "ADAPTERHUB_HOME": str(home), "HF_HUB_OFFLINE": "0"}
    env.pop("ADAPTERHUB_DATABASE_URL", None)
    if db_url:
        env["ADAPTERHUB_DATABASE_URL"] = db_url
    return env


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    """Run once to completion; its duration spreads the kill points over the whole command."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return time.perf_counter() - t0


def _kill_at(cmd: list[str], env: dict[str, str], delay: float) -> None:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)


def _settled(home: Path, timeout: float = 60.0) -> list[Path]:
    """Hub temp files once the server has noticed a dead client (bounded wait: at most `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while (left := leftovers(home)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _check_hub(home: Path, db_url: str | None, url: str, source_sha: str) -> None:
    """Consistent store; the head's weights, when the head holds any, are exactly the source's bytes."""
    reg = hub_registry(home, db_url)
    assert_store_consistent(reg, [NAME])
    reg.db.dispose()
    info = HfApi(endpoint=url, token=False).model_info(NAME, files_metadata=True)
    weights = [s for s in info.siblings or [] if s.rfilename == "adapter_model.safetensors"]
    assert not weights or weights[0].lfs.sha256 == source_sha


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, str]:
    """A client registry home holding crash/p@1 (~16 MB of weights), and the weights' sha256."""
    folder = big_adapter(tmp_path / "big", layers=16)
    home = tmp_path / "client"
    reg = Registry(home=home)
    reg.add(folder, NAME, "t")
    reg.db.dispose()
    return home, hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).hexdigest()


@contextmanager
def _hub(tmp_path: Path, backend: str) -> Iterator[tuple[Path, str | None]]:
    with fresh_database(backend) as db_url:
        yield tmp_path / "hub", db_url


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_push_client_at_many_points(backend: str, tmp_path: Path, source: tuple[Path, str]) -> None:
    client_home, sha = source
    with _hub(tmp_path, backend) as (home, db_url), serve(home, db_url) as hub:
        cmd = [EXE, "push", NAME, "--remote", hub.url]
        full = _timed(cmd, _env(client_home))
        for i in range(KILL_POINTS):
            _kill_at(cmd, _env(client_home), full * (i + 0.5) / KILL_POINTS)
            assert _settled(home) == []
            _check_hub(home, db_url, hub.url, sha)
            client = Registry(home=client_home)
            assert_store_consistent(client, [NAME])
            client.db.dispose()
        subprocess.run(cmd, env=_env(client_home), check=True, capture_output=True, timeout=600)
        _check_hub(home, db_url, hub.url, sha)
        reg = hub_registry(home, db_url)
        assert reg.get(NAME).files == Registry(home=client_home).get(NAME).files
        reg.db.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_server_during_push_at_many_points(backend: str, tmp_path: Path, source: tuple[Path, str]) -> None:
    client_home, sha = source
    with _hub(tmp_path, backend) as (home, db_url):
        hub = serve(home, db_url)
        try:
            full = _timed([EXE, "push", NAME, "--remote", hub.url], _env(client_home))
            for i in range(KILL_POINTS):
                cmd = [EXE, "push", NAME, "--remote", hub.url]
                push = subprocess.Popen(cmd, env=_env(client_home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(full * (i + 0.5) / KILL_POINTS)
                hub.proc.send_signal(signal.SIGKILL)
                hub.proc.wait(60)
                push.wait(300)  # fails (the server went away) or had already finished
                hub = serve(home, db_url)
                assert leftovers(home) == [], "a restarted server must clear what the killed one left"
                _check_hub(home, db_url, hub.url, sha)
            subprocess.run(
                [EXE, "push", NAME, "--remote", hub.url], env=_env(client_home), check=True, capture_output=True, timeout=600
            )
            _check_hub(home, db_url, hub.url, sha)
            assert pull(NAME, remote=hub.url, registry=Registry(home=tmp_path / "puller")).ref == f"{NAME}@1"  # bytes verified
        finally:
            hub.stop()


def _receiving(home: Path) -> bool:
    """Whether the hub is writing a received upload to its scratch (some bytes are there already)."""
    return any(p.stat().st_size > 0 for p in (home / "hub-uploads").rglob("upload-*"))


def _half_upload(hub: BackgroundHub, size: int) -> socket.socket:
    """Open a commit whose body is announced in full but only half sent; the socket stays open."""
    content = base64.b64encode(os.urandom(size)).decode()
    body = (json.dumps({"key": "header", "value": {"summary": "half"}}) + "\n"
            + json.dumps({"key": "file", "value": {"path": "half.bin.txt", "content": content, "encoding": "base64"}}) + "\n").encode()  # fmt: skip
    u = urlparse(hub.url)
    sock = socket.create_connection((u.hostname, u.port), timeout=30)
    head = (f"POST /api/models/{NAME}/commit/main HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/x-ndjson\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    sock.sendall(head + body[: len(body) // 2])
    return sock


@pytest.mark.parametrize("backend", BACKENDS)
def test_server_killed_mid_upload_restarts_clean_at_last_good_commit(
    backend: str, tmp_path: Path, source: tuple[Path, str]
) -> None:
    client_home, sha = source
    with _hub(tmp_path, backend) as (home, db_url):
        hub = serve(home, db_url)
        try:
            subprocess.run(
                [EXE, "push", NAME, "--remote", hub.url], env=_env(client_home), check=True, capture_output=True, timeout=600
            )
            api = HfApi(endpoint=hub.url, token=False)
            good = api.model_info(NAME).sha
            sock = _half_upload(hub, 8 << 20)
            deadline = time.monotonic() + 60
            while not _receiving(home) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _receiving(home), "the server should be receiving the upload"
            hub.proc.send_signal(signal.SIGKILL)
            hub.proc.wait(60)
            sock.close()
            assert leftovers(home), "the kill leaves the half-received upload behind"
            hub = serve(home, db_url)
            assert leftovers(home) == []
            assert HfApi(endpoint=hub.url, token=False).model_info(NAME).sha == good
            assert "half.bin.txt" not in HfApi(endpoint=hub.url, token=False).list_repo_files(NAME)
            _check_hub(home, db_url, hub.url, sha)
        finally:
            hub.stop()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_pull_at_many_points(backend: str, tmp_path: Path, source: tuple[Path, str]) -> None:
    """Each kill point in a new puller registry (a blob already fetched is never fetched again), rerun in place."""
    client_home, sha = source
    with serve(tmp_path / "hub", None) as hub:
        subprocess.run(
            [EXE, "push", NAME, "--remote", hub.url], env=_env(client_home), check=True, capture_output=True, timeout=600
        )
        cmd = [EXE, "pull", NAME, "--remote", hub.url]
        with fresh_database(backend) as db_url:
            full = _timed(cmd, _env(tmp_path / "timing", db_url))
        for i in range(KILL_POINTS):
            with fresh_database(backend) as db_url:
                home = tmp_path / f"puller-{i}"
                env = _env(home, db_url)
                _kill_at(cmd, env, full * (i + 0.5) / KILL_POINTS)
                if home.exists():
                    reg = Registry(home=home, database_url=db_url)
                    assert_store_consistent(reg, [NAME])
                    reg.db.dispose()
                r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
                assert r.returncode == 0, r.stderr
                reg = Registry(home=home, database_url=db_url)
                assert_store_consistent(reg, [NAME])
                latest = reg.get(NAME)
                assert r.stdout.strip() == latest.ref
                assert {f.path: f.sha256 for f in latest.files}["adapter_model.safetensors"] == sha
                folder = reg.adapter_path(latest.ref)
                assert hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).hexdigest() == sha
                reg.gc(grace_seconds=0)  # what a kill left in the blob store's temp folder goes with gc
                assert not [p for p in leftovers(home) if "blobs" in p.parts]
                reg.db.dispose()


@pytest.fixture(scope="module")
def merge_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A ~50 MB Llama-shaped base (so writing the merge takes a while) and a PEFT LoRA for it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.factories import make_peft_adapter

    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("merge-base") / "base"
    cfg = LlamaConfig(vocab_size=256, hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
                      num_key_value_heads=8, max_position_embeddings=64, tie_word_embeddings=False)  # fmt: skip
    LlamaForCausalLM(cfg).eval().save_pretrained(base, safe_serialization=True)
    adapter = make_peft_adapter(
        base, tmp_path_factory.mktemp("merge-lora") / "a", target_modules=["q_proj", "v_proj", "down_proj"], r=8
    )
    return base, adapter


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_merge_at_many_points(backend: str, tmp_path: Path, merge_inputs: tuple[Path, Path]) -> None:
    base, adapter = merge_inputs
    with fresh_database(backend) as db_url:
        home = tmp_path / "home"
        env = _env(home, db_url)
        subprocess.run(
            [EXE, "add", str(adapter), "--name", "crash/m", "--task", "t"], env=env, check=True, capture_output=True, timeout=600
        )
        reference = tmp_path / "reference"
        subprocess.run([EXE, "merge", "--base", str(base), "--adapter", "crash/m", "--out", str(reference), "--no-register"],
                       env=env, check=True, capture_output=True, timeout=600)  # fmt: skip
        want = _tree(reference)
        out = tmp_path / "merged"
        cmd = [EXE, "merge", "--base", str(base), "--adapter", "crash/m", "--out", str(out), "--overwrite"]
        full = _timed(cmd, env)
        for i in range(KILL_POINTS):
            _kill_at(cmd, env, full * (i + 0.5) / KILL_POINTS)
            # the output folder is either the whole merge or absent: never a partial model at the final path
            assert not out.exists() or _tree(out) == want, f"partial output after a kill at point {i}"
            reg = Registry(home=home, database_url=db_url)
            assert_store_consistent(reg, ["crash/m"])
            reg.db.dispose()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        assert _tree(out) == want
        stale = [p.name for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]
        print(f"temp folders left beside --out by killed merges (not final paths): {len(stale)}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_starting_server_leaves_a_live_servers_upload_alone(backend: str, tmp_path: Path, source: tuple[Path, str]) -> None:
    """Two workers on one storage folder: the second's start-up clean-up removes only what dead servers left."""
    client_home, _ = source
    with _hub(tmp_path, backend) as (home, db_url), serve(home, db_url) as first:
        subprocess.run(
            [EXE, "push", NAME, "--remote", first.url], env=_env(client_home), check=True, capture_output=True, timeout=600
        )
        sock = _half_upload(first, 8 << 20)
        try:
            deadline = time.monotonic() + 60
            while not _receiving(home) and time.monotonic() < deadline:
                time.sleep(0.1)
            receiving = [p for p in (home / "hub-uploads").rglob("upload-*") if p.stat().st_size > 0]
            assert receiving
            with serve(home, db_url) as second:
                assert all(p.exists() for p in receiving), "a live server's upload was deleted"
                assert (
                    HfApi(endpoint=second.url, token=False).model_info(NAME).sha
                    == HfApi(endpoint=first.url, token=False).model_info(NAME).sha
                )
        finally:
            sock.close()
