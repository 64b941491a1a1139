"""Shared helpers for the attach-runtime tests: PEFT as the oracle, snapshots proving the base is untouched."""

from __future__ import annotations

from pathlib import Path

import torch

from tests import factories

TOL = 1e-5  # fp32 outputs must match PEFT to this absolute tolerance


def peft_model(base_dir: Path, adapters: dict[str, Path]) -> torch.nn.Module:
    """A fresh base with PEFT's own loading of `adapters` (first via from_pretrained, the rest via load_adapter)."""
    from peft import PeftModel

    items = list(adapters.items())
    name, folder = items[0]
    pm = PeftModel.from_pretrained(factories.load_model(base_dir), folder, adapter_name=name)
    for n, f in items[1:]:
        pm.load_adapter(f, adapter_name=n)
    return pm.eval()


def peft_activate(pm: torch.nn.Module, names: list[str], weights: list[float] | None = None) -> None:
    """PEFT's multi-adapter activation: set_adapter on the tuner, then per-layer set_scale for weights."""
    from peft.tuners.lora import LoraLayer

    pm.base_model.set_adapter(names if len(names) > 1 else names[0])
    for mod in pm.modules():
        if isinstance(mod, LoraLayer):
            for n, w in zip(names, weights or [1.0] * len(names), strict=True):
                mod.set_scale(n, w)


def assert_close(got: torch.Tensor, want: torch.Tensor, tol: float = TOL) -> None:
    diff = (got.float() - want.float()).abs().max().item()
    assert diff <= tol, f"max abs difference {diff:.3g} > {tol}"


def snapshot(model: torch.nn.Module) -> dict[str, object]:
    """Everything detach/unfuse must restore: module types, state_dict keys, values (copies) and storage."""
    sd = model.state_dict()
    return {
        "types": [(n, type(m)) for n, m in model.named_modules()],
        "keys": list(sd),
        "values": {k: v.detach().clone() for k, v in sd.items()},
        "ptrs": {k: v.data_ptr() for k, v in sd.items()},
        "grad": {n: p.requires_grad for n, p in model.named_parameters()},
    }


def assert_restored(model: torch.nn.Module, snap: dict[str, object]) -> None:
    """The model is exactly as in `snap`: same module types, keys, bit-identical values in the same storage."""
    now = snapshot(model)
    assert now["types"] == snap["types"]
    assert now["keys"] == snap["keys"]
    for k, v in snap["values"].items():  # type: ignore[attr-defined]
        assert torch.equal(now["values"][k], v), f"{k} changed"  # type: ignore[index]
        assert now["ptrs"][k] == snap["ptrs"][k], f"{k} moved to new storage"  # type: ignore[index]
    assert now["grad"] == snap["grad"]
    assert "_adapterhub_state" not in model.__dict__
