"""Ctrl-C in the middle of `adapterhub tune` (a real SIGINT to a real process): nothing registered, the checkpoints
stay, and `--resume` continues from the last one to a registered adapter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapterhub.store.registry import Registry
from adapterhub.tuning.train import RUNS_FOLDER

from .conftest import copy_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


def _cmd(base: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "adapterhub", "tune", "--base", str(base), "--data", str(data), "--name", "t/copy", "--task", "copy",
            "--max-steps", "60", "--save-steps", "3", "--batch-size", "2", "--lr", "1e-2", *extra]  # fmt: skip


@pytest.mark.slow
def test_sigint_registers_nothing_and_resume_continues(chat_llama_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "ADAPTERHUB_HOME": str(home), "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    data = write_jsonl(tmp_path / "d.jsonl", copy_rows(16))
    proc = subprocess.Popen(_cmd(chat_llama_dir, data), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(home.glob(f"{RUNS_FOLDER}/*/checkpoints/checkpoint-*/trainer_state.json")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "nothing was registered" in err and "--resume" in err and "Traceback" not in err
    assert Registry(home=home).list(all_versions=True) == []
    ckpts = list(home.glob(f"{RUNS_FOLDER}/*/checkpoints/checkpoint-*"))
    assert ckpts

    done = subprocess.run(
        _cmd(chat_llama_dir, data, "--resume", "--json"), env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    card = Registry(home=home).get("t/copy")
    prov = card.tune_provenance
    assert prov is not None and prov.steps == 60
    assert prov.resumed_from_step is not None and prov.resumed_from_step >= 3 and prov.resumed_from_step % 3 == 0
    assert [s for s, _ in prov.loss_curve] == list(range(1, 61))  # the checkpoint's curve, continued: one curve, no gap
    assert not list(home.glob(f"{RUNS_FOLDER}/*"))  # registered: the staging run is gone
