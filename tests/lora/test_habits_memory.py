"""Frozen adapters keep one copy: on a bf16 base the fp32 file's tensors are not kept next to the bf16 cast the
layers use, and an exact save re-reads the (unchanged) folder. Oracle for the save: the file's own tensors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapterhub.errors import InvalidAdapter
from adapterhub.lora.attach import attach
from adapterhub.lora.cache import resident_nbytes
from adapterhub.lora.trainable import save_attached
from tests import factories


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mem")
    base = factories.build_tiny_llama(root / "base")
    return base, factories.make_peft_adapter(base, root / "ad", target_modules=["q_proj", "v_proj"], seed=4)


def _file_bytes(adapter: Path) -> int:
    return sum(t.numel() * t.element_size() for t in load_file(str(adapter / "adapter_model.safetensors")).values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_copy_and_an_exact_save(built: tuple[Path, Path], tmp_path: Path, dtype: torch.dtype) -> None:
    base, adapter = built
    model = factories.load_model(base).to(dtype)
    attach(model, adapter, "a")
    fp32 = _file_bytes(adapter)
    held = resident_nbytes(model, "a")
    assert held == (fp32 if dtype == torch.float32 else fp32 // 2), "only the tensors the layers use are held"
    saved = save_attached(model, "a", tmp_path / "out")
    want, got = load_file(str(adapter / "adapter_model.safetensors")), load_file(str(saved / "adapter_model.safetensors"))
    assert want.keys() == got.keys() and all(torch.equal(got[k], v) and got[k].dtype == v.dtype for k, v in want.items())


def test_a_changed_folder_is_not_saved_as_the_adapter(built: tuple[Path, Path], tmp_path: Path) -> None:
    base, adapter = built
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in adapter.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    model = factories.load_model(base).to(torch.bfloat16)
    attach(model, copy, "a")
    st = (copy / "adapter_model.safetensors").stat()
    os.utime(copy / "adapter_model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(InvalidAdapter, match="changed since the adapter was attached"):
        save_attached(model, "a", tmp_path / "out")
