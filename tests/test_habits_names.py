"""Names stay what the user typed: after load(base, ["team/sentiment@prod", ...]) every call that takes an adapter
name accepts the reference as typed, the version's aliases, or the resolved version (the README's snippet)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import adapterhub
from adapterhub.errors import AdapterNotFound
from adapterhub.lora.attach import activation, active_adapters, detach, fuse, list_adapters, unfuse
from adapterhub.lora.routing import route
from tests import factories


def test_the_readme_snippet_works_as_written(tmp_path: Path, minilm_dir: Path, minilm_adapter_dir: Path) -> None:
    from adapterhub.store.registry import Registry

    second = factories.make_peft_adapter(minilm_dir, tmp_path / "topic", target_modules=["dense"], seed=5)
    reg = Registry(home=tmp_path / "reg")
    card = reg.add(minilm_adapter_dir, name="team/sentiment", task="sentiment", base=minilm_dir)
    reg.tag(card.ref, "prod")
    model = adapterhub.load(minilm_dir, adapters=["team/sentiment@prod", second], registry=reg)
    inputs = factories.sample_inputs(model)
    adapterhub.set_active(model, "team/sentiment@prod")
    prod = factories.model_output(model, inputs)
    assert active_adapters(model) == {"team/sentiment@1": 1.0}
    for name in ("team/sentiment@1", "team/sentiment@prod"):
        adapterhub.set_active(model, name)
        assert torch.equal(factories.model_output(model, inputs), prod)
        with activation(model, None):
            assert not torch.equal(factories.model_output(model, inputs), prod)
        with route(model, [name, None]):
            routed = factories.model_output(model, inputs)
        assert torch.equal(routed[0], prod[0])
    adapterhub.set_active(model, ["team/sentiment@prod", "topic"])
    fuse(model)
    unfuse(model)
    with pytest.raises(AdapterNotFound):
        adapterhub.set_active(model, "team/sentiment@2")
    detach(model, "team/sentiment@prod")
    assert list_adapters(model) == ["topic"]
