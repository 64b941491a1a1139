"""PEFT as the oracle: adapters PEFT made are read, re-saved by adapterhub, and loaded back by PEFT unchanged.

For each variant: PEFT on the re-saved folder gives the same outputs as PEFT on the original (1e-5, fp32), the
reader's `LoraModule.delta()` equals PEFT's `get_delta_weight` per module (1e-6), and the config survives.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from adapterhub.peft_format import CONFIG_NAME, WEIGHTS_NAME, read_layout
from adapterhub.peft_weights import load_adapter, save_adapter
from tests import factories

warnings.filterwarnings("ignore", module="peft")

# (base fixture, PEFT LoraConfig kwargs, extra make_peft_adapter kwargs)
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "minilm-plain-trained": ("minilm_dir", dict(target_modules=["query", "value"], train_steps=2)),
    "minilm-rslora-patterns": (
        "minilm_dir",
        dict(
            target_modules=["query", "key", "value"],
            use_rslora=True,
            r=4,
            lora_alpha=6,
            rank_pattern={"value": 2, r"layer\.1\.attention\.self\.query": 6},
            alpha_pattern={"key": 3},
        ),
    ),
    "minilm-bias-lora-only": ("minilm_dir", dict(target_modules=["query"], bias="lora_only", train_steps=2)),
    "minilm-seqcls-head": ("minilm_cls_dir", dict(target_modules=["query", "value"], task_type="SEQ_CLS", train_steps=2)),
    "llama-plain": ("tiny_llama_dir", dict(target_modules=["q_proj", "v_proj"])),
    "llama-regex": ("tiny_llama_dir", dict(target_modules=r".*\.(k_proj|o_proj|down_proj)")),
    "llama-all-linear": ("tiny_llama_dir", dict(target_modules="all-linear", r=2)),
    "llama-rank-alpha-pattern": (
        "tiny_llama_dir",
        dict(
            target_modules=["q_proj", "v_proj", "up_proj"], rank_pattern={"v_proj": 2, "up_proj": 8}, alpha_pattern={"q_proj": 32}
        ),
    ),
    "llama-dora": ("tiny_llama_dir", dict(target_modules=["q_proj", "v_proj", "gate_proj"], use_dora=True, train_steps=2)),
    "llama-embedding": ("tiny_llama_dir", dict(target_modules=["embed_tokens", "q_proj"])),
    "llama-embedding-dora": ("tiny_llama_dir", dict(target_modules=["embed_tokens", "o_proj"], use_dora=True, train_steps=2)),
    "llama-lora-bias": ("tiny_llama_dir", dict(target_modules=["q_proj", "down_proj"], lora_bias=True, train_steps=2)),
    "llama-layers-to-transform": ("tiny_llama_dir", dict(target_modules=["q_proj", "v_proj"], layers_to_transform=[1])),
    "llama-modules-to-save": ("tiny_llama_dir", dict(target_modules=["q_proj"], modules_to_save=["lm_head"], train_steps=2)),
    "gpt2-conv1d": ("tiny_gpt2_dir", dict(target_modules=["c_attn", "c_proj"], fan_in_fan_out=True, train_steps=2)),
    "gpt2-dora": ("tiny_gpt2_dir", dict(target_modules=["c_attn"], fan_in_fan_out=True, use_dora=True, train_steps=2)),
    "gpt2-tied-embedding": ("tiny_gpt2_dir", dict(target_modules=["wte", "c_attn"], fan_in_fan_out=True, train_steps=2)),
    "gpt2-bias-all": ("tiny_gpt2_dir", dict(target_modules=["c_fc"], fan_in_fan_out=True, bias="all", train_steps=2)),
}


@pytest.fixture(scope="module")
def minilm_cls_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """MiniLM's real encoder with a seeded 3-way classification head (the SEQ_CLS modules_to_save case)."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("minilm-cls")
    BertForSequenceClassification.from_pretrained(minilm_dir, num_labels=3).eval().save_pretrained(folder)
    return folder


def _peft_model(base_dir: Path, adapter_dir: Path) -> torch.nn.Module:
    from peft import PeftModel

    return PeftModel.from_pretrained(factories.load_model(base_dir), adapter_dir).eval()


