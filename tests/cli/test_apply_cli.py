"""`adapterhub validate` and `adapterhub run`: exit codes 0/1/2, tables and --json, on real files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from adapterhub.cli import main
from tests import factories


def _invoke(*args: str):  # noqa: ANN202 - click's Result
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_validate_compatible_folder_exits_0(llama_adapter_dir: Path, tiny_llama_dir: Path) -> None:
    res = _invoke("validate", llama_adapter_dir, "--base", tiny_llama_dir)
    assert res.exit_code == 0, res.output
    assert res.output.startswith("COMPATIBLE")
    assert "shapes alone" in res.output


def test_validate_incompatible_exits_1_and_names_modules(gpt2_adapter_dir: Path, tiny_llama_dir: Path) -> None:
    res = _invoke("validate", gpt2_adapter_dir, "--base", tiny_llama_dir)
    assert res.exit_code == 1
    assert "INCOMPATIBLE" in res.output
    assert "transformer.h.0.attn.c_attn" in res.output and "[32, 96]" in res.output


def test_validate_json(gpt2_adapter_dir: Path, tiny_llama_dir: Path) -> None:
    res = _invoke("validate", gpt2_adapter_dir, "--base", tiny_llama_dir, "--json")
    assert res.exit_code == 1
    data = json.loads(res.output)
    assert data["outcome"] == "incompatible"
    assert {i["module"] for i in data["issues"]} == {"transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"}


def test_validate_registered_ref_exact(llama_adapter_dir: Path, tiny_llama_dir: Path) -> None:
    from adapterhub.store.registry import Registry

    Registry().add(llama_adapter_dir, name="t/llama", task="test", base=tiny_llama_dir)  # ADAPTERHUB_HOME is per test
    res = _invoke("validate", "t/llama", "--base", tiny_llama_dir, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["outcome"] == "exact"


def test_validate_usage_errors_exit_2(llama_adapter_dir: Path, tiny_llama_dir: Path) -> None:
    assert _invoke("validate", llama_adapter_dir).exit_code == 2  # --base missing
    assert _invoke("validate", "no such ref!", "--base", tiny_llama_dir).exit_code == 2


def test_validate_unknown_ref_exits_1(tiny_llama_dir: Path) -> None:
    res = _invoke("validate", "nobody/nothing", "--base", tiny_llama_dir)
    assert res.exit_code == 1


# --- run ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_with_tokenizer(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A tiny Llama whose vocabulary is MiniLM's WordPiece (30522 tokens), with that tokenizer saved beside it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("llama-tok")
    LlamaForCausalLM(cfg).save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, folder / name)
    return folder


def test_run_causal_lm_prompt_json(llama_with_tokenizer: Path, tmp_path: Path) -> None:
    adapter = factories.make_peft_adapter(
        llama_with_tokenizer, tmp_path / "a", target_modules=["q_proj", "v_proj", "lm_head"], seed=3
    )
    res = _invoke(
        "run", "--base", llama_with_tokenizer, "--adapter", adapter, "--prompt", "the cat sat on the", "--json", "--top-k", "3"
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output[res.output.index("{") :])
    assert data["kind"] == "causal-lm" and len(data["top_tokens"]) == 3 and len(data["base_top_tokens"]) == 3
    assert data["top_tokens"] != data["base_top_tokens"]  # lm_head LoRA with random B changes the distribution
    probs = [t["prob"] for t in data["top_tokens"]]
    assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1


def test_run_encoder_sentence_table(minilm_dir: Path, minilm_adapter_dir: Path) -> None:
    res = _invoke("run", "--base", minilm_dir, "--adapter", f"{minilm_adapter_dir}:0.5", "--sentence", "a fine day")
    assert res.exit_code == 0, res.output
    assert "embedding norm" in res.output and "cosine to the bare base" in res.output


def test_run_exit_codes(minilm_dir: Path, minilm_adapter_dir: Path, gpt2_adapter_dir: Path) -> None:
    assert _invoke("run", "--base", minilm_dir, "--sentence", "x", "--prompt", "y").exit_code == 2
    assert _invoke("run", "--base", minilm_dir).exit_code == 2
    assert _invoke("run", "--base", minilm_dir, "--adapter", f"{minilm_adapter_dir}:abc", "--sentence", "x").exit_code == 2
    bad = _invoke("run", "--base", minilm_dir, "--adapter", gpt2_adapter_dir, "--sentence", "x")
    assert bad.exit_code == 1 and "does not fit" in bad.output
    assert _invoke("run", "--base", minilm_dir, "--prompt", "hello").exit_code == 2  # an encoder has no next token
