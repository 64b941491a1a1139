"""Streaming merge vs PEFT's merge_and_unload: same weights, loadable by transformers, atomic, clear failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from adapterhub.errors import IncompatibleAdapter, NonFiniteResult, UsageError
from adapterhub.lora.merge import merge, resolve_name_map
from adapterhub.lora.stream import StreamWriter, TensorSpec, model_tensors, parse_size, read_tensor
from tests import factories


def load_all(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def peft_merged(base_dir: Path, adapters: list[tuple[Path, float]], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The oracle: PEFT loads every adapter, scales each one's scaling by its weight, merges them in order."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    model = factories.load_model(base_dir)
    if dtype is not None:
        model = model.to(dtype)
    names = [f"a{i}" for i in range(len(adapters))]
    pm = PeftModel.from_pretrained(model, str(adapters[0][0]), adapter_name=names[0])
    for name, (folder, _) in zip(names[1:], adapters[1:]):
        pm.load_adapter(str(folder), adapter_name=name)
    for mod in pm.modules():
        if isinstance(mod, LoraLayer):
            for name, (_, w) in zip(names, adapters):
                if name in mod.scaling:
                    mod.scaling[name] *= w
    merged = pm.merge_and_unload(adapter_names=names)
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def assert_same_weights(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], rtol: float = 1e-5) -> None:
    """Tensors in both are equal to tolerance (a checkpoint omits tied weights; a state_dict omits some buffers)."""
    common = ours.keys() & ref.keys()
    assert len(common) >= len(ours) - 1
    for k in common:
        t, r = ours[k], ref[k]
        assert t.shape == r.shape, k
        err = (t.float() - r.float()).abs().max().item()
        scale = r.float().abs().max().item() or 1.0
        assert err <= rtol * scale, f"{k}: max abs error {err} vs scale {scale}"


def changed(ours: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> set[str]:
    return {k for k in ours if not torch.equal(ours[k], base[k])}


LLAMA_VARIANTS = {
    "lora": dict(target_modules=["q_proj", "v_proj"]),
    "rslora": dict(target_modules=["q_proj", "k_proj", "o_proj"], use_rslora=True, r=8, lora_alpha=16),
    "patterns": dict(target_modules=["q_proj", "v_proj", "up_proj"], rank_pattern={"v_proj": 2}, alpha_pattern={"up_proj": 3}),
    "dora": dict(target_modules=["q_proj", "v_proj", "down_proj"], use_dora=True),
    "all_linear_embed": dict(target_modules=["q_proj", "gate_proj", "embed_tokens"]),
    "layers_to_transform": dict(target_modules=["q_proj", "v_proj"], layers_to_transform=[1]),
}


@pytest.mark.parametrize("variant", sorted(LLAMA_VARIANTS))
def test_merge_matches_peft_merge_and_unload(variant: str, tiny_llama_dir: Path, tmp_path: Path) -> None:
    adapter = factories.make_peft_adapter(tiny_llama_dir, tmp_path / "ad", seed=3, train_steps=2, **LLAMA_VARIANTS[variant])
    res = merge(tiny_llama_dir, [adapter], tmp_path / "out", register=False)
    ours = load_all(tmp_path / "out")
    ref = peft_merged(tiny_llama_dir, [(adapter, 1.0)])
    assert set(ours) == set(load_all(tiny_llama_dir))
    assert_same_weights(ours, ref)
    assert res.merged_tensors == len(changed(ours, load_all(tiny_llama_dir))) > 0


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Merge in blocks of 64 elements, so tiny models go through many row blocks per tensor."""
    monkeypatch.setattr("adapterhub.lora.merge._CHUNK_ELEMENTS", 64)


@pytest.mark.parametrize("dora", [False, True])
def test_merge_fan_in_fan_out_gpt2(dora: bool, tiny_gpt2_dir: Path, tmp_path: Path, small_blocks: None) -> None:
    adapter = factories.make_peft_adapter(
        tiny_gpt2_dir,
        tmp_path / "ad",
        target_modules=["c_attn", "c_proj"] + ([] if dora else ["wte"]),
        fan_in_fan_out=True,
        use_dora=dora,
        seed=4,
    )
    merge(tiny_gpt2_dir, [adapter], tmp_path / "out", register=False)
    assert_same_weights(load_all(tmp_path / "out"), peft_merged(tiny_gpt2_dir, [(adapter, 1.0)]))


