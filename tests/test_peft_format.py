"""The reader against what PEFT really does: config fields, target matching, ranks/scaling, key names, layouts.

PEFT (installed version) is the oracle: the modules it wraps, the ranks and scalings it builds, and the keys it
saves for embeddings, DoRA, lora_bias, bias modes, modules_to_save and layers_to_transform.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from adapterhub.adapter_check import check_adapter
from adapterhub.errors import UnsupportedFeature
from adapterhub.peft_format import (
    CONFIG_NAME,
    LayerKind,
    LoraConfig,
    layer_index,
    normalize_key,
    parse_config,
    parse_key,
    read_config,
    read_layout,
)
from tests import factories

warnings.filterwarnings("ignore", module="peft")


def _peft(base_dir: Path, **kwargs: Any) -> torch.nn.Module:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    torch.manual_seed(0)
    return get_peft_model(factories.load_model(base_dir), PeftLoraConfig(init_lora_weights=False, **kwargs))


def _peft_layers(peft_model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {n.removeprefix("base_model.model."): m for n, m in peft_model.named_modules() if isinstance(m, LoraLayer)}


def _our_targets(base: torch.nn.Module, cfg: LoraConfig) -> set[str]:
    from transformers.pytorch_utils import Conv1D

    out_emb = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    return {
        name
        for name, mod in base.named_modules()
        if name and cfg.targets(name, is_linear=isinstance(mod, (torch.nn.Linear, Conv1D)), is_output_layer=mod is out_emb)
    }


TARGET_CASES: list[tuple[str, dict[str, Any]]] = [
    ("tiny_llama_dir", dict(target_modules=["q_proj", "v_proj"])),
    ("tiny_llama_dir", dict(target_modules=["self_attn.q_proj", "mlp.up_proj"])),
    ("tiny_llama_dir", dict(target_modules=["model.layers.1.self_attn.k_proj", "o_proj"])),
    ("tiny_llama_dir", dict(target_modules=r".*layers\.1\..*(q|v)_proj")),
    ("tiny_llama_dir", dict(target_modules="all-linear")),
    ("tiny_llama_dir", dict(target_modules=["q_proj", "down_proj"], layers_to_transform=[1], layers_pattern="layers")),
    ("tiny_llama_dir", dict(target_modules=["q_proj", "v_proj", "k_proj"], exclude_modules=["k_proj"])),
    ("tiny_llama_dir", dict(target_modules=["q_proj", "embed_tokens"], exclude_modules=r".*layers\.0\.self_attn\.q_proj")),
    ("tiny_gpt2_dir", dict(target_modules=["c_attn", "c_fc"], fan_in_fan_out=True, layers_to_transform=[0])),
    ("tiny_gpt2_dir", dict(target_modules="all-linear", fan_in_fan_out=True)),
    ("minilm_dir", dict(target_modules=["query", "dense"], modules_to_save=["pooler"])),
    ("minilm_dir", dict(target_modules=["attention.self.query", "value"], layers_to_transform=[2, 5])),
]


@pytest.mark.parametrize(("base_name", "kwargs"), TARGET_CASES, ids=[str(i) for i in range(len(TARGET_CASES))])
def test_targets_match_the_modules_peft_wraps(base_name: str, kwargs: dict[str, Any], request: pytest.FixtureRequest) -> None:
    base_dir: Path = request.getfixturevalue(base_name)
    peft_model = _peft(base_dir, **kwargs)
    expected = set(_peft_layers(peft_model))
    assert expected, "PEFT wrapped nothing: the case is meaningless"
    cfg = parse_config(peft_model.peft_config["default"].to_dict() | {"target_modules": kwargs["target_modules"]}, "t")
    assert _our_targets(factories.load_model(base_dir), cfg) == expected


def test_ranks_alphas_and_scalings_match_peft(tiny_llama_dir: Path) -> None:
    kwargs = dict(
        target_modules=["q_proj", "k_proj", "v_proj", "up_proj"], r=4, lora_alpha=12, use_rslora=True,
        rank_pattern={"v_proj": 2, r"layers\.1\.self_attn\.q_proj": 6, "^model.layers.0.mlp.up_proj": 3},
        alpha_pattern={"k_proj": 5, "up_proj": 7.5},
    )  # fmt: skip
    peft_model = _peft(tiny_llama_dir, **kwargs)
    cfg = parse_config(json.loads(json.dumps(peft_model.peft_config["default"].to_dict(), default=list)), "t")
    layers = _peft_layers(peft_model)
    assert len({layer.r["default"] for layer in layers.values()}) >= 3
    for name, layer in layers.items():
        assert cfg.rank_for(name) == layer.r["default"], name
        assert cfg.alpha_for(name) == layer.lora_alpha["default"], name
        assert cfg.scaling_for(name) == pytest.approx(layer.scaling["default"], rel=1e-12), name


def test_config_reads_the_fields_people_use(tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    folder = factories.make_peft_adapter(
        tiny_gpt2_dir, tmp_path / "a", target_modules=["c_attn", "c_proj"], fan_in_fan_out=True, r=6, lora_alpha=3,
        use_rslora=True, rank_pattern={"c_proj": 2}, alpha_pattern={"c_proj": 1}, bias="lora_only", use_dora=True,
        layers_to_transform=[1], modules_to_save=["ln_f"], task_type="CAUSAL_LM", lora_bias=False,
    )  # fmt: skip
    raw = json.loads((folder / CONFIG_NAME).read_text())
    cfg = read_config(folder)
    assert (cfg.r, cfg.lora_alpha, cfg.use_rslora, cfg.fan_in_fan_out, cfg.bias, cfg.use_dora) == (
        6,
        3,
        True,
        True,
        "lora_only",
        True,
    )
    assert cfg.rank_pattern == {"c_proj": 2} and cfg.alpha_pattern == {"c_proj": 1}
    assert sorted(cfg.target_modules) == ["c_attn", "c_proj"] and cfg.layers_to_transform == [1]
    assert cfg.modules_to_save == ["ln_f"] and cfg.task_type == "CAUSAL_LM"
    assert cfg.base_model_name_or_path == str(tiny_gpt2_dir) and cfg.revision is None
    assert cfg.peft_version == raw["peft_version"]
    assert {k: cfg.to_json_dict().get(k) for k in raw} == raw  # every field, known or not, survives
    layout = read_layout(folder)
    assert set(layout.modules) == {"transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_proj", "transformer.h.1.mlp.c_proj"}
    assert layout.modules["transformer.h.1.attn.c_proj"].rank == 2 and layout.modules["transformer.h.1.attn.c_attn"].rank == 6
    assert sorted(layout.overrides) == [
        "transformer.h.1.attn.c_attn.bias", "transformer.h.1.attn.c_proj.bias", "transformer.h.1.mlp.c_proj.bias",
        "transformer.ln_f.bias", "transformer.ln_f.weight",
    ]  # fmt: skip


def test_odd_values_in_fields_adapterhub_does_not_use_are_kept() -> None:
    raw = {"r": 4, "revision": 12, "task_type": ["x"], "inference_mode": "sometimes", "peft_version": 0.2,
           "future": {"a": [1, None]}, "target_modules": ["q"]}  # fmt: skip
    cfg = parse_config(raw, "t")
    assert cfg.revision is None and cfg.task_type is None and cfg.inference_mode is True
    assert {k: cfg.to_json_dict()[k] for k in raw} == raw


@pytest.mark.parametrize(
    ("raw", "expected"),
    [({"target_modules": ["q_proj", "v_proj"]}, ["q_proj", "v_proj"]), ({"target_modules": r".*\.q_proj"}, r".*\.q_proj"),
     ({"target_modules": "all-linear"}, "all-linear"), ({"target_modules": None}, None)],
)  # fmt: skip
def test_target_module_spellings(raw: dict, expected: object) -> None:
    assert parse_config(raw, "t").target_modules == expected


def test_peft_type_is_case_insensitive_and_defaults_to_lora() -> None:
    assert parse_config({"peft_type": "lora"}, "t").r == 8
    assert parse_config({}, "t").peft_type == "LORA"
    with pytest.raises(UnsupportedFeature):
        parse_config({"peft_type": "IA3"}, "t")


@pytest.mark.parametrize(
    ("option", "value"),
    [("alora_invocation_tokens", [5, 6]), ("layer_replication", [[0, 2]]), ("target_parameters", ["experts.w"]),
     ("use_qalora", True), ("arrow_config", {"top_k": 2})],
)  # fmt: skip
def test_options_that_change_the_maths_are_unsupported(
    llama_adapter_dir: Path, tmp_path: Path, option: str, value: object
) -> None:
    import shutil

    folder = Path(shutil.copytree(llama_adapter_dir, tmp_path / "a"))
    cfg = json.loads((folder / CONFIG_NAME).read_text()) | {option: value}
    (folder / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedFeature, match=option):
        read_layout(folder)
    assert read_layout(folder, strict=False).unsupported
    # the same option switched off (as PEFT writes it) is fine
    (folder / CONFIG_NAME).write_text(json.dumps(cfg | {option: False if option == "use_qalora" else None}))
    assert read_layout(folder).problems == []


@pytest.mark.parametrize(
    ("key", "normal"),
    [
        ("base_model.model.m.q.lora_A.weight", "base_model.model.m.q.lora_A.weight"),
        ("base_model.model.m.q.lora_A.default.weight", "base_model.model.m.q.lora_A.weight"),
        ("base_model.model.m.q.lora_B.other_name.bias", "base_model.model.m.q.lora_B.bias"),
        ("base_model.model.emb.lora_embedding_A.default", "base_model.model.emb.lora_embedding_A"),
        ("base_model.model.m.q.lora_magnitude_vector.default.weight", "base_model.model.m.q.lora_magnitude_vector.weight"),
        ("base_model.model.m.q.lora_magnitude_vector", "base_model.model.m.q.lora_magnitude_vector"),
        ("base_model.model.classifier.modules_to_save.default.weight", "base_model.model.classifier.weight"),
        ("base_model.model.m.q.base_layer.bias", "base_model.model.m.q.bias"),
        ("base_model.model.default.lora_A.weight", "base_model.model.default.lora_A.weight"),
    ],
)
def test_normalize_key(key: str, normal: str) -> None:
    assert normalize_key(key) == normal


def test_normalize_key_matches_peft_saving(tiny_llama_dir: Path) -> None:
    """The in-model names PEFT holds (with `.default`) normalise to exactly the keys PEFT's own save produces."""
    from peft import get_peft_model_state_dict

    model = _peft(tiny_llama_dir, target_modules=["q_proj", "embed_tokens"], use_dora=True, modules_to_save=["lm_head"])
    saved = {parse_key(normalize_key(k)) for k in get_peft_model_state_dict(model) if ".base_layer." not in k}
    in_model = {parse_key(normalize_key(k)) for k in model.state_dict() if ".default." in k or k.endswith(".default")}
    assert in_model == saved
    assert {p.part for p in saved} == {"A", "B", "magnitude", "override"}


