"""attach / detach / set_active against PEFT as the oracle, on real MiniLM weights, tiny Llama and tiny GPT-2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from adapterhub.errors import AdapterHubError, AlreadyExists, IncompatibleAdapter, UnsupportedFeature, UsageError
from adapterhub.lora.attach import activation, active_adapters, attach, detach, list_adapters, set_active
from adapterhub.peft_weights import load_adapter
from tests import factories
from tests.lora.helpers import assert_close, assert_restored, peft_activate, peft_model, snapshot

LLAMA_ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# name -> (base fixture, PEFT LoraConfig kwargs); every adapter is trained 3 Adam steps with PEFT.
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama-plain-all-linear": ("tiny_llama_dir", {"target_modules": LLAMA_ALL}),
    "llama-rslora": ("tiny_llama_dir", {"target_modules": ["q_proj", "v_proj"], "r": 8, "lora_alpha": 16, "use_rslora": True}),
    "llama-rank-alpha-pattern": (
        "tiny_llama_dir",
        {
            "target_modules": ["q_proj", "v_proj", "down_proj"],
            "rank_pattern": {"q_proj": 2, "layers.1.self_attn.v_proj": 6},
            "alpha_pattern": {"down_proj": 3},
        },
    ),
    "llama-dora": ("tiny_llama_dir", {"target_modules": ["q_proj", "v_proj", "down_proj"], "use_dora": True}),
    "llama-modules-to-save": ("tiny_llama_dir", {"target_modules": ["q_proj"], "modules_to_save": ["lm_head"]}),
    "llama-embedding": ("tiny_llama_dir", {"target_modules": ["embed_tokens", "q_proj"]}),
    "gpt2-conv1d": ("tiny_gpt2_dir", {"target_modules": ["c_attn", "c_proj", "c_fc"], "fan_in_fan_out": True}),
    "gpt2-dora-conv1d": ("tiny_gpt2_dir", {"target_modules": ["c_attn", "c_fc"], "fan_in_fan_out": True, "use_dora": True}),
    "gpt2-embedding": ("tiny_gpt2_dir", {"target_modules": ["wte", "c_attn"], "fan_in_fan_out": True}),
    "minilm-dora-rslora": ("minilm_dir", {"target_modules": ["query", "value", "dense"], "use_dora": True, "use_rslora": True}),
    "minilm-bias-all": ("minilm_dir", {"target_modules": ["query", "value"], "bias": "all"}),
    "minilm-lora-bias": ("minilm_dir", {"target_modules": ["query", "key"], "lora_bias": True}),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> dict[str, tuple[Path, Path]]:
    """Lazily build (base dir, adapter dir) per case, once per module."""

    class Lazy(dict):  # type: ignore[type-arg]
        def __missing__(self, case: str) -> tuple[Path, Path]:
            fixture, kwargs = CASES[case]
            base = request.getfixturevalue(fixture)
            folder = factories.make_peft_adapter(base, tmp_path_factory.mktemp(case) / case, seed=7, train_steps=3, **kwargs)
            self[case] = (base, folder)
            return self[case]

    return Lazy()


@pytest.mark.parametrize("case", list(CASES))
def test_matches_peft_then_detach_restores_exactly(case: str, built: dict[str, tuple[Path, Path]]) -> None:
    base_dir, folder = built[case]
    model = factories.load_model(base_dir)
    inputs = factories.sample_inputs(model)
    bare = factories.model_output(model, inputs)
    snap = snapshot(model)

    name = attach(model, folder)
    assert name == folder.name and list_adapters(model) == [name] and active_adapters(model) == {name: 1.0}
    got = factories.model_output(model, inputs)
    want = factories.model_output(peft_model(base_dir, {"x": folder}), inputs)
    assert_close(got, want)
    assert (got - bare).abs().max() > 1e-3, "the adapter must change the output for the comparison to mean anything"
    # The base's parameters: same storage, unchanged, frozen.
    params = dict(model.named_parameters())
    for key, ptr in snap["ptrs"].items():  # type: ignore[attr-defined]
        p = params.get(_wrapped_key(key, params))
        if p is not None:
            assert p.data_ptr() == ptr and not p.requires_grad
    assert all(not p.requires_grad for p in model.parameters())

    detach(model)
    assert_restored(model, snap)
    assert torch.equal(factories.model_output(model, inputs), bare)


def _wrapped_key(key: str, params: dict[str, torch.nn.Parameter]) -> str:
    """Where a base parameter's name lives while its module is wrapped (`x.weight` -> `x.base_layer.weight`)."""
    if key in params:
        return key
    mod, _, leaf = key.rpartition(".")
    return f"{mod}.base_layer.{leaf}"