@pytest.mark.parametrize("blocks", ["whole", "small"])
def test_merge_several_weighted_adapters_matches_peft(
    blocks: str, tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if blocks == "small":
        monkeypatch.setattr("adapterhub.lora.merge._CHUNK_ELEMENTS", 64)
    a = factories.make_peft_adapter(tiny_llama_dir, tmp_path / "a", target_modules=["q_proj", "v_proj"], seed=5)
    b = factories.make_peft_adapter(
        tiny_llama_dir, tmp_path / "b", target_modules=["v_proj", "o_proj"], r=2, use_rslora=True, seed=6
    )
    c = factories.make_peft_adapter(tiny_llama_dir, tmp_path / "c", target_modules=["q_proj"], use_dora=True, seed=7)
    adapters = [(a, 0.7), (b, -0.4), (c, 1.0)]
    merge(tiny_llama_dir, adapters, tmp_path / "out", register=False)
    assert_same_weights(load_all(tmp_path / "out"), peft_merged(tiny_llama_dir, adapters))


def test_merge_bf16_within_bf16_rounding(tmp_path: Path, small_blocks: None) -> None:
    base = factories.build_tiny_llama(tmp_path / "base", dtype=torch.bfloat16)
    adapter = factories.make_peft_adapter(base, tmp_path / "ad", target_modules=["q_proj", "v_proj", "gate_proj"], seed=8)
    merge(base, [adapter], tmp_path / "out", register=False)
    ours = load_all(tmp_path / "out")
    ref = peft_merged(base, [(adapter, 1.0)])
    for k, t in ours.items():
        assert t.dtype == torch.bfloat16
        # PEFT rounds the delta to bf16 before adding, adapterhub rounds once: at most ~2 bf16 ulps apart
        tol = 2 * 2.0**-7 * ref[k].float().abs().clamp(min=1e-3)
        assert bool(((t.float() - ref[k].float()).abs() <= tol).all()), k


def test_sharded_output_loads_with_transformers_and_matches_peft_outputs(
    tiny_llama_dir: Path, llama_adapter_dir: Path, tmp_path: Path
) -> None:
    res = merge(tiny_llama_dir, [llama_adapter_dir], tmp_path / "out", max_shard_size="20KB", register=False)
    assert len(res.files) > 2 and "model.safetensors.index.json" in res.files
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(load_all(tiny_llama_dir))
    assert (tmp_path / "out" / "config.json").is_file()
    from peft import PeftModel

    ours = factories.load_model(tmp_path / "out")
    oracle = PeftModel.from_pretrained(factories.load_model(tiny_llama_dir), str(llama_adapter_dir)).eval()
    inputs = factories.sample_inputs(ours)
    torch.testing.assert_close(factories.model_output(ours, inputs), factories.model_output(oracle, inputs), rtol=1e-4, atol=1e-5)


def test_dtype_conversion_rewrites_config(tiny_llama_dir: Path, llama_adapter_dir: Path, tmp_path: Path) -> None:
    merge(tiny_llama_dir, [llama_adapter_dir], tmp_path / "out", dtype="bf16", register=False)
    assert all(t.dtype == torch.bfloat16 for t in load_all(tmp_path / "out").values())
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "bfloat16"


@pytest.mark.parametrize("prefix_on", ["base", "adapter"])
def test_checkpoint_prefix_is_resolved(prefix_on: str, minilm_dir: Path, minilm_adapter_dir: Path, tmp_path: Path) -> None:
    """A BertModel adapter on a checkpoint saved with `bert.` names, and a `bert.`-prefixed adapter on BertModel."""
    base_tensors = load_all(minilm_dir)
    adapter = minilm_adapter_dir
    base = minilm_dir
    if prefix_on == "base":
        base = tmp_path / "prefixed"
        base.mkdir()
        save_file(
            {f"bert.{k}": v.contiguous() for k, v in base_tensors.items()},
            str(base / "model.safetensors"),
            metadata={"format": "pt"},
        )
    else:
        adapter = tmp_path / "prefixed-adapter"
        adapter.mkdir()
        sd = load_file(str(minilm_adapter_dir / "adapter_model.safetensors"))
        save_file(
            {k.replace("base_model.model.", "base_model.model.bert."): v for k, v in sd.items()},
            str(adapter / "adapter_model.safetensors"),
        )
        (adapter / "adapter_config.json").write_text((minilm_adapter_dir / "adapter_config.json").read_text())
    merge(base, [adapter], tmp_path / "out", register=False)
    ours = {k.removeprefix("bert."): v for k, v in load_all(tmp_path / "out").items()}
    assert_same_weights(ours, peft_merged(minilm_dir, [(minilm_adapter_dir, 1.0)]))
    assert len(changed(ours, base_tensors)) == 12  # query + value in 6 layers


def test_resolve_name_map_prefers_identity_and_finds_prefixes() -> None:
    names = {"model.a.weight", "model.b.weight"}
    assert resolve_name_map(["model.a.weight"], names)("model.a.weight") == "model.a.weight"
    assert resolve_name_map(["a.weight", "b.weight"], names)("b.weight") == "model.b.weight"
    assert resolve_name_map(["x.model.a.weight"], names)("x.model.b.weight") == "model.b.weight"


def test_adapter_for_another_model_names_the_module(tiny_gpt2_dir: Path, llama_adapter_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(IncompatibleAdapter, match="q_proj"):
        merge(tiny_gpt2_dir, [llama_adapter_dir], tmp_path / "out", register=False)
    assert not (tmp_path / "out").exists()


def test_non_finite_result_names_adapter_and_module_and_leaves_nothing(
    tiny_llama_dir: Path, llama_adapter_dir: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    sd = load_file(str(llama_adapter_dir / "adapter_model.safetensors"))
    # finite factors whose product overflows float32: the adapter file is valid, the merged weight is not
    for k in sorted(sd):
        if "layers.1.self_attn.v_proj.lora_" in k:
            sd[k] = torch.full_like(sd[k], 1e20)
    save_file(sd, str(bad / "adapter_model.safetensors"))
    (bad / "adapter_config.json").write_text((llama_adapter_dir / "adapter_config.json").read_text())
    with pytest.raises(NonFiniteResult, match=r"layers\.1\.self_attn\.v_proj") as exc:
        merge(tiny_llama_dir, [llama_adapter_dir, bad], tmp_path / "out", register=False)
    assert exc.value.adapter == str(bad)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ah-tmp-")]


def test_modules_to_save_and_lora_bias_match_peft(tiny_llama_dir: Path, tmp_path: Path, small_blocks: None) -> None:
    # lora_bias needs a biased base layer: Qwen2's q/k/v projections have biases
    qwen = factories.build_tiny_qwen2(tmp_path / "qwen")
    adapter = factories.make_peft_adapter(
        qwen,
        tmp_path / "ad",
        target_modules=["q_proj", "v_proj"],
        lora_bias=True,
        modules_to_save=["lm_head"],
        seed=9,
        train_steps=2,
    )
    res = merge(qwen, [adapter], tmp_path / "out", register=False)
    ours = load_all(tmp_path / "out")
    assert_same_weights(ours, peft_merged(qwen, [(adapter, 1.0)]))
    base = load_all(qwen)
    assert "lm_head.weight" in changed(ours, base) and "model.layers.0.self_attn.q_proj.bias" in changed(ours, base)
    assert res.merged_tensors == 2 * 2 * 2 + 1  # q/v weight + bias in 2 layers, plus lm_head


def test_existing_output_is_refused(tiny_llama_dir: Path, llama_adapter_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    from adapterhub.errors import AlreadyExists

    with pytest.raises(AlreadyExists):
        merge(tiny_llama_dir, [llama_adapter_dir], tmp_path / "out", register=False)
    assert (tmp_path / "out" / "keep.txt").read_text() == "x"


def test_stream_writer_round_trip_and_order_check(tmp_path: Path) -> None:
    tensors = {"b": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3), "a": torch.ones(3), "e": torch.zeros(0, 4)}
    specs = [TensorSpec(k, {torch.bfloat16: "BF16", torch.float32: "F32"}[v.dtype], tuple(v.shape)) for k, v in tensors.items()]
    with open(tmp_path / "x.safetensors", "wb") as fh:
        w = StreamWriter(fh, specs)
        for k, v in tensors.items():
            w.write(k, v)
        w.close()
    back = load_file(str(tmp_path / "x.safetensors"))
    for k, v in tensors.items():
        assert torch.equal(back[k], v)
    src = model_tensors(tmp_path / "x.safetensors")
    assert torch.equal(read_tensor(src["b"]), tensors["b"])
    with open(tmp_path / "y.safetensors", "wb") as fh:
        w = StreamWriter(fh, specs)
        with pytest.raises(RuntimeError, match="expected tensor 'b'"):
            w.write("a", tensors["a"])


def test_parse_size() -> None:
    assert parse_size("2GB") == 2 * 10**9 and parse_size("1GiB") == 2**30 and parse_size("500kb") == 500_000
    with pytest.raises(UsageError):
        parse_size("lots")


def test_merge_never_holds_a_whole_modified_tensor(tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounded memory, checked structurally: no whole-tensor read, and every block within the block budget."""
    import adapterhub.lora.merge as merge_mod

    adapter = factories.make_peft_adapter(
        tiny_llama_dir, tmp_path / "ad", target_modules=["q_proj", "gate_proj", "embed_tokens"], use_dora=False, seed=30
    )
    monkeypatch.setattr(merge_mod, "_CHUNK_ELEMENTS", 256)
    monkeypatch.setattr(merge_mod, "read_tensor", lambda *a, **k: pytest.fail("merge read a whole tensor"))
    seen: list[int] = []
    real = merge_mod.read_row_chunks

    def spy(src, max_elements):  # type: ignore[no-untyped-def]
        for r0, r1, block in real(src, max_elements):
            seen.append(block.numel())
            yield r0, r1, block

    monkeypatch.setattr(merge_mod, "read_row_chunks", spy)
    merge(tiny_llama_dir, [adapter], tmp_path / "out", dtype="bf16", register=False)
    assert seen and max(seen) <= 256
    assert_same_weights(
        {k: v.float() for k, v in load_all(tmp_path / "out").items()}, peft_merged(tiny_llama_dir, [(adapter, 1.0)]), rtol=1e-2
    )
