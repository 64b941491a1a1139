"""Streamed push (issue 15 section 3) against a real hub on SQLite and PostgreSQL: the bytes go as raw PUTs, never
base64 in the commit; an interrupted push resends only what the hub does not hold; a merged model pushed with
`adapterhub push` loads with `AutoModelForCausalLM.from_pretrained` through HF_ENDPOINT, logits equal to the folder's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import HfApi, hf_hub_download
from safetensors.torch import load_file

from adapterhub.cli import main as cli
from adapterhub.errors import RemoteError
from adapterhub.hub import streamed
from adapterhub.hub.client import pull, push
from adapterhub.hub.server.background import BackgroundHub
from adapterhub.store.registry import Registry
from tests.trust.conftest import BACKENDS, big_adapter, fresh_database, serve

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=BACKENDS)
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundHub]:
    with fresh_database(request.param) as db_url:
        with serve(tmp_path_factory.mktemp(f"streamed-{request.param}") / "home", db_url) as server:
            yield server


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    folder = big_adapter(tmp_path_factory.mktemp("streamed-src") / "a", layers=2, width=512, rank=16)
    reg = Registry(home=tmp_path_factory.mktemp("streamed-reg"))
    reg.add(folder, "me/big", "t")
    return reg


class Sent:
    """Records what the client streams: the files it reads for a PUT, and the commit bodies it posts."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, fail_after: int | None = None) -> None:
        self.files: list[str] = []
        self.bodies: list[bytes] = []
        read, body = streamed._read, streamed.commit_body

        def spy_read(path: Path, on_bytes: Any, h: Any = None) -> Iterator[bytes]:
            self.files.append(path.name)
            sent = 0
            for chunk in read(path, on_bytes, h):
                if fail_after is not None and sent + len(chunk) > fail_after:
                    raise ConnectionError("the network went away mid-file")
                sent += len(chunk)
                yield chunk

        def spy_body(*args: Any) -> bytes:
            self.bodies.append(body(*args))
            return self.bodies[-1]

        monkeypatch.setattr(streamed, "_read", spy_read)
        monkeypatch.setattr(streamed, "commit_body", spy_body)


