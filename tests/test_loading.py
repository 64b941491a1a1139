"""load(): a frozen base from a folder, adapters validated before any is attached, outputs equal to PEFT's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adapterhub import load as top_level_load
from adapterhub.errors import BaseModelNotFound, IncompatibleAdapter, UsageError
from adapterhub.loading import attach_checked, load, load_base, probe
from adapterhub.lora.attach import active_adapters, list_adapters
from tests import factories


@pytest.fixture(scope="module")
def second_minilm_adapter(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """Another PEFT LoRA for MiniLM on other modules (attention output + FFN), other seed."""
    return factories.make_peft_adapter(
        minilm_dir, tmp_path_factory.mktemp("minilm-lora-2") / "b", target_modules=["dense"], seed=5, r=8, lora_alpha=16
    )


@pytest.fixture(scope="module")
def peft_reference(minilm_dir: Path, minilm_adapter_dir: Path, second_minilm_adapter: Path) -> dict[str, torch.Tensor]:
    """PEFT's own outputs on the same inputs: the oracle."""
    from peft import PeftModel

    base = factories.load_model(minilm_dir)
    inputs = factories.sample_inputs(base)
    out = {"bare": factories.model_output(base, inputs)}
    pm = PeftModel.from_pretrained(base, str(minilm_adapter_dir), adapter_name="a")
    pm.load_adapter(str(second_minilm_adapter), adapter_name="b")
    pm.eval()
    for names in (["a"], ["b"], ["a", "b"]):
        pm.base_model.set_adapter(names)
        out["+".join(names)] = factories.model_output(pm, inputs)
    out["inputs"] = inputs  # type: ignore[assignment]
    return out


def test_load_folder_equals_peft(minilm_dir: Path, minilm_adapter_dir: Path, peft_reference: dict) -> None:
    model = load(minilm_dir, [minilm_adapter_dir])
    got = factories.model_output(model, peft_reference["inputs"])
    assert torch.allclose(got, peft_reference["a"], atol=1e-5, rtol=0)
    assert not torch.allclose(got, peft_reference["bare"], atol=1e-3)  # the adapter really acts
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert top_level_load is load


def test_load_refs_from_registry_equals_peft(
    tmp_path: Path, minilm_dir: Path, minilm_adapter_dir: Path, second_minilm_adapter: Path, peft_reference: dict
) -> None:
    from adapterhub.store.registry import Registry

    reg = Registry(home=tmp_path / "reg")
    a = reg.add(minilm_adapter_dir, name="t/a", task="test", base=minilm_dir)
    b = reg.add(second_minilm_adapter, name="t/b", task="test")
    model = load(minilm_dir, ["t/a", "t/b@1"], registry=reg)
    assert list_adapters(model) == [a.ref, b.ref]
    assert active_adapters(model) == {a.ref: 1.0, b.ref: 1.0}
    inputs = peft_reference["inputs"]
    assert torch.allclose(factories.model_output(model, inputs), peft_reference["a+b"], atol=1e-5, rtol=0)
    from adapterhub.lora.attach import set_active

    set_active(model, b.ref)
    assert torch.allclose(factories.model_output(model, inputs), peft_reference["b"], atol=1e-5, rtol=0)


def test_load_with_names_and_weights(
    minilm_dir: Path, minilm_adapter_dir: Path, second_minilm_adapter: Path, peft_reference: dict
) -> None:
    model = load(minilm_dir, [minilm_adapter_dir, second_minilm_adapter], names=["x", "y"], weights=[1.0, 0.0])
    assert active_adapters(model) == {"x": 1.0, "y": 0.0}
    assert torch.allclose(factories.model_output(model, peft_reference["inputs"]), peft_reference["a"], atol=1e-5, rtol=0)
    model = load(minilm_dir, [minilm_adapter_dir], activate=False)
    assert active_adapters(model) == {}
    assert torch.allclose(factories.model_output(model, peft_reference["inputs"]), peft_reference["bare"], atol=1e-6, rtol=0)


