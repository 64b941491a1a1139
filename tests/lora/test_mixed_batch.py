"""Mixed-adapter batches: each row with its own adapter equals running rows alone, and PEFT's `adapter_names=`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from adapterhub.errors import AdapterNotFound, UsageError
from adapterhub.lora.attach import active_adapters, attach, fuse, set_active, unfuse
from adapterhub.lora.routing import route
from tests import factories
from tests.lora.helpers import assert_close, peft_model

ADAPTERS: dict[str, dict[str, dict[str, Any]]] = {
    "llama": {
        "plain": {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
        "pattern": {"target_modules": ["q_proj", "v_proj"], "rank_pattern": {"v_proj": 6}, "use_rslora": True},
        "head": {"target_modules": ["q_proj"], "modules_to_save": ["lm_head"]},
        "emb": {"target_modules": ["embed_tokens", "o_proj"]},
        "dora": {"target_modules": ["q_proj", "down_proj"], "use_dora": True},
    },
    "gpt2": {
        "conv": {"target_modules": ["c_attn", "c_proj", "c_fc"], "fan_in_fan_out": True},
        "emb": {"target_modules": ["wte", "c_attn"], "fan_in_fan_out": True},
        "dora": {"target_modules": ["c_attn"], "fan_in_fan_out": True, "use_dora": True},
    },
    "minilm": {
        "plain": {"target_modules": ["query", "value"]},
        "bias": {"target_modules": ["key", "dense"], "bias": "all"},  # trained biases: LayerNorm overrides too
        "dora": {"target_modules": ["query", "value"], "use_dora": True},
    },
}
BASES = {"llama": "tiny_llama_dir", "gpt2": "tiny_gpt2_dir", "minilm": "minilm_dir"}


@pytest.fixture(scope="module", params=list(ADAPTERS))
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    base = request.getfixturevalue(BASES[request.param])
    root = tmp_path_factory.mktemp(f"mixed-{request.param}")
    folders = {
        name: factories.make_peft_adapter(base, root / name, seed=11 + i, train_steps=3, **kw)
        for i, (name, kw) in enumerate(ADAPTERS[request.param].items())
    }
    return base, folders


def _per_row(model: torch.nn.Module, inputs: dict[str, torch.Tensor], names: list[str | None]) -> torch.Tensor:
    """The reference: every row alone, with its adapter the only active one."""
    outs = []
    for i, n in enumerate(names):
        set_active(model, n)
        outs.append(factories.model_output(model, {k: v[i : i + 1] for k, v in inputs.items()}))
    return torch.cat(outs)


def test_route_equals_rows_alone_and_peft(family: tuple[Path, dict[str, Path]]) -> None:
    base_dir, folders = family
    model = factories.load_model(base_dir)
    for name, folder in folders.items():
        attach(model, folder, name, activate=False)
    names: list[str | None] = [*folders, None, *reversed(folders)]  # non-contiguous groups and a base row
    inputs = factories.sample_inputs(model, batch=len(names))
    set_active(model, "dora")
    with route(model, names):
        got = factories.model_output(model, inputs)
    assert active_adapters(model) == {"dora": 1.0}, "routing must not change the activation"
    assert_close(got, _per_row(model, inputs, names))

    # PEFT refuses DoRA in mixed batches, and its modules_to_save wrapper fails on rows of adapters that do not
    # replace that module (or on a LayerNorm); those are covered above, against rows run alone.
    plain = [n if n not in PEFT_CANNOT_MIX else None for n in names]
    assert_close(_routed(model, inputs, plain), _peft_mixed(base_dir, folders, inputs, plain))
    if "head" in folders:  # modules_to_save alone with base rows is something PEFT can mix
        heads = ["head", None, None, "head", "head", None, "head", None, "head", None, None][: len(names)]
        assert_close(_routed(model, inputs, heads), _peft_mixed(base_dir, folders, inputs, heads))


PEFT_CANNOT_MIX = {"dora", "head", "bias"}


def _routed(model: torch.nn.Module, inputs: dict[str, torch.Tensor], names: list[str | None]) -> torch.Tensor:
    with route(model, names):
        return factories.model_output(model, inputs)


def _peft_mixed(
    base_dir: Path, folders: dict[str, Path], inputs: dict[str, torch.Tensor], names: list[str | None]
) -> torch.Tensor:
    pm = peft_model(base_dir, {n: folders[n] for n in dict.fromkeys(names) if n is not None})
    with torch.no_grad():
        out = pm(**inputs, adapter_names=[n or "__base__" for n in names])
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def test_contiguous_groups_and_all_base(family: tuple[Path, dict[str, Path]]) -> None:
    base_dir, folders = family
    model = factories.load_model(base_dir)
    first = next(iter(folders))
    attach(model, folders[first], first)
    names: list[str | None] = [first, first, None, None]
    inputs = factories.sample_inputs(model, batch=4, seed=3)
    with route(model, names):
        got = factories.model_output(model, inputs)
    assert_close(got, _per_row(model, inputs, names))
    set_active(model, None)
    bare = factories.model_output(model, inputs)
    set_active(model, first)
    with route(model, [None] * 4):
        assert torch.equal(factories.model_output(model, inputs), bare)


def test_route_refusals(tiny_llama_dir: Path, tmp_path: Path) -> None:
    folder = factories.make_peft_adapter(tiny_llama_dir, tmp_path / "a", target_modules=["q_proj"])
    model = factories.load_model(tiny_llama_dir)
    attach(model, folder, "a")
    inputs = factories.sample_inputs(model, batch=2)
    with pytest.raises(AdapterNotFound):
        with route(model, ["a", "zzz"]):
            pass
    with pytest.raises(UsageError, match="3 rows"):
        with route(model, ["a", None, "a"]):
            factories.model_output(model, inputs)
    # The failed block left no plan behind: a plain forward works and equals the active adapter's.
    assert_close(factories.model_output(model, inputs), _per_row(model, inputs, ["a", "a"]))
    fuse(model)
    with pytest.raises(UsageError, match="fused"):
        with route(model, ["a", None]):
            pass
    unfuse(model)


def test_plain_lora_rows_take_the_batched_path_and_equal_the_loop(
    family: tuple[Path, dict[str, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows of several plain LoRA adapters of one rank are computed with two batched matmuls per layer (each row with
    its own A and B); the result equals the per-adapter loop it replaces, and that path is really taken."""
    from adapterhub.lora import layers

    base_dir, folders = family
    plain = [n for n in folders if n in ("plain", "conv", "emb")][:2]
    if len(plain) < 2:
        plain = [n for n in folders if n == "plain"] * 2
    model = factories.load_model(base_dir)
    for name in dict.fromkeys(plain):
        attach(model, folders[name], name, activate=False)
    names: list[str | None] = [plain[0], None, plain[1], plain[0], None, plain[1]]
    inputs = factories.sample_inputs(model, batch=len(names))
    taken: list[bool] = []
    real = layers.LoraLinear._batched_lora

    def spy(self: layers.LoraLinear, plan: Any, x: torch.Tensor) -> torch.Tensor | None:
        got = real(self, plan, x)
        taken.append(got is not None)
        return got

    monkeypatch.setattr(layers.LoraLinear, "_batched_lora", spy)
    fast = _routed(model, inputs, names)
    monkeypatch.setattr(layers.LoraLinear, "_batched_lora", lambda self, plan, x: None)
    loop = _routed(model, inputs, names)
    assert_close(fast, loop)
    assert_close(fast, _per_row(model, inputs, names))
    if len(set(plain)) == 2:
        assert any(taken), "no layer took the batched path"
