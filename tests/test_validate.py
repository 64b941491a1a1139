"""validate(): exact / compatible / incompatible from real PEFT files and real tiny models, headers only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from adapterhub.compatibility import Outcome, validate
from adapterhub.errors import BaseModelNotFound, InvalidReference
from tests import factories


@pytest.fixture(scope="module")
def other_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same architecture as `tiny_llama_dir`, other seed: other weights, same arch hash."""
    return factories.build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-seed7"), seed=7)


@pytest.fixture(scope="module")
def wide_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Llama with the same module names but hidden size 48: every target module is mis-shaped."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=128, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("wide-llama")
    LlamaForCausalLM(cfg).save_pretrained(folder, safe_serialization=True)
    return folder


def _copy_with_config(src: Path, dst: Path, **changes: object) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "adapter_config.json").read_text())
    cfg.update(changes)
    (dst / "adapter_config.json").write_text(json.dumps(cfg))
    return dst


def test_folder_on_its_architecture_is_compatible_from_shapes_alone(llama_adapter_dir: Path, tiny_llama_dir: Path) -> None:
    report = validate(llama_adapter_dir, tiny_llama_dir)
    assert report.outcome is Outcome.COMPATIBLE and report.ok
    assert report.issues == [] and report.unsupported == []
    assert report.target_modules == ["q_proj", "v_proj"]
    assert report.modules_checked == 4  # 2 layers x (q_proj, v_proj)
    assert report.trained_on is None
    assert any("shapes alone" in n for n in report.notes)


def test_gpt2_adapter_on_llama_names_each_missing_module(gpt2_adapter_dir: Path, tiny_llama_dir: Path) -> None:
    report = validate(gpt2_adapter_dir, tiny_llama_dir)
    assert report.outcome is Outcome.INCOMPATIBLE and not report.ok
    missing = {i.module: i for i in report.issues}
    assert set(missing) == {"transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"}
    issue = missing["transformer.h.0.attn.c_attn"]
    # Conv1D with fan_in_fan_out: the base weight must be [in=32, out=3*32]
    assert issue.problem == "missing" and issue.expected == [32, 96] and issue.found is None
    assert "transformer.h.0.attn.c_attn" in " ".join(report.problems())


def test_mis_shaped_modules_report_expected_and_found(llama_adapter_dir: Path, wide_llama_dir: Path) -> None:
    report = validate(llama_adapter_dir, wide_llama_dir)
    assert report.outcome is Outcome.INCOMPATIBLE
    by_module = {i.module: i for i in report.issues}
    q = by_module["model.layers.0.self_attn.q_proj"]
    assert (q.problem, q.expected, q.found) == ("shape", [32, 32], [48, 48])
    v = by_module["model.layers.1.self_attn.v_proj"]
    # 2 kv heads of head_dim 8 -> out 16; in = hidden
    assert (v.expected, v.found) == ([16, 32], [24, 48])
    assert len(report.issues) == 4


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("layer_replication", [[0, 2], [1, 2]], "layer_replication"),
        ("target_parameters", ["mlp.experts.gate_up_proj"], "target_parameters"),
        ("alora_invocation_tokens", [5, 6], "activated LoRA"),
    ],
)
def test_unsupported_config_features_are_incompatible(
    llama_adapter_dir: Path, tiny_llama_dir: Path, tmp_path: Path, field: str, value: object, needle: str
) -> None:
    folder = _copy_with_config(llama_adapter_dir, tmp_path / "a", **{field: value})
    report = validate(folder, tiny_llama_dir)
    assert report.outcome is Outcome.INCOMPATIBLE
    assert report.issues == []  # the shapes fit; the feature alone makes it unusable
    assert any(needle in u for u in report.unsupported)