def test_incompatible_later_adapter_attaches_nothing(
    minilm_dir: Path, minilm_adapter_dir: Path, gpt2_adapter_dir: Path, peft_reference: dict
) -> None:
    with pytest.raises(IncompatibleAdapter) as err:
        load(minilm_dir, [minilm_adapter_dir, gpt2_adapter_dir])
    assert "transformer.h.0.attn.c_attn" in str(err.value)
    model = load_base(minilm_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(IncompatibleAdapter):
        attach_checked(model, minilm_dir, [minilm_adapter_dir, gpt2_adapter_dir])
    assert list_adapters(model) == []
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(factories.model_output(model, peft_reference["inputs"]), peft_reference["bare"])


def test_failure_while_attaching_rolls_back(minilm_dir: Path, minilm_adapter_dir: Path, peft_reference: dict) -> None:
    """Two adapters under one name pass validation but the second attach fails: the first is detached again."""
    from adapterhub.errors import AlreadyExists

    model = load_base(minilm_dir)
    with pytest.raises(AlreadyExists):
        attach_checked(model, minilm_dir, [minilm_adapter_dir, minilm_adapter_dir], names=["same", "same"])
    assert list_adapters(model) == []
    assert torch.equal(factories.model_output(model, peft_reference["inputs"]), peft_reference["bare"])


def test_auto_class_and_dtype(tiny_llama_dir: Path, llama_adapter_dir: Path) -> None:
    lm = load(tiny_llama_dir, [llama_adapter_dir])
    assert type(lm).__name__ == "LlamaForCausalLM"
    half = load(tiny_llama_dir, [llama_adapter_dir], dtype="bfloat16")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}  # the adapter is cast to the base's dtype
    assert type(load(tiny_llama_dir, auto_class="LlamaModel")).__name__ == "LlamaModel"
    from transformers import AutoModelForCausalLM

    assert type(load(tiny_llama_dir, auto_class=AutoModelForCausalLM)).__name__ == "LlamaForCausalLM"


def test_bad_arguments(tmp_path: Path, minilm_dir: Path, minilm_adapter_dir: Path) -> None:
    with pytest.raises(BaseModelNotFound):
        load(tmp_path / "missing")
    with pytest.raises(UsageError):
        load(minilm_dir, [minilm_adapter_dir], dtype="float7")
    with pytest.raises(UsageError):
        load(minilm_dir, [minilm_adapter_dir], auto_class="NoSuchModelClass")
    with pytest.raises(UsageError):
        load(minilm_dir, [minilm_adapter_dir], weights=[1.0, 2.0])


def test_probe_encoder_compares_with_bare_base(minilm_dir: Path, minilm_adapter_dir: Path) -> None:
    res = probe(minilm_dir, [minilm_adapter_dir], sentence="the movie was wonderful")
    assert res.kind == "encoder"
    assert res.embedding_norm is not None and res.base_embedding_norm is not None
    assert res.cosine_to_base is not None and res.cosine_to_base < 0.99999  # the adapter changes the embedding
    bare = probe(minilm_dir, [], sentence="the movie was wonderful")
    assert bare.cosine_to_base == pytest.approx(1.0, abs=1e-6)
    assert bare.embedding_norm == pytest.approx(res.base_embedding_norm, rel=1e-6)
    with pytest.raises(UsageError):
        probe(minilm_dir, [], prompt="x", sentence="y")


def test_demo_trained_adapter_is_plain_peft(tmp_path: Path, minilm_dir: Path) -> None:
    """The demo's trainer saves a head-free adapter: PEFT loads it and classifies exactly as adapterhub.load does."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from adapterhub.demo.training import TASKS, classify, embed, load_examples, train_adapter
    from adapterhub.lora.trainable import save_attached

    task, tok = TASKS["sentiment"], AutoTokenizer.from_pretrained(str(minilm_dir))
    data = load_examples(task)
    assert {"train", "test"} <= data.keys() and len(data["train"]) >= 200 and len(data["test"]) >= 40
    assert {e.label for e in data["test"]} == set(task.labels)
    assert not {e.text for e in data["train"]} & {e.text for e in data["test"]}  # the held-out split is held out
    model = load_base(minilm_dir)
    res = train_adapter(model, tok, task, "s", data["train"][:32], steps=3, batch_size=8)
    assert res.last_loss < res.first_loss
    folder = save_attached(model, "s", tmp_path / "s")
    ours = load(minilm_dir, [folder])
    peft = PeftModel.from_pretrained(factories.load_model(minilm_dir), str(folder)).eval()
    texts = [e.text for e in data["test"][:8]]
    with torch.no_grad():
        assert torch.allclose(embed(ours, tok, texts), embed(peft, tok, texts), atol=1e-5, rtol=0)
    assert classify(ours, tok, task, texts) == classify(peft, tok, task, texts)


def test_refs_use_the_default_registry(llama_adapter_dir: Path, tiny_llama_dir: Path) -> None:
    from adapterhub.store.registry import Registry

    Registry().add(llama_adapter_dir, name="t/l", task="test")  # ADAPTERHUB_HOME is per test (conftest)
    model = load(tiny_llama_dir, ["t/l"])
    assert list_adapters(model) == ["t/l@1"] and active_adapters(model) == {"t/l@1": 1.0}