# --- several adapters ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_llama(built: dict[str, tuple[Path, Path]]) -> tuple[Path, Path, Path]:
    base, a = built["llama-plain-all-linear"]
    _, b = built["llama-rank-alpha-pattern"]
    return base, a, b


def test_several_resident_switch_and_weighted_mix_match_peft(
    two_llama: tuple[Path, Path, Path], built: dict[str, tuple[Path, Path]]
) -> None:
    base_dir, a_dir, b_dir = two_llama
    d_dir = built["llama-dora"][1]
    model = factories.load_model(base_dir)
    inputs = factories.sample_inputs(model)
    bare = factories.model_output(model, inputs)
    attach(model, a_dir, "a")
    attach(model, b_dir, "b", activate=False)
    attach(model, d_dir, "d", activate=False)
    assert list_adapters(model) == ["a", "b", "d"] and active_adapters(model) == {"a": 1.0}
    pm = peft_model(base_dir, {"a": a_dir, "b": b_dir, "d": d_dir})

    # A weight scales the adapter's delta (PEFT's set_scale), also for DoRA, where it enters the norm too. With DoRA
    # among several, order matters: DoRA rescales the output so far, as in PEFT.
    cases = [(["a"], None), (["b"], None), (["a", "b"], None), (["a", "b"], [0.7, -0.3]), (["d"], [0.6]),
             (["a", "d"], [1.0, 0.5]), (["d", "a"], [1.0, 0.5])]  # fmt: skip
    for names, weights in cases:
        set_active(model, names, weights)
        peft_activate(pm, names, weights)
        assert_close(factories.model_output(model, inputs), factories.model_output(pm, inputs))

    set_active(model, None)
    assert torch.equal(factories.model_output(model, inputs), bare), "no active adapter must be the bare base, exactly"


def test_activation_context_restores_previous(two_llama: tuple[Path, Path, Path]) -> None:
    base_dir, a_dir, b_dir = two_llama
    model = factories.load_model(base_dir)
    inputs = factories.sample_inputs(model)
    attach(model, a_dir, "a")
    attach(model, b_dir, "b", weight=0.5, activate=False)
    only_a = factories.model_output(model, inputs)
    with activation(model, "b"):
        assert active_adapters(model) == {"b": 0.5}  # the weight given at attach is the default
        inside = factories.model_output(model, inputs)
    assert active_adapters(model) == {"a": 1.0}
    assert torch.equal(factories.model_output(model, inputs), only_a)
    set_active(model, "b", 0.5)
    assert torch.equal(factories.model_output(model, inputs), inside)
    set_active(model, "b", 1.0)
    assert not torch.allclose(factories.model_output(model, inputs), inside), "the weight must matter"


def test_detach_one_keeps_the_other(two_llama: tuple[Path, Path, Path]) -> None:
    base_dir, a_dir, b_dir = two_llama
    model = factories.load_model(base_dir)
    inputs = factories.sample_inputs(model)
    snap = snapshot(model)
    attach(model, a_dir, "a")
    attach(model, b_dir, "b")
    b_alone = factories.model_output(model, inputs)
    set_active(model, ["a", "b"])
    detach(model, "a")
    assert list_adapters(model) == ["b"] and active_adapters(model) == {"b": 1.0}
    assert torch.equal(factories.model_output(model, inputs), b_alone)
    detach(model, "b")
    assert_restored(model, snap)


def test_model_to_float64_moves_adapters(two_llama: tuple[Path, Path, Path]) -> None:
    base_dir, a_dir, _ = two_llama
    model = factories.load_model(base_dir)
    inputs = factories.sample_inputs(model)
    attach(model, a_dir, "a")
    model.double()
    pm = peft_model(base_dir, {"a": a_dir}).double()
    assert_close(factories.model_output(model, inputs), factories.model_output(pm, inputs), tol=1e-9)


# --- refusals: the model is untouched ------------------------------------------------------------------------


def _assert_refused(model: torch.nn.Module, call: Any, err: type[Exception], match: str) -> None:
    snap = snapshot(model)
    with pytest.raises(err, match=match):
        call()
    assert_restored(model, snap)


def test_wrong_base_is_refused_before_any_change(built: dict[str, tuple[Path, Path]], tiny_llama_dir: Path) -> None:
    _, gpt2_folder = built["gpt2-conv1d"]
    model = factories.load_model(tiny_llama_dir)
    _assert_refused(
        model, lambda: attach(model, gpt2_folder), IncompatibleAdapter, "transformer.h.0.attn.c_attn is not in the model"
    )


