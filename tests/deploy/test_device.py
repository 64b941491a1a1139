"""`adapterhub deploy --device`: a device this machine lacks, or no device at all, is one clear line before anything
loads; the engine moves its CPU-built batches to the model's device (here the CPU: the CUDA path is the same code)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from adapterhub.cli import main


@pytest.mark.parametrize(("device", "says"), [("cuda:99", "no CUDA device 'cuda:99'"), ("bogus", "unknown device 'bogus'"),
                                              ("meta", "device 'meta' is not supported")])  # fmt: skip
def test_bad_device_is_one_line(tmp_path: Path, chat_llama_dir: Path, device: str, says: str) -> None:
    result = CliRunner().invoke(main, ["deploy", str(chat_llama_dir), "--device", device], env={"ADAPTERHUB_HOME": str(tmp_path)},
                                catch_exceptions=False)  # fmt: skip
    assert result.exit_code != 0
    assert says in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_engine_on_an_explicit_cpu_device(tmp_path: Path, chat_llama_dir: Path) -> None:
    from adapterhub.deploy.app import build_state
    from adapterhub.store.registry import Registry

    reg = Registry(home=tmp_path)
    state = build_state(chat_llama_dir, registry=reg, device="cpu")
    try:
        assert str(state.engine.device) == "cpu"
    finally:
        state.engine.close()
        reg.db.dispose()
