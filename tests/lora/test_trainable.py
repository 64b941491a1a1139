"""Trainable adapters: PEFT's init and target choice, only adapter params train, gradients and saved files match PEFT."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from adapterhub.errors import UnsupportedFeature, UsageError
from adapterhub.lora.attach import attach, detach, runtime_state
from adapterhub.lora.trainable import add_trainable, save_attached
from tests import factories
from tests.lora.helpers import assert_close, peft_model


def _loss(model: torch.nn.Module, seed: int) -> torch.Tensor:
    out = model(**factories.sample_inputs(model, batch=4, seq=8, seed=seed))
    target = out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
    return target.float().pow(2).mean()


def _train(model: torch.nn.Module, steps: int) -> None:
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(steps):
        loss = _loss(model, 100 + step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def test_init_targets_and_frozen_base_match_peft(tiny_llama_dir: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    model = factories.load_model(tiny_llama_dir)
    inputs = factories.sample_inputs(model)
    bare = factories.model_output(model, inputs)
    add_trainable(model, "t", r=4, lora_alpha=8, target_modules="all-linear")

    pm = get_peft_model(factories.load_model(tiny_llama_dir), LoraConfig(r=4, target_modules="all-linear"))
    peft_targets = {n.removeprefix("base_model.model.") for n, m in pm.named_modules() if isinstance(m, LoraLayer)}
    assert set(runtime_state(model).wrappers) == peft_targets  # type: ignore[union-attr]

    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A__" in n or ".lora_B__" in n for n in trainable)
    assert len(trainable) == 2 * len(peft_targets)
    for w in runtime_state(model).wrappers.values():  # type: ignore[union-attr]
        s = w._slots["t"]
        fan_in = s.A.shape[1]
        assert torch.count_nonzero(s.B) == 0 and s.A.abs().max() <= 1 / math.sqrt(fan_in)  # kaiming_uniform(a=√5)
        assert s.A.std() > 0.2 / math.sqrt(fan_in)
    assert torch.equal(factories.model_output(model, inputs), bare), "B = 0: a fresh adapter changes nothing"


CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama-all-linear-rslora-pattern": (
        "tiny_llama_dir",
        {
            "r": 4,
            "lora_alpha": 8,
            "target_modules": "all-linear",
            "use_rslora": True,
            "rank_pattern": {"down_proj": 2},
            "alpha_pattern": {"q_proj": 3},
        },
    ),
    "llama-embedding-head": (
        "tiny_llama_dir",
        {"r": 4, "target_modules": ["embed_tokens", "v_proj"], "modules_to_save": ["lm_head"]},
    ),
    "gpt2-conv1d": ("tiny_gpt2_dir", {"r": 4, "target_modules": ["c_attn", "c_fc"]}),
    "minilm": ("minilm_dir", {"r": 4, "target_modules": ["query", "value"], "lora_dropout": 0.1}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_train_save_then_peft_and_attach_give_same_outputs(case: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    fixture, kwargs = CASES[case]
    base_dir = request.getfixturevalue(fixture)
    model = factories.load_model(base_dir)
    inputs = factories.sample_inputs(model)
    bare = factories.model_output(model, inputs)
    torch.manual_seed(0)
    add_trainable(model, "t", **kwargs)
    _train(model, steps=3)
    trained = factories.model_output(model, inputs)
    assert (trained - bare).abs().max() > 1e-3, "training must change the outputs for the comparison to mean anything"

    folder = save_attached(model, "t", tmp_path / "saved")
    assert_close(factories.model_output(peft_model(base_dir, {"t": folder}), inputs), trained)
    fresh = factories.load_model(base_dir)
    attach(fresh, folder)
    assert_close(factories.model_output(fresh, inputs), trained)


def test_gradients_equal_peft(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """Same adapter values in both; one backward each: every lora_A/lora_B gradient matches PEFT's."""
    from peft import PeftModel

    model = factories.load_model(tiny_llama_dir)
    add_trainable(model, "t", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], use_rslora=True)
    _train(model, steps=1)  # so B != 0 and A receives gradient
    folder = save_attached(model, "t", tmp_path / "t")
    pm = PeftModel.from_pretrained(factories.load_model(tiny_llama_dir), folder, is_trainable=True)
    model.zero_grad()
    _loss(model, seed=5).backward()
    _loss(pm, seed=5).backward()
    ours = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    theirs = {n: p.grad for n, p in pm.named_parameters() if p.requires_grad}
    assert len(ours) == len(theirs) == 12
    for name, g in ours.items():
        module, leaf = name.rsplit(".", 1)
        part = leaf.split("__")[0]  # lora_A / lora_B
        want = theirs[f"base_model.model.{module}.{part}.default.weight"]
        assert_close(g, want, tol=1e-6 + 1e-4 * want.abs().max().item())


def test_detach_restores_requires_grad_and_bad_arguments(tiny_llama_dir: Path) -> None:
    model = factories.load_model(tiny_llama_dir)
    model.lm_head.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    add_trainable(model, "t", target_modules=["q_proj"])
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    detach(model)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    with pytest.raises(UsageError, match="matches no module"):
        add_trainable(model, "t", target_modules=["nothing_here"])
    with pytest.raises(UsageError):
        add_trainable(model, "t", r=0)
    with pytest.raises(UnsupportedFeature, match="LlamaRMSNorm"):
        add_trainable(model, "t", target_modules=["input_layernorm"])
    assert "_adapterhub_state" not in model.__dict__
