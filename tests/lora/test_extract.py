"""Extract: merge an adapter, extract it back at its rank, get the same delta; lower ranks keep the top energy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adapterhub.errors import UsageError
from adapterhub.lora.delta import delta_weight
from adapterhub.lora.extract import extract, low_rank_factors
from adapterhub.lora.merge import merge
from adapterhub.peft_weights import load_adapter
from tests import factories


def deltas(folder: Path) -> dict[str, torch.Tensor]:
    ad = load_adapter(folder)
    return {n: delta_weight(m, fan_in_fan_out=ad.config.fan_in_fan_out) for n, m in ad.modules.items()}


def assert_deltas_close(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], rtol: float = 1e-4) -> None:
    assert set(ours) == set(ref)
    for k in ref:
        err = float((ours[k] - ref[k]).abs().max())
        assert err <= rtol * float(ref[k].abs().max()), f"{k}: {err}"


@pytest.mark.parametrize("model", ["llama", "gpt2"])
def test_round_trip_merge_then_extract_at_the_adapters_rank(
    model: str, tiny_llama_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    base = tiny_llama_dir if model == "llama" else tiny_gpt2_dir
    kw = (
        dict(target_modules=["q_proj", "v_proj", "down_proj"])
        if model == "llama"
        else dict(target_modules=["c_attn", "c_fc"], fan_in_fan_out=True)
    )
    adapter = factories.make_peft_adapter(
        base, tmp_path / "ad", r=4, lora_alpha=16, use_rslora=True, seed=21, train_steps=1, **kw
    )
    merge(base, [adapter], tmp_path / "merged", register=False)
    res = extract(base, tmp_path / "merged", 4, out=tmp_path / "ex", register=False)
    assert_deltas_close(deltas(tmp_path / "ex"), deltas(adapter))
    assert res.modules == len(load_adapter(adapter).modules)
    assert all(e == pytest.approx(1.0, abs=1e-6) for e in res.energy.values())
    assert res.not_captured == []
    # PEFT applies the extracted adapter to the base and gets the merged model's outputs
    from peft import PeftModel

    merged = factories.load_model(tmp_path / "merged")
    pm = PeftModel.from_pretrained(factories.load_model(base), str(tmp_path / "ex")).eval()
    inputs = factories.sample_inputs(merged)
    torch.testing.assert_close(factories.model_output(pm, inputs), factories.model_output(merged, inputs), rtol=1e-4, atol=1e-4)


def test_lower_rank_keeps_the_top_singular_values(tiny_llama_dir: Path, tmp_path: Path) -> None:
    adapter = factories.make_peft_adapter(tiny_llama_dir, tmp_path / "ad", r=6, target_modules=["q_proj"], seed=22)
    merge(tiny_llama_dir, [adapter], tmp_path / "merged", register=False)
    res = extract(tiny_llama_dir, tmp_path / "merged", 2, targets=["q_proj"], out=tmp_path / "ex", register=False)
    ours = deltas(tmp_path / "ex")
    for k, d in deltas(adapter).items():
        s = torch.linalg.svdvals(d.double())
        assert res.energy[k] == pytest.approx(float(s[:2].pow(2).sum() / s.pow(2).sum()), rel=1e-4)
        assert float(torch.linalg.norm(ours[k].double() - d.double())) == pytest.approx(
            float(s[2:].pow(2).sum().sqrt()), rel=1e-3
        )


def test_low_rank_factors_randomized_path_is_exact_for_low_rank_deltas() -> None:
    g = torch.Generator().manual_seed(0)
    d = torch.randn(2100, 5, generator=g) @ torch.randn(5, 2200, generator=g)
    a, b, e = low_rank_factors(d, 5)
    assert e == pytest.approx(1.0, abs=1e-6)
    assert float((b @ a - d).abs().max()) <= 1e-4 * float(d.abs().max())


def test_changed_norms_are_reported_and_identical_models_refused(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    sd = load_file(str(tiny_llama_dir / "model.safetensors"))
    sd["model.norm.weight"] = sd["model.norm.weight"] + 0.5
    sd["model.layers.0.self_attn.q_proj.weight"] = sd["model.layers.0.self_attn.q_proj.weight"] + 0.01
    fine = tmp_path / "fine"
    fine.mkdir()
    save_file(sd, str(fine / "model.safetensors"), metadata={"format": "pt"})
    res = extract(tiny_llama_dir, fine, 2, out=tmp_path / "ex", register=False)
    assert res.not_captured == ["model.norm.weight"]
    assert list(res.energy) == ["model.layers.0.self_attn.q_proj"]
    with pytest.raises(UsageError, match="no targeted linear weight differs"):
        extract(tiny_llama_dir, tiny_llama_dir, 2, out=tmp_path / "ex2", register=False)


def test_extract_registers_against_the_base_with_lineage(minilm_dir: Path, minilm_adapter_dir: Path, tmp_path: Path) -> None:
    from adapterhub.store.registry import Registry

    merge(minilm_dir, [minilm_adapter_dir], tmp_path / "merged", register=False)
    reg = Registry()
    res = extract(minilm_dir, tmp_path / "merged", 4, targets=["query", "value"], name="x/extracted", task="sts", registry=reg)
    card = reg.get("x/extracted")
    assert res.card is not None and card.ref == res.card.ref
    assert card.base_model is not None and card.lineage is not None and card.lineage.method == "extract"
    assert card.lineage.base == card.base_model.content_hash and card.lineage.params["rank"] == 4
    assert_deltas_close(deltas(reg.adapter_path("x/extracted")), deltas(minilm_adapter_dir))
