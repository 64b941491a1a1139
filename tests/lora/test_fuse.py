"""fuse / unfuse: fused outputs equal PEFT's (1e-5), and unfuse restores the base bit-exactly in the same storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from adapterhub.errors import UsageError
from adapterhub.lora.attach import attach, detach, fuse, is_fused, set_active, unfuse
from tests import factories
from tests.lora.helpers import assert_close, assert_restored, peft_activate, peft_model, snapshot

# case -> (base fixture, [(PEFT kwargs, weight)]): one adapter, or several active with weights.
CASES: dict[str, tuple[str, list[tuple[dict[str, Any], float]]]] = {
    "llama-plain": ("tiny_llama_dir", [({"target_modules": ["q_proj", "v_proj", "down_proj"]}, 1.0)]),
    "llama-dora": ("tiny_llama_dir", [({"target_modules": ["q_proj", "up_proj"], "use_dora": True}, 1.0)]),
    "llama-embedding-head": (
        "tiny_llama_dir",
        [({"target_modules": ["embed_tokens", "o_proj"], "modules_to_save": ["lm_head"]}, 1.0)],
    ),
    "llama-weighted-pair": (
        "tiny_llama_dir",
        [
            ({"target_modules": ["q_proj", "v_proj"]}, 0.7),
            ({"target_modules": ["v_proj", "gate_proj"], "use_rslora": True, "rank_pattern": {"gate_proj": 2}}, -0.3),
        ],
    ),
    "llama-plain-then-dora": (
        "tiny_llama_dir",
        [
            ({"target_modules": ["q_proj", "v_proj"]}, 0.8),
            ({"target_modules": ["v_proj", "up_proj"], "use_dora": True}, 0.5),
        ],
    ),
    "gpt2-dora-conv1d": (
        "tiny_gpt2_dir",
        [({"target_modules": ["c_attn", "c_fc"], "fan_in_fan_out": True, "use_dora": True}, 1.0)],
    ),
    "minilm-lora-bias": ("minilm_dir", [({"target_modules": ["query", "value"], "lora_bias": True}, 1.0)]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fuse_matches_peft_and_unfuse_is_bit_exact(case: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    fixture, specs = CASES[case]
    base_dir = request.getfixturevalue(fixture)
    folders = {f"a{i}": factories.make_peft_adapter(base_dir, tmp_path / f"a{i}", seed=20 + i, train_steps=3, **kw)
               for i, (kw, _w) in enumerate(specs)}  # fmt: skip
    names, weights = list(folders), [w for _kw, w in specs]
    model = factories.load_model(base_dir)
    inputs = factories.sample_inputs(model)
    snap = snapshot(model)
    for n, f in folders.items():
        attach(model, f, n)
    set_active(model, names, weights)
    unfused = factories.model_output(model, inputs)
    weights_before = {k: v.detach().clone() for k, v in model.named_parameters()}

    fuse(model)
    assert is_fused(model)
    fused = factories.model_output(model, inputs)
    pm = peft_model(base_dir, folders)
    peft_activate(pm, names, weights)
    assert_close(fused, factories.model_output(pm, inputs))
    assert_close(fused, unfused)
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, weights_before[k])]
    assert changed and all(".base_layer." in k for k in changed), "fuse changes the wrapped base weights only"

    unfuse(model)
    assert not is_fused(model)
    assert all(torch.equal(v, weights_before[k]) for k, v in model.named_parameters())
    assert torch.equal(factories.model_output(model, inputs), unfused)
    detach(model)
    assert_restored(model, snap)


def test_fused_model_refuses_changes_and_detach_unfuses(tiny_llama_dir: Path, tmp_path: Path) -> None:
    a = factories.make_peft_adapter(tiny_llama_dir, tmp_path / "a", target_modules=["q_proj"], seed=3)
    b = factories.make_peft_adapter(tiny_llama_dir, tmp_path / "b", target_modules=["v_proj"], seed=4)
    model = factories.load_model(tiny_llama_dir)
    snap = snapshot(model)
    with pytest.raises(UsageError, match="no active adapter"):
        fuse(model)
    attach(model, a, "a")
    fuse(model)
    with pytest.raises(UsageError, match="unfuse"):
        set_active(model, None)
    with pytest.raises(UsageError, match="unfuse"):
        attach(model, b, "b")
    with pytest.raises(UsageError, match="unfuse"):
        fuse(model)
    detach(model)  # unfuses first, then restores the tree
    assert_restored(model, snap)
