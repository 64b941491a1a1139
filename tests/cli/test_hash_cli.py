"""`adapterhub hash`: the table, `--json`, exit codes (0 ok, 1 bad model, 2 usage), in-process and as a real process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from click.testing import CliRunner

from adapterhub.cli import main
from adapterhub.fingerprint import hash_model

ADAPTERHUB = Path(sys.executable).parent / "adapterhub"


def test_table_and_json_match_the_library(tiny_llama_dir: Path, tmp_path: Path) -> None:
    tiny_llama_dir = Path(shutil.copytree(tiny_llama_dir, tmp_path / "llama"))
    for f in tiny_llama_dir.iterdir():  # files changed in the last 2 s are not cached: make these older
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns - 60_000_000_000))
    expected = hash_model(tiny_llama_dir, progress=False, use_cache=False)
    runner = CliRunner()
    table = runner.invoke(main, ["hash", str(tiny_llama_dir)])
    assert table.exit_code == 0, table.output
    fp = expected.fingerprint
    weights = str(tiny_llama_dir / "model.safetensors")
    for text in (fp.arch_hash, fp.content_hash, f"{fp.parameter_count:,}", fp.dtype, "llama", weights):
        assert text in table.stdout
    as_json = runner.invoke(main, ["hash", str(tiny_llama_dir), "--json"])
    assert as_json.exit_code == 0, as_json.output
    got = json.loads(as_json.stdout)
    assert got["fingerprint"] == fp.model_dump()
    assert got["files"] == [str(tiny_llama_dir / "model.safetensors")]
    assert got["bytes_hashed"] == 0 and got["cached_files"] == 1  # the table run above filled the cache
    fresh = json.loads(runner.invoke(main, ["hash", "--no-cache", "--json", str(tiny_llama_dir)]).stdout)
    assert fresh["bytes_hashed"] == fresh["tensor_bytes"] > 0 and fresh["fingerprint"] == got["fingerprint"]


def test_bad_inputs_exit_1_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    torch.save({"w": torch.ones(2)}, tmp_path / "bin" / "pytorch_model.bin")
    (tmp_path / "trunc.safetensors").write_bytes(b"\x10\x00\x00")
    runner = CliRunner()
    cases = ((tmp_path / "bin", "pickle"), (tmp_path / "trunc.safetensors", "truncated"), (tmp_path / "nope", "no such"))
    for bad, word in cases:
        result = runner.invoke(main, ["hash", str(bad)])
        assert result.exit_code == 1, result.output
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and word in lines[0]


def test_usage_errors_exit_2() -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["hash"]).exit_code == 2
    assert runner.invoke(main, ["hash", "a", "b"]).exit_code == 2
    assert runner.invoke(main, ["hash", "--bogus", "x"]).exit_code == 2


def test_real_process(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """The installed console script, piped: JSON on stdout, no progress bar on stderr, the documented exit codes."""
    ok = subprocess.run([str(ADAPTERHUB), "hash", "--json", str(tiny_llama_dir)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr == ""  # stderr is not a terminal, so no progress bar
    report = json.loads(ok.stdout)
    assert report["fingerprint"] == hash_model(tiny_llama_dir, progress=False).fingerprint.model_dump()
    assert report["model_type"] == "llama"
    (tmp_path / "pickled.safetensors").write_bytes(b"PK\x03\x04" + b"\x00" * 60)
    bad = subprocess.run(
        [str(ADAPTERHUB), "hash", "--json", str(tmp_path / "pickled.safetensors")], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "refused pickle" in bad.stderr
    usage = subprocess.run([str(ADAPTERHUB), "hash"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "Missing argument" in usage.stderr
