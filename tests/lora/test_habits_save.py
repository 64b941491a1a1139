"""save_pretrained while adapters are attached writes the base checkpoint: transformers reloads it bit-exactly.

The oracle is transformers itself: `from_pretrained` of what the attached model saved, compared tensor by tensor
with the base as saved on disk, with no missing or unexpected keys reported.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adapterhub.lora.attach import attach, detach, fuse
from tests import factories


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("save")
    base = factories.build_tiny_llama(root / "base")
    adapter = factories.make_peft_adapter(base, root / "ad", target_modules=["q_proj", "v_proj", "embed_tokens"],
                                          modules_to_save=["lm_head"], seed=1)  # fmt: skip
    return base, adapter


def _reload_exact(saved: Path, base: Path) -> None:
    from transformers import AutoModelForCausalLM

    got, info = AutoModelForCausalLM.from_pretrained(str(saved), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    want = AutoModelForCausalLM.from_pretrained(str(base)).state_dict()
    have = got.state_dict()
    assert list(have) == list(want)
    for k, v in want.items():
        assert torch.equal(have[k], v), f"{k} differs"


@pytest.mark.parametrize("fused", [False, True])
def test_save_pretrained_while_attached_reloads_as_the_base(llama: tuple[Path, Path], tmp_path: Path, fused: bool) -> None:
    base, adapter = llama
    model = factories.load_model(base)
    bare_keys = list(model.state_dict())
    attach(model, adapter, "a")
    if fused:
        fuse(model)
    sd = model.state_dict()
    assert list(sd) == bare_keys, "the attached model's state_dict shows the base's own keys, in order"
    assert not any("lora_" in k or "base_layer" in k for k in sd)
    model.save_pretrained(tmp_path / "saved", safe_serialization=True)
    _reload_exact(tmp_path / "saved", base)
    detach(model)


def test_load_state_dict_of_base_keys_into_an_attached_model(llama: tuple[Path, Path]) -> None:
    base, adapter = llama
    model = factories.load_model(base)
    attach(model, adapter, "a")
    inputs = factories.sample_inputs(model)
    with_adapter = factories.model_output(model, inputs)
    other = factories.load_model(factories.build_tiny_llama(base.parent / "other", seed=5)).state_dict()
    result = model.load_state_dict(other, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert all(torch.equal(v, other[k]) for k, v in model.state_dict().items())
    model.load_state_dict(factories.load_model(base).state_dict())
    assert torch.equal(factories.model_output(model, inputs), with_adapter), "adapter tensors kept their values"
