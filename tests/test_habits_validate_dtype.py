"""validate on a base that differs from the recorded one only in dtype says so, with both dtypes."""

from __future__ import annotations

from pathlib import Path

import torch

from adapterhub.compatibility import Outcome, validate
from adapterhub.store.registry import Registry
from tests import factories


def test_validate_names_a_dtype_only_difference(tmp_path: Path) -> None:
    f32 = factories.build_tiny_llama(tmp_path / "f32")
    bf16 = factories.build_tiny_llama(tmp_path / "bf16", dtype=torch.bfloat16)
    other = factories.build_tiny_gpt2(tmp_path / "gpt2")
    adapter = factories.make_peft_adapter(f32, tmp_path / "ad", target_modules=["q_proj", "v_proj"])
    reg = Registry(home=tmp_path / "reg")
    reg.add(adapter, name="t/qv", task="test", base=f32)
    report = validate("t/qv", bf16, registry=reg)
    assert report.outcome is Outcome.COMPATIBLE
    assert any(w.startswith("same architecture, F32 -> BF16") for w in report.warnings), report.warnings
    assert validate("t/qv", f32, registry=reg).outcome is Outcome.EXACT
    from adapterhub.fingerprint import arch_hash, dtype_change

    assert dtype_change(other, arch_hash(f32)) is None
    assert dtype_change(bf16, arch_hash(f32)) == ("F32", "BF16")
