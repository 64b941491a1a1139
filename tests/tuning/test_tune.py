"""adapterhub.tune on a tiny seeded Llama: the loss goes down, the registered adapter is a PEFT adapter whose outputs
PEFT reproduces (PEFT as the oracle), the card carries the provenance, and a crash registers nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch

import adapterhub
from adapterhub.errors import UsageError
from adapterhub.store.registry import Registry
from adapterhub.tuning.data import InvalidData
from adapterhub.tuning.train import RUNS_FOLDER

from .conftest import copy_rows, write_jsonl

STEPS = 12


@pytest.fixture(scope="module")
def tuned(chat_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("tuned")
    data = write_jsonl(d / "train.jsonl", copy_rows(24))
    held = write_jsonl(d / "held.jsonl", copy_rows(8))
    reg = Registry(home=d / "home")
    card = adapterhub.tune(chat_llama_dir, data, eval_data=held, name="t/copy", task="copy", registry=reg, max_steps=STEPS,
                           lr=2e-2, batch_size=4, seed=3, rank=4, alpha=8)  # fmt: skip
    return {"card": card, "registry": reg, "data": data, "held": held}


def test_loss_decreases(tuned: dict[str, Any]) -> None:
    curve = tuned["card"].tune_provenance.loss_curve
    assert [s for s, _ in curve] == list(range(1, STEPS + 1))
    first, last = sum(v for _, v in curve[:3]) / 3, sum(v for _, v in curve[-3:]) / 3
    assert last < first - 0.05, curve


def test_registered_adapter_matches_peft(tuned: dict[str, Any], chat_llama_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    reg: Registry = tuned["registry"]
    card = tuned["card"]
    assert (card.method.value, card.rank, card.alpha) == ("lora", 4, 8.0)
    assert {"q_proj", "v_proj", "down_proj"} <= set(card.target_modules)  # all-linear
    assert sorted(f.path for f in card.files) == ["adapter_config.json", "adapter_model.safetensors"]
    ids = torch.tensor([[1, 10, 20, 30, 40, 50, 60, 70]])
    ours = adapterhub.load(chat_llama_dir, [card.ref], registry=reg, dtype="float32")
    oracle = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(chat_llama_dir), dtype=torch.float32),
                                       str(reg.adapter_path(card.ref))).eval()  # fmt: skip
    base = AutoModelForCausalLM.from_pretrained(str(chat_llama_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        a, b, plain = ours(input_ids=ids).logits, oracle(input_ids=ids).logits, base(input_ids=ids).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert (a - plain).abs().max() > 1e-3  # the adapter does something: the check above is not vacuous


def test_provenance_in_the_card(tuned: dict[str, Any], chat_llama_dir: Path) -> None:
    from adapterhub.fingerprint import fingerprint

    card = tuned["registry"].get(tuned["card"].ref)  # read back from the database, not the object add returned
    prov = card.tune_provenance
    fp = fingerprint(chat_llama_dir)
    assert card.lineage.method == "tune" and card.lineage.base == fp.content_hash
    assert card.base_model is not None and card.base_model.content_hash == fp.content_hash
    assert (prov.base_fingerprint, prov.base_arch_hash) == (fp.content_hash, fp.arch_hash)
    (train, held) = prov.data
    assert (train.role, train.name, train.examples, train.format) == ("train", "train.jsonl", 24, "vertex")
    assert train.sha256 == hashlib.sha256(tuned["data"].read_bytes()).hexdigest()
    assert (held.role, held.examples) == ("eval", 8) and held.sha256 == hashlib.sha256(tuned["held"].read_bytes()).hexdigest()
    assert prov.hyperparameters["rank"] == 4 and prov.hyperparameters["lr"] == 2e-2 and prov.hyperparameters["max_steps"] == STEPS
    assert prov.seed == 3 and prov.steps == STEPS
    lora_params = sum(v.numel() for v in _adapter_tensors(tuned["registry"], card.ref).values())
    assert prov.trainable_params == lora_params and prov.total_params == fp.parameter_count + lora_params
    assert prov.wall_time_s > 0 and prov.cpu_time_s > 0 and prov.peak_rss_bytes > 10 * 2**20 and prov.eval_loss is not None
    assert {"torch", "transformers", "peft", "adapterhub", "python"} <= set(prov.library_versions)
    assert any("tuned from base" in line and "train.jsonl (24 examples" in line for line in card.summary_lines())
    assert not (tuned["registry"].home / RUNS_FOLDER).exists() or not any((tuned["registry"].home / RUNS_FOLDER).iterdir())


def _adapter_tensors(reg: Registry, ref: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(reg.adapter_path(ref) / "adapter_model.safetensors"))


def test_a_crash_before_registering_leaves_nothing_registered(
    chat_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import adapterhub.tuning.train as train_mod

    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(train_mod, "_save_adapter", boom)
    reg = Registry(home=tmp_path / "home")
    with pytest.raises(RuntimeError, match="disk full"):
        adapterhub.tune(chat_llama_dir, write_jsonl(tmp_path / "d.jsonl", copy_rows(8)), name="t/x", task="x", registry=reg,
                        max_steps=2, batch_size=4)  # fmt: skip
    assert reg.list(all_versions=True) == []


def test_bad_input_fails_before_training(chat_llama_dir: Path, tmp_path: Path) -> None:
    reg = Registry(home=tmp_path / "home")
    good = write_jsonl(tmp_path / "d.jsonl", copy_rows(8))
    with pytest.raises(InvalidData, match="line 2"):
        adapterhub.tune(
            chat_llama_dir, write_jsonl(tmp_path / "bad.jsonl", [copy_rows(1)[0], "nope"]), name="t/x", task="x", registry=reg
        )
    with pytest.raises(UsageError, match="--epochs or --max-steps"):
        adapterhub.tune(chat_llama_dir, good, name="t/x", task="x", registry=reg, epochs=1, max_steps=3)
    with pytest.raises(UsageError, match="--max-steps must be positive"):
        adapterhub.tune(chat_llama_dir, good, name="t/x", task="x", registry=reg, max_steps=0)
    with pytest.raises(UsageError, match="cannot add LoRA layers"):
        adapterhub.tune(chat_llama_dir, good, name="t/x", task="x", registry=reg, targets="no_such_proj", max_steps=1)
    with pytest.raises(UsageError, match="nothing to resume"):
        adapterhub.tune(chat_llama_dir, good, name="t/x", task="x", registry=reg, max_steps=1, resume=True)
    assert reg.list(all_versions=True) == []


def test_dora_rslora_and_targets_reach_the_card_and_match_peft(chat_llama_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    reg = Registry(home=tmp_path / "home")
    data = write_jsonl(tmp_path / "d.jsonl", copy_rows(8))
    card = adapterhub.tune(chat_llama_dir, data, name="t/dora", task="copy", registry=reg, max_steps=3, lr=2e-2, batch_size=4,
                           dora=True, rslora=True, targets="q_proj,v_proj", rank=2, alpha=4, grad_accum=2)  # fmt: skip
    assert (card.method.value, card.use_rslora, sorted(card.target_modules), card.rank) == ("dora", True, ["q_proj", "v_proj"], 2)
    assert card.tune_provenance.hyperparameters["effective_batch_size"] == 8
    ids = torch.tensor([[1, 11, 22, 33, 44]])
    ours = adapterhub.load(chat_llama_dir, [card.ref], registry=reg, dtype="float32")
    oracle = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(chat_llama_dir), dtype=torch.float32),
                                       str(reg.adapter_path(card.ref))).eval()  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, oracle(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


def test_a_bfloat16_base_trains_float32_adapter_weights(chat_llama_dir: Path, tmp_path: Path) -> None:
    """--base-dtype bfloat16 loads the frozen base in bf16 (half its memory) while PEFT keeps the adapter weights in
    float32: the saved tensors are float32 and the loss still goes down; the training peak is recorded apart."""
    data = write_jsonl(tmp_path / "train.jsonl", copy_rows(24))
    reg = Registry(home=tmp_path / "home")
    card = adapterhub.tune(chat_llama_dir, data, name="t/bf16", task="copy", registry=reg, max_steps=STEPS, lr=2e-2,
                           batch_size=4, seed=3, rank=4, alpha=8, base_dtype="bfloat16")  # fmt: skip
    tensors = _adapter_tensors(reg, card.ref)
    assert tensors and {t.dtype for t in tensors.values()} == {torch.float32}
    prov = card.tune_provenance
    assert prov.hyperparameters["base_dtype"] == "bfloat16"
    curve = [v for _, v in prov.loss_curve]
    assert sum(curve[-3:]) / 3 < sum(curve[:3]) / 3 - 0.05, curve
    assert prov.train_peak_rss_bytes is not None and 10 * 2**20 < prov.train_peak_rss_bytes <= prov.peak_rss_bytes


def test_full_fine_tuning_refuses_a_bfloat16_base() -> None:
    from adapterhub.tuning.train import TuneSettings

    with pytest.raises(UsageError, match="float32"):
        TuneSettings(full=True, base_dtype="bfloat16").check()
    with pytest.raises(UsageError, match="base-dtype"):
        TuneSettings(base_dtype="float16").check()