def test_other_peft_method_is_incompatible_not_a_crash(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from peft import LoHaConfig, get_peft_model

    model = factories.load_model(tiny_llama_dir)
    get_peft_model(model, LoHaConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "loha")
    report = validate(tmp_path / "loha", tiny_llama_dir)
    assert report.outcome is Outcome.INCOMPATIBLE
    assert any("LOHA" in u for u in report.unsupported)


def test_dora_on_embedding_is_unsupported(tiny_llama_dir: Path, tmp_path: Path) -> None:
    folder = factories.make_peft_adapter(tiny_llama_dir, tmp_path / "dora-emb", target_modules=["embed_tokens"], use_dora=True)
    report = validate(folder, tiny_llama_dir)
    assert report.outcome is Outcome.INCOMPATIBLE
    assert any("DoRA on Embedding" in u for u in report.unsupported)


def test_plain_dora_and_conv1d_adapters_fit_their_bases(
    tiny_llama_dir: Path, gpt2_adapter_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    dora = factories.make_peft_adapter(tiny_llama_dir, tmp_path / "dora", target_modules=["q_proj", "down_proj"], use_dora=True)
    assert validate(dora, tiny_llama_dir).outcome is Outcome.COMPATIBLE
    assert validate(dora, tiny_llama_dir).method == "dora"
    assert validate(gpt2_adapter_dir, tiny_gpt2_dir).outcome is Outcome.COMPATIBLE


def test_conv1d_adapter_saved_without_fan_in_fan_out_gets_a_hint(
    gpt2_adapter_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    folder = _copy_with_config(gpt2_adapter_dir, tmp_path / "a", fan_in_fan_out=False)
    report = validate(folder, tiny_gpt2_dir)
    assert report.outcome is Outcome.INCOMPATIBLE
    assert all("Conv1D" in i.detail for i in report.issues) and len(report.issues) == 2


def test_validate_reads_headers_only(llama_adapter_dir: Path, tiny_llama_dir: Path, tmp_path: Path) -> None:
    """Overwriting every tensor's bytes with NaN does not change the verdict: no tensor value is read."""
    folder = tmp_path / "nan"
    shutil.copytree(llama_adapter_dir, folder)
    weights = folder / "adapter_model.safetensors"
    raw = bytearray(weights.read_bytes())
    header_len = int.from_bytes(raw[:8], "little")
    start = 8 + header_len
    raw[start:] = b"\xff" * (len(raw) - start)
    weights.write_bytes(bytes(raw))
    assert validate(folder, tiny_llama_dir).outcome is Outcome.COMPATIBLE


def test_bad_arguments(llama_adapter_dir: Path, tiny_llama_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidReference):
        validate("not a ref", tiny_llama_dir)
    with pytest.raises(BaseModelNotFound):
        validate(llama_adapter_dir, tmp_path / "nothing-here")


# --- with the registry: a recorded base makes "exact" possible --------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path):  # noqa: ANN201 - Registry type imported lazily
    from adapterhub.store.registry import Registry

    return Registry(home=tmp_path / "reg")


def test_registered_adapter_on_its_own_base_is_exact(registry, llama_adapter_dir: Path, tiny_llama_dir: Path) -> None:  # noqa: ANN001
    card = registry.add(llama_adapter_dir, name="t/llama-lora", task="test", base=tiny_llama_dir)
    report = validate("t/llama-lora", tiny_llama_dir, registry=registry)
    assert report.outcome is Outcome.EXACT
    assert report.adapter_ref == card.ref
    assert report.base_content_hash == card.base_model.content_hash
    assert report.warnings == []


def test_registered_adapter_on_other_weights_is_compatible_with_a_warning(
    registry,
    llama_adapter_dir: Path,
    tiny_llama_dir: Path,
    other_llama_dir: Path,  # noqa: ANN001
) -> None:
    card = registry.add(llama_adapter_dir, name="t/llama-lora", task="test", base=tiny_llama_dir)
    report = validate("t/llama-lora@1", other_llama_dir, registry=registry)
    assert report.outcome is Outcome.COMPATIBLE
    assert report.base_arch_hash == card.base_model.arch_hash
    assert report.base_content_hash != card.base_model.content_hash
    assert len(report.warnings) == 1 and card.base_model.name in report.warnings[0]
    assert card.base_model.content_hash[:12] in report.warnings[0]


def test_registered_adapter_on_a_wrong_base_is_incompatible(
    registry, llama_adapter_dir: Path, tiny_llama_dir: Path, wide_llama_dir: Path
) -> None:  # noqa: ANN001
    registry.add(llama_adapter_dir, name="t/llama-lora", task="test", base=tiny_llama_dir)
    report = validate("t/llama-lora", wide_llama_dir, registry=registry)
    assert report.outcome is Outcome.INCOMPATIBLE and len(report.issues) == 4


def test_classifier_adapter_on_a_headless_checkpoint(minilm_dir: Path, tmp_path: Path) -> None:
    """PEFT on BertForSequenceClassification (paths `bert.…`, a saved `classifier`) checked on MiniLM's BertModel
    checkpoint: the LoRA modules fit after the prefix (with a warning), the classifier head is missing."""
    from peft import LoraConfig, get_peft_model
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    clf = BertForSequenceClassification.from_pretrained(str(minilm_dir), num_labels=3)
    cfg = LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["classifier"], task_type="SEQ_CLS")
    get_peft_model(clf, cfg).save_pretrained(tmp_path / "clf")
    report = validate(tmp_path / "clf", minilm_dir)
    assert report.outcome is Outcome.INCOMPATIBLE
    missing = {i.module: i for i in report.issues}
    assert set(missing) == {"classifier.weight", "classifier.bias"}
    assert missing["classifier.weight"].expected == [3, 384] and "modules_to_save" in missing["classifier.weight"].detail
    assert any("prefix" in w and "bert.encoder.layer.0.attention.self.query" in w for w in report.warnings)


def test_tied_output_head_is_checked_against_the_input_embedding(tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    """GPT-2 ties lm_head to wte, so its checkpoint has no lm_head.weight; a LoRA on lm_head still fits."""
    from adapterhub.tensorfile import read_header

    assert "lm_head.weight" not in read_header(tiny_gpt2_dir / "model.safetensors").tensors
    folder = factories.make_peft_adapter(tiny_gpt2_dir, tmp_path / "head", target_modules=["lm_head"])
    assert validate(folder, tiny_gpt2_dir).outcome is Outcome.COMPATIBLE