def test_parse_key() -> None:
    p = parse_key("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")
    assert (p.module, p.part, p.kind) == ("model.layers.0.self_attn.q_proj", "B", LayerKind.LINEAR)
    p = parse_key("base_model.model.model.embed_tokens.lora_embedding_A")
    assert (p.module, p.part, p.kind) == ("model.embed_tokens", "A", LayerKind.EMBEDDING)
    p = parse_key("base_model.model.classifier.weight")
    assert (p.part, p.param) == ("override", "classifier.weight")
    for foreign in (
        "base_model.model.q.lora_E",
        "base_model.model.q.hada_w1_a",
        "base_model.model.e.token_adapter.trainable_tokens_delta",
    ):
        with pytest.raises(UnsupportedFeature):
            parse_key(foreign)


def test_layer_index_follows_peft() -> None:
    assert layer_index("model.layers.3.self_attn.q_proj", None) == 3
    assert layer_index("model.layers.1.experts.7.w1", None) == 1  # first index, not the expert's
    assert layer_index("transformer.h.0.attn.c_attn", "h") == 0
    assert layer_index("encoder.layer.4.attention.self.query", ["blocks", "layer"]) == 4
    assert layer_index("lm_head", None) is None


def test_layout_of_each_peft_variant(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """What PEFT saves for embeddings, DoRA (Linear and Embedding), lora_bias and modules_to_save, as read."""
    folder = factories.make_peft_adapter(
        tiny_llama_dir, tmp_path / "a", target_modules=["embed_tokens", "q_proj"], use_dora=True, modules_to_save=["lm_head"],
    )  # fmt: skip
    layout = read_layout(folder)
    emb = layout.modules["model.embed_tokens"]
    assert emb.kind is LayerKind.EMBEDDING and emb.a.shape == (4, 128) and emb.b.shape == (32, 4)
    assert emb.magnitude is not None and emb.magnitude.shape == (32,)
    assert emb.base_weight_shape(False) == (128, 32)
    q = layout.modules["model.layers.0.self_attn.q_proj"]
    assert q.kind is LayerKind.LINEAR and q.magnitude.shape == (32,)
    assert sorted(layout.overrides) == ["lm_head.weight", "model.embed_tokens.weight"]
    report = check_adapter(folder)
    assert report.ok, report.messages()
    assert report.method == "dora" and report.overrides == {
        "lm_head.weight": "modules_to_save",
        "model.embed_tokens.weight": "embedding",
    }
    assert report.ranks["model.embed_tokens"] == 4 and report.target_modules == ["embed_tokens", "q_proj"]

    bias_folder = factories.make_peft_adapter(tiny_llama_dir, tmp_path / "b", target_modules=["o_proj"], lora_bias=True)
    o = read_layout(bias_folder).modules["model.layers.1.self_attn.o_proj"]
    assert o.b_bias is not None and o.b_bias.shape == (32,)


def test_base_weight_shapes_fit_the_real_modules(tiny_gpt2_dir: Path, minilm_adapter_dir: Path, gpt2_adapter_dir: Path) -> None:
    gpt2 = factories.load_model(tiny_gpt2_dir)
    for name, lay in read_layout(gpt2_adapter_dir).modules.items():
        assert lay.base_weight_shape(True) == tuple(gpt2.get_submodule(name).weight.shape)
    minilm = factories.load_model(factories.minilm_dir())
    for name, lay in read_layout(minilm_adapter_dir).modules.items():
        assert lay.base_weight_shape(False) == tuple(minilm.get_submodule(name).weight.shape)


def test_check_adapter_on_a_good_adapter(minilm_adapter_dir: Path) -> None:
    report = check_adapter(minilm_adapter_dir)
    assert report.ok and report.problems == []
    assert report.method == "lora" and report.target_modules == ["query", "value"] and report.dtypes == ["F32"]
    assert len(report.ranks) == 12 and set(report.ranks.values()) == {4} and report.tensors == 24
    assert json.loads(report.model_dump_json())["ok"] is True
