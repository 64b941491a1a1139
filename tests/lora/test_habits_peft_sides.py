"""PEFT on either side of adapterhub. Attaching to a PeftModel attaches to the model inside (around PEFT's own base
layers), so both adapters act, equal to PEFT running both; PEFT on top of an attached model is refused by PEFT in
one line that names the cause and the fix (our wrapper's repr is that line)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adapterhub.lora.attach import attach, detach, list_adapters, set_active
from tests import factories
from tests.lora.helpers import assert_close, peft_activate, peft_model


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("peftsides")
    base = factories.build_tiny_llama(root / "base")
    x = factories.make_peft_adapter(base, root / "x", target_modules=["q_proj", "v_proj"], seed=1)
    y = factories.make_peft_adapter(base, root / "y", target_modules=["q_proj", "o_proj"], seed=2)
    return base, x, y


def test_attach_to_a_peft_model_equals_peft_running_both(built: tuple[Path, Path, Path]) -> None:
    from peft import PeftModel

    base, x, y = built
    pm = PeftModel.from_pretrained(factories.load_model(base), str(x), adapter_name="x").eval()
    inputs = factories.sample_inputs(pm)
    peft_only = factories.model_output(pm, inputs)
    types = [(n, type(m)) for n, m in pm.named_modules()]
    attach(pm, y, "y")
    assert list_adapters(pm) == ["y"]
    both = peft_model(base, {"x": x, "y": y})
    peft_activate(both, ["x", "y"])
    assert_close(factories.model_output(pm, inputs), factories.model_output(both, inputs))
    set_active(pm, None)
    assert torch.equal(factories.model_output(pm, inputs), peft_only)
    detach(pm)
    assert [(n, type(m)) for n, m in pm.named_modules()] == types
    assert torch.equal(factories.model_output(pm, inputs), peft_only)


def test_peft_on_top_of_an_attached_model_is_refused_in_one_line(built: tuple[Path, Path, Path]) -> None:
    from peft import LoraConfig, get_peft_model

    base, x, _y = built
    model = factories.load_model(base)
    attach(model, x, "x")
    with pytest.raises(ValueError) as info:
        get_peft_model(model, LoraConfig(target_modules=["q_proj"]))
    msg = str(info.value)
    assert "\n" not in msg and "adapterhub adapters [x]" in msg and "apply PEFT first and attach after" in msg, msg