def _peft_deltas(peft_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from peft.tuners.lora import LoraLayer

    prefix = "base_model.model."
    return {
        name.removeprefix(prefix): mod.get_delta_weight("default").detach()
        for name, mod in peft_model.named_modules()
        if isinstance(mod, LoraLayer) and "default" in (set(mod.lora_A) | set(mod.lora_embedding_A))
    }


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_resaved_adapter_matches_peft(case: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    base_name, kwargs = CASES[case]
    base_dir: Path = request.getfixturevalue(base_name)
    kwargs = dict(kwargs)
    train_steps = kwargs.pop("train_steps", 0)
    original = factories.make_peft_adapter(base_dir, tmp_path / "original", seed=3, train_steps=train_steps, **kwargs)

    adapter = load_adapter(original)
    resaved = save_adapter(adapter, tmp_path / "resaved")

    base = factories.load_model(base_dir)
    inputs = factories.sample_inputs(base, seq=8)
    base_out = factories.model_output(base, inputs)
    peft_orig = _peft_model(base_dir, original)
    peft_new = _peft_model(base_dir, resaved)
    out_orig = factories.model_output(peft_orig, inputs)
    out_new = factories.model_output(peft_new, inputs)

    assert (out_orig - base_out).abs().max() > 1e-4, "the adapter must change the output, or the comparison proves nothing"
    torch.testing.assert_close(out_new, out_orig, rtol=0, atol=1e-5)

    # the reader's deltas are PEFT's deltas, module by module, and cover exactly PEFT's LoRA layers
    peft_deltas = _peft_deltas(peft_orig)
    assert set(adapter.modules) == set(peft_deltas)
    for name, module in adapter.modules.items():
        torch.testing.assert_close(module.delta(adapter.config.fan_in_fan_out), peft_deltas[name].float(), rtol=0, atol=1e-6)
        peft_layer = peft_orig.get_submodule("base_model.model." + name)
        assert module.rank == peft_layer.r["default"]
        assert module.scaling == pytest.approx(peft_layer.scaling["default"], rel=1e-12)
        if kwargs.get("use_dora"):
            assert module.magnitude is not None
            torch.testing.assert_close(
                module.magnitude, peft_layer.lora_magnitude_vector["default"].weight.detach(), rtol=0, atol=0
            )
        else:
            assert module.magnitude is None
        if kwargs.get("lora_bias"):
            assert module.lora_B_bias is not None
            torch.testing.assert_close(module.lora_B_bias, peft_layer.lora_B["default"].bias.detach(), rtol=0, atol=0)
        else:
            assert module.lora_B_bias is None

    # every field PEFT wrote survives with the same value, and the tensors keep PEFT's exact key names
    cfg_orig = json.loads((original / CONFIG_NAME).read_text())
    cfg_new = json.loads((resaved / CONFIG_NAME).read_text())
    assert {k: cfg_new.get(k) for k in cfg_orig} == cfg_orig
    # and the bytes under each key are identical
    before, after = load_file(str(original / WEIGHTS_NAME)), load_file(str(resaved / WEIGHTS_NAME))
    assert set(after) == set(before)
    for key, tensor in before.items():
        assert torch.equal(after[key], tensor), key


def test_unknown_and_oddly_typed_fields_survive_and_peft_still_loads(tiny_llama_dir: Path, tmp_path: Path) -> None:
    pristine = factories.make_peft_adapter(tiny_llama_dir, tmp_path / "pristine", target_modules=["q_proj"], seed=4)
    original = tmp_path / "a"
    shutil.copytree(pristine, original)
    cfg = json.loads((original / CONFIG_NAME).read_text())
    cfg["some_future_field"] = {"nested": [1, 2.5, None], "flag": True}
    cfg["lora_dropout"] = "0.1 maybe"  # a field adapterhub does not use, with a type it does not expect
    (original / CONFIG_NAME).write_text(json.dumps(cfg))

    adapter = load_adapter(original)
    assert adapter.config.lora_dropout == 0.0  # unusable value reads as the default...
    resaved = save_adapter(adapter, tmp_path / "b")
    written = json.loads((resaved / CONFIG_NAME).read_text())
    assert written["some_future_field"] == cfg["some_future_field"]
    assert written["lora_dropout"] == "0.1 maybe"  # ...but is written back exactly as read
    assert {k: written.get(k) for k in cfg} == cfg

    written["lora_dropout"] = 0.0  # PEFT itself needs a number here; the unknown field must not bother it
    (resaved / CONFIG_NAME).write_text(json.dumps(written))
    base = factories.load_model(tiny_llama_dir)
    inputs = factories.sample_inputs(base)
    torch.testing.assert_close(
        factories.model_output(_peft_model(tiny_llama_dir, resaved), inputs),
        factories.model_output(_peft_model(tiny_llama_dir, pristine), inputs),
        rtol=0, atol=1e-5,
    )  # fmt: skip


def test_edited_ranks_and_scaling_are_written_as_patterns_peft_follows(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """An adapter changed in memory (one module truncated to rank 2, another rescaled) exports a config under
    which PEFT computes exactly the reader's deltas."""
    original = factories.make_peft_adapter(tiny_llama_dir, tmp_path / "a", target_modules=["q_proj", "v_proj"], seed=5)
    adapter = load_adapter(original)
    name_q = "model.layers.1.self_attn.q_proj"
    m = adapter.modules[name_q]
    m.lora_A, m.lora_B, m.rank = m.lora_A[:2].clone(), m.lora_B[:, :2].clone(), 2
    adapter.modules["model.layers.0.self_attn.v_proj"].scaling *= 3.0
    resaved = save_adapter(adapter, tmp_path / "b")

    peft_deltas = _peft_deltas(_peft_model(tiny_llama_dir, resaved))
    for name, module in adapter.modules.items():
        torch.testing.assert_close(module.delta(), peft_deltas[name].float(), rtol=0, atol=1e-6)
    assert read_layout(resaved).modules[name_q].rank == 2


def test_saved_files_are_exactly_peft_names(llama_adapter_dir: Path, tmp_path: Path) -> None:
    resaved = save_adapter(load_adapter(llama_adapter_dir), tmp_path / "out")
    assert sorted(p.name for p in resaved.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])
