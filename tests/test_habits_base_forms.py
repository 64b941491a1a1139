"""A base is named the way transformers users name it: a folder, a Hugging Face cache folder, or a Hub id `org/name`
resolved from the local cache (HF_HUB_OFFLINE: nothing is downloaded). load() passes from_pretrained's keywords on.

The cache is built by hand in huggingface_hub's own layout (models--org--name/snapshots/<sha>/ + refs/main), and
huggingface_hub's own `snapshot_download(local_files_only=True)` is the oracle that it is a valid cache.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import adapterhub
from adapterhub.errors import BaseModelNotFound
from adapterhub.modelfiles import resolve_base
from tests import factories

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("forms")
    base = factories.build_tiny_llama(root / "llama64")
    adapter = factories.make_peft_adapter(base, root / "ad", target_modules=["q_proj", "v_proj"], seed=2)
    return base, adapter


@pytest.fixture
def run() -> Callable[..., tuple[int, str]]:
    from click.testing import CliRunner

    from adapterhub.cli import main

    def invoke(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
        return result.exit_code, result.output

    return invoke


@pytest.fixture
def hub_cache(built: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from huggingface_hub import constants, snapshot_download

    cache = tmp_path / "hf-cache"
    repo = cache / "models--acme--llama64"
    shutil.copytree(built[0], repo / "snapshots" / SHA)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert Path(snapshot_download("acme/llama64", local_files_only=True)) == repo / "snapshots" / SHA
    return repo


def test_every_form_names_the_same_base(built: tuple[Path, Path], hub_cache: Path) -> None:
    snap = hub_cache / "snapshots" / SHA
    assert resolve_base("acme/llama64") == snap
    assert resolve_base(hub_cache) == snap
    assert resolve_base(built[0]) == built[0]
    with pytest.raises(BaseModelNotFound):
        resolve_base("acme/not-cached")  # offline: not downloaded


def test_load_from_a_hub_id_offline_equals_the_folder(built: tuple[Path, Path], hub_cache: Path) -> None:
    base, adapter = built
    by_id = adapterhub.load("acme/llama64", [adapter])
    by_folder = adapterhub.load(base, [adapter])
    inputs = factories.sample_inputs(by_id)
    assert torch.equal(factories.model_output(by_id, inputs), factories.model_output(by_folder, inputs))


def test_from_pretrained_keywords_pass_through(
    built: tuple[Path, Path], hub_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import LlamaForCausalLM

    seen: dict[str, object] = {}
    real = LlamaForCausalLM.from_pretrained.__func__  # type: ignore[attr-defined]

    def spy(cls: type, path: str, **kwargs: object) -> object:
        seen.update(kwargs, path=path)
        return real(cls, path, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "from_pretrained", classmethod(spy))
    model = adapterhub.load("acme/llama64", [built[1]], torch_dtype=torch.bfloat16, attn_implementation="eager",
                            device_map={"": "cpu"}, revision="main", trust_remote_code=False)  # fmt: skip
    assert next(model.parameters()).dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"
    assert seen["device_map"] == {"": "cpu"} and seen["trust_remote_code"] is False
    assert seen["path"] == str(hub_cache / "snapshots" / SHA)  # revision main: the snapshot refs/main names
    assert all(p.device.type == "cpu" for p in model.parameters())
    model = adapterhub.load(built[0], [built[1]], dtype="bfloat16", attn_implementation="sdpa")
    assert next(model.parameters()).dtype == torch.bfloat16 and model.config._attn_implementation == "sdpa"


def test_cli_hash_validate_search_accept_a_hub_id(
    built: tuple[Path, Path], hub_cache: Path, run: Callable[..., tuple[int, str]]
) -> None:
    base, adapter = built
    code, out = run("hash", "acme/llama64", "--json")
    assert code == 0, out
    by_id = json.loads(out)["fingerprint"]
    code, out = run("hash", str(base), "--json")
    assert json.loads(out)["fingerprint"] == by_id
    code, out = run("validate", str(adapter), "--base", "acme/llama64")
    assert code == 0 and out.startswith("COMPATIBLE"), out
    code, out = run("add", str(adapter), "--name", "acme/qv", "--task", "test", "--base", str(base))
    assert code == 0, out
    code, out = run("search", "--base", "acme/llama64", "--json")
    assert code == 0, out
    assert [i["namespace"] + "/" + i["name"] for i in json.loads(out)["items"]] == ["acme/qv"]
    code, out = run("search", "--base", "acme/other64", "--json")
    assert code == 0 and json.loads(out)["items"] == []
