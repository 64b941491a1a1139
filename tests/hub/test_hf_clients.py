"""The real consumers: PEFT and transformers loading from the hub through HF_ENDPOINT (read at import, so each runs in
a subprocess), the CLI commands, and the hub's migration matching its tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import HfApi
from safetensors.torch import load_file

from adapterhub.cli import main as cli
from adapterhub.store.registry import Registry
from tests import factories

from .conftest import HubServer

ROOT = Path(__file__).resolve().parents[2]


def _run_client(hub: HubServer, tmp_path: Path, code: str) -> dict[str, torch.Tensor]:
    """Run `code` in a fresh interpreter pointed at the hub; it saves tensors to $OUT (safetensors, never pickle)."""
    out = tmp_path / "out.safetensors"
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
           "OUT": str(out), "PYTHONPATH": str(ROOT)}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return load_file(str(out))


@pytest.mark.slow
def test_peft_from_pretrained_through_hf_endpoint(
    hub: HubServer, minilm_dir: Path, minilm_adapter_dir: Path, tmp_path: Path
) -> None:
    reg = Registry(home=tmp_path / "reg")
    reg.add(minilm_adapter_dir, "me/peft-load", "embedding")
    from adapterhub.hub.client import push

    push("me/peft-load", remote=hub.url, registry=reg)
    remote = _run_client(
        hub,
        tmp_path,
        f"""
        import os, torch
        from peft import PeftModel
        from safetensors.torch import save_file
        from tests import factories
        base = factories.load_model({str(minilm_dir)!r})
        model = PeftModel.from_pretrained(base, "me/peft-load").eval()
        save_file({{"out": factories.model_output(model, factories.sample_inputs(base)).contiguous()}}, os.environ["OUT"])
    """,
    )["out"]
    from peft import PeftModel

    base = factories.load_model(minilm_dir)
    local = factories.model_output(PeftModel.from_pretrained(base, str(minilm_adapter_dir)).eval(), factories.sample_inputs(base))
    plain = factories.model_output(factories.load_model(minilm_dir), factories.sample_inputs(base))
    assert torch.equal(remote, local)
    assert not torch.allclose(remote, plain)  # the adapter really changed the outputs


@pytest.mark.slow
def test_transformers_loads_a_merged_model_pushed_to_the_hub(
    hub: HubServer, tiny_llama_dir: Path, llama_adapter_dir: Path, tmp_path: Path
) -> None:
    from adapterhub.lora.merge import merge

    merged = tmp_path / "merged"
    merge(tiny_llama_dir, [llama_adapter_dir], merged, register=False, progress=False)
    api = HfApi(endpoint=hub.url)
    api.create_repo("me/tiny-llama-merged")
    api.upload_folder(folder_path=merged, repo_id="me/tiny-llama-merged")
    remote = _run_client(
        hub,
        tmp_path,
        """
        import os, torch
        from transformers import AutoModelForCausalLM
        from safetensors.torch import save_file
        from tests import factories
        model = AutoModelForCausalLM.from_pretrained("me/tiny-llama-merged").eval()
        save_file({"out": factories.model_output(model, factories.sample_inputs(model)).contiguous()}, os.environ["OUT"])
    """,
    )["out"]
    local = factories.load_model(merged)
    assert torch.equal(remote, factories.model_output(local, factories.sample_inputs(local)))
    base = factories.load_model(tiny_llama_dir)
    assert not torch.allclose(remote, factories.model_output(base, factories.sample_inputs(base)))  # the merge changed it


def test_cli_push_pull(hub: HubServer, minilm_adapter_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    src, dst = tmp_path / "src", tmp_path / "dst"
    monkeypatch.setenv("ADAPTERHUB_HOME", str(src))
    added = runner.invoke(
        cli, ["add", str(minilm_adapter_dir), "--name", "cli/adapter", "--task", "ner", "--metric", "conll/f1=0.8"]
    )
    assert added.exit_code == 0, added.output
    pushed = runner.invoke(cli, ["push", "cli/adapter@1", "--remote", hub.url, "--json"])
    assert pushed.exit_code == 0, pushed.output
    assert json.loads(pushed.output)["repo_id"] == "cli/adapter"
    monkeypatch.setenv("ADAPTERHUB_HOME", str(dst))
    monkeypatch.setenv("HF_ENDPOINT", hub.url)  # no --remote: the same variable the HF clients read
    pulled = runner.invoke(cli, ["pull", "cli/adapter", "--as", "team/ner"])
    assert pulled.exit_code == 0, pulled.output
    assert pulled.output.strip() == "team/ner@1"
    assert Registry(home=dst).get("team/ner").scores[0].value == 0.8
    found = runner.invoke(cli, ["search", "--remote", hub.url, "--task", "ner", "--min", "conll/f1=0.75", "--json"])
    assert found.exit_code == 0, found.output
    assert [c["name"] for c in json.loads(found.output)["items"]] == ["adapter"]
    table = runner.invoke(cli, ["search", "--remote", hub.url, "--task", "ner"])
    assert "cli/adapter@1" in table.output
    missing = runner.invoke(cli, ["pull", "cli/nothing", "--remote", hub.url])
    assert missing.exit_code == 1 and "not found" in missing.output
    bad = runner.invoke(cli, ["pull", "not a repo", "--remote", hub.url])
    assert bad.exit_code == 2


def test_hub_migration_matches_the_tables(tmp_path: Path) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from adapterhub.store import orm
    from adapterhub.store.db import Database, alembic_config

    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    assert set(orm.Base.metadata.tables) >= {"hub_repos", "hub_commits", "hub_commit_files", "hub_refs"}
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), orm.Base.metadata)
        # Only the hub's tables are this module's business; the registry's own migration test covers the rest.
        assert [d for d in diff if "hub_" in repr(d)] == []
        command.downgrade(alembic_config(conn), "0001")
        conn.commit()
    import sqlalchemy as sa

    assert not any(t.startswith("hub_") for t in sa.inspect(db.engine).get_table_names())