def test_failed_attach_leaves_resident_adapter_working(
    two_llama: tuple[Path, Path, Path], built: dict[str, tuple[Path, Path]]
) -> None:
    base_dir, a_dir, _ = two_llama
    model = factories.load_model(base_dir)
    inputs = factories.sample_inputs(model)
    attach(model, a_dir, "a")
    before = factories.model_output(model, inputs)
    keys = list(model.state_dict())
    with pytest.raises(IncompatibleAdapter):
        attach(model, built["gpt2-conv1d"][1])
    assert list_adapters(model) == ["a"] and list(model.state_dict()) == keys
    assert torch.equal(factories.model_output(model, inputs), before)


def test_missing_module_and_bad_shape_are_refused(two_llama: tuple[Path, Path, Path]) -> None:
    base_dir, a_dir, _ = two_llama
    model = factories.load_model(base_dir)
    missing = load_adapter(a_dir)
    some = next(iter(missing.modules.values()))
    missing.modules["model.layers.9.self_attn.q_proj"] = some  # after valid modules: proves nothing partial happens
    _assert_refused(
        model, lambda: attach(model, missing, "m"), IncompatibleAdapter, "model.layers.9.self_attn.q_proj is not in the model"
    )

    bad = load_adapter(a_dir)
    path, m = sorted(bad.modules.items())[-1]
    m.lora_A = torch.zeros(m.rank, m.lora_A.shape[1] + 1)
    _assert_refused(model, lambda: attach(model, bad, "s"), IncompatibleAdapter, f"module {path}: adapter has A")

    bad_override = load_adapter(a_dir)
    bad_override.overrides["lm_head.weight"] = torch.zeros(3, 3)
    _assert_refused(model, lambda: attach(model, bad_override, "o"), IncompatibleAdapter, r"lm_head.weight: adapter has \[3, 3\]")


class _ConvNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.norm = torch.nn.LayerNorm(4)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.conv(x).mean(dim=(2, 3))))


def test_conv2d_lora_is_refused(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    folder = tmp_path / "conv"
    get_peft_model(_ConvNet(), LoraConfig(target_modules=["conv", "head"], r=2)).save_pretrained(folder)
    model = _ConvNet()
    _assert_refused(model, lambda: attach(model, folder), UnsupportedFeature, "Conv2d")
    # The same refusal for factors already in memory that name a Conv2d / LayerNorm module.
    head = _ConvNet()
    peft = load_adapter(_linear_only(tmp_path, head))
    lm = peft.modules.pop("head")
    lm.module = "norm"
    peft.modules["norm"] = lm
    _assert_refused(head, lambda: attach(head, peft, "n"), UnsupportedFeature, "LayerNorm")


def _linear_only(tmp_path: Path, model: torch.nn.Module) -> Path:
    from peft import LoraConfig, get_peft_model

    folder = tmp_path / "head"
    get_peft_model(_ConvNet(), LoraConfig(target_modules=["head"], r=2)).save_pretrained(folder)
    return folder


def test_dora_on_embedding_is_refused(tiny_llama_dir: Path, tmp_path: Path) -> None:
    folder = factories.make_peft_adapter(tiny_llama_dir, tmp_path / "de", target_modules=["embed_tokens"], use_dora=True)
    model = factories.load_model(tiny_llama_dir)
    _assert_refused(model, lambda: attach(model, folder), UnsupportedFeature, "DoRA on an Embedding")


def test_name_clash_bad_weight_and_unknown_reference(two_llama: tuple[Path, Path, Path]) -> None:
    base_dir, a_dir, _ = two_llama
    model = factories.load_model(base_dir)
    attach(model, a_dir, "a")
    with pytest.raises(AlreadyExists):
        attach(model, a_dir, "a")
    with pytest.raises(UsageError):
        attach(model, a_dir, "nan", weight=float("nan"))
    with pytest.raises(UsageError):
        set_active(model, ["a", "a"])
    with pytest.raises(AdapterHubError):
        attach(model, "nobody/nothing@1")
    assert list_adapters(model) == ["a"]


def test_registry_reference_resolves_and_names_the_adapter(two_llama: tuple[Path, Path, Path]) -> None:
    from adapterhub.store.registry import Registry

    base_dir, a_dir, _ = two_llama
    Registry().add(a_dir, "team/qa", "qa")
    model = factories.load_model(base_dir)
    inputs = factories.sample_inputs(model)
    assert attach(model, "team/qa@1") == "team/qa@1"
    via_ref = factories.model_output(model, inputs)
    detach(model)
    attach(model, a_dir)
    assert torch.equal(factories.model_output(model, inputs), via_ref)