def test_push_streams_raw_bytes_and_the_commit_carries_no_file_content(
    hub: BackgroundHub, source: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sent = Sent(monkeypatch)
    result = push("me/big", remote=hub.url, repo="me/streamed", registry=source)
    card = source.get("me/big")
    assert sorted(sent.files) == sorted(f.path for f in card.files)
    lines = [json.loads(line) for body in sent.bodies for line in body.splitlines()]
    lfs = {x["value"]["path"]: x["value"]["oid"] for x in lines if x["key"] == "lfsFile"}
    inline = {x["value"]["path"] for x in lines if x["key"] == "file"}
    assert lfs == {f.path: f.sha256 for f in card.files}
    assert inline == {"adapterhub.json", "README.md"}  # only the generated card and model card travel inline
    assert sum(len(b) for b in sent.bodies) < 16 << 10
    # The hub registered it as usual, and what it serves is byte for byte what was pushed.
    assert HfApi(endpoint=hub.url).model_info("me/streamed").sha == result.commit
    weights = hf_hub_download("me/streamed", "adapter_model.safetensors", endpoint=hub.url, cache_dir=tmp_path / "hf")
    assert Path(weights).read_bytes() == (source.adapter_path(card.ref) / "adapter_model.safetensors").read_bytes()
    assert pull("me/streamed", remote=hub.url, registry=Registry(home=tmp_path / "dst")).ref == "me/streamed@1"


def test_an_interrupted_push_resends_only_what_the_hub_does_not_hold(
    hub: BackgroundHub, source: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    card = source.get("me/big")
    sizes = {f.path: f.size for f in card.files}
    with monkeypatch.context() as m:
        first = Sent(m, fail_after=sizes["adapter_model.safetensors"] // 2)
        with pytest.raises((RemoteError, ConnectionError)):
            push("me/big", remote=hub.url, repo="me/resumed", registry=source)
    assert first.files == ["adapter_config.json", "adapter_model.safetensors"] and first.bodies == []
    assert HfApi(endpoint=hub.url).list_repo_files("me/resumed") == [".gitattributes"]  # nothing committed
    again = Sent(monkeypatch)
    push("me/big", remote=hub.url, repo="me/resumed", registry=source)
    assert again.files == ["adapter_model.safetensors"]  # the config was staged before the cut: not sent again
    # A push of the same version again sends nothing and commits nothing.
    head = HfApi(endpoint=hub.url).model_info("me/resumed").sha
    third = Sent(monkeypatch)
    assert push("me/big", remote=hub.url, repo="me/resumed", registry=source).commit == head
    assert third.files == [] and third.bodies == []


def test_the_streamed_push_shows_a_progress_bar_on_request(
    hub: BackgroundHub, source: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    push("me/big", remote=hub.url, repo="me/progress", registry=source, progress=True)
    assert "push me/big@1" in capsys.readouterr().err


def _transformers_logits(hub: BackgroundHub, tmp_path: Path, repo: str) -> dict[str, torch.Tensor]:
    """AutoModelForCausalLM.from_pretrained(repo) in a fresh interpreter with HF_ENDPOINT at the hub (read at import)."""
    out = tmp_path / "out.safetensors"
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
           "HF_HOME": str(tmp_path / "hf"), "OUT": str(out), "PYTHONPATH": str(ROOT)}  # fmt: skip
    code = f"""
        import os, torch
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({repo!r}).eval()
        ids = torch.arange(1, 17).reshape(2, 8)
        with torch.no_grad():
            save_file({{"logits": model(input_ids=ids).logits.contiguous()}}, os.environ["OUT"])
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return load_file(str(out))


def test_a_merged_model_pushed_with_the_cli_loads_with_transformers_from_the_hub(
    hub: BackgroundHub, tiny_llama_dir: Path, llama_adapter_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    from adapterhub.lora.merge import merge

    merged = tmp_path / "merged"
    merge(tiny_llama_dir, [llama_adapter_dir], merged, max_shard_size="20KB", register=False)  # shards + an index
    (merged / "pytorch_model.bin").write_bytes(b"\x80\x04\x95 a pickle is never pushed")
    env = {"HF_ENDPOINT": hub.url, "ADAPTERHUB_HOME": str(tmp_path / "client"), "HF_HUB_OFFLINE": "0"}
    r = CliRunner().invoke(cli, ["push", str(merged), "--repo", "me/merged", "--json"], env=env)
    assert r.exit_code == 0, r.output
    pushed = json.loads(r.output)
    files = HfApi(endpoint=hub.url).list_repo_files("me/merged")
    assert "pytorch_model.bin" not in files and "model.safetensors.index.json" in files and "README.md" in files
    assert {f["path"] for f in pushed["files"]} == set(files) - {".gitattributes", "README.md"}
    remote = _transformers_logits(hub, tmp_path, "me/merged")["logits"]
    local = AutoModelForCausalLM.from_pretrained(merged).eval()
    with torch.no_grad():
        expected = local(input_ids=torch.arange(1, 17).reshape(2, 8)).logits
    torch.testing.assert_close(remote, expected, rtol=0, atol=0)


def test_a_base_folder_pushes_and_a_folder_that_is_no_model_is_refused(
    hub: BackgroundHub, tiny_llama_dir: Path, llama_adapter_dir: Path, tmp_path: Path
) -> None:
    env = {"HF_ENDPOINT": hub.url, "ADAPTERHUB_HOME": str(tmp_path / "client"), "HF_HUB_OFFLINE": "0"}
    r = CliRunner().invoke(cli, ["push", str(tiny_llama_dir), "--repo", "me/base"], env=env)
    assert r.exit_code == 0, r.output
    assert "model.safetensors" in HfApi(endpoint=hub.url).list_repo_files("me/base")
    missing_repo = CliRunner().invoke(cli, ["push", str(tiny_llama_dir)], env=env)
    assert missing_repo.exit_code == 2 and "--repo" in missing_repo.output
    adapter = CliRunner().invoke(cli, ["push", str(llama_adapter_dir), "--repo", "me/not-a-model"], env=env)
    assert adapter.exit_code == 1 and "adapter" in adapter.output and "Traceback" not in adapter.output
    assert len(adapter.output.strip().splitlines()) == 1


def test_an_interrupted_model_push_resends_only_the_files_the_hub_does_not_hold(
    hub: BackgroundHub, tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from adapterhub.hub.models import push_model

    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path / "client"))  # the sha256 cache lives there
    folder = tmp_path / "base"
    shutil.copytree(tiny_llama_dir, folder)
    (folder / "tokenizer.json").write_text("{}")
    for p in folder.iterdir():  # older than the 2 s "racy" window: their sha256 may be cached
        os.utime(p, (p.stat().st_mtime - 3600, p.stat().st_mtime - 3600))
    big = "model.safetensors"
    with monkeypatch.context() as m:
        first = Sent(m, fail_after=(folder / big).stat().st_size // 2)
        with pytest.raises((RemoteError, ConnectionError)):
            push_model(folder, repo="me/base-resumed", remote=hub.url)
    assert first.files == ["config.json", "generation_config.json", big] and first.bodies == []
    again = Sent(monkeypatch)
    result = push_model(folder, repo="me/base-resumed", remote=hub.url)
    assert again.files == [big, "tokenizer.json"]  # the two configs were sent whole before the cut
    files = HfApi(endpoint=hub.url).list_repo_files("me/base-resumed")
    assert {f.path for f in result.files} == {"config.json", "generation_config.json", big, "tokenizer.json"} <= set(files)
    got = hf_hub_download("me/base-resumed", big, endpoint=hub.url, cache_dir=tmp_path / "hf")
    assert Path(got).read_bytes() == (folder / big).read_bytes()
