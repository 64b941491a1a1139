"""`adapterhub tune` / `eval` / `search --measured` through the CLI: results printed, bad input one line, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from adapterhub.cli import main
from adapterhub.store.registry import Registry

from .conftest import copy_rows, write_jsonl


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_tune_eval_and_search_measured(chat_llama_dir: Path, tmp_path: Path, adapterhub_home: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", copy_rows(8))
    held = write_jsonl(tmp_path / "held.jsonl", copy_rows(4))
    code, out = invoke("tune", "--base", str(chat_llama_dir), "--data", str(data), "--name", "me/copy", "--task", "copy",
                       "--max-steps", "3", "--batch-size", "4", "--rank", "2")  # fmt: skip
    assert code == 0, out
    assert out.splitlines()[0] == "me/copy@1" and "3 steps" in out and "parameters trained" in out
    code, out = invoke("show", "me/copy")
    assert "tuned from base" in out and "train.jsonl (8 examples" in out
    code, out = invoke(
        "eval", "me/copy", "--data", str(held), "--base", str(chat_llama_dir), "--with-base", "--max-tokens", "4", "--json"
    )
    assert code == 0, out
    got = json.loads(out)
    assert [r["target"] for r in got["results"]] == ["me/copy@1", "base"]
    assert got["results"][0]["score"]["source"] == "measured"
    code, out = invoke("search", "--measured")
    assert code == 0 and "me/copy@1" in out and "held/exact_match=" in out and "* measured" in out
    Registry().add(Registry().adapter_path("me/copy@1"), "me/typed", "copy")
    code, out = invoke("search", "--measured", "--json")
    assert [c["name"] for c in json.loads(out)["items"]] == ["copy"]


def test_bad_data_is_one_clear_error_per_line(chat_llama_dir: Path, tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [copy_rows(1)[0], '{"input_text": 3, "output_text": "x"}', "oops"])
    code, out = invoke("tune", "--base", str(chat_llama_dir), "--data", str(bad), "--name", "me/x", "--task", "x")
    assert code == 1 and "Traceback" not in out
    assert "line 2: 'input_text' must be a string, found a number" in out and "line 3: not JSON" in out


def test_eval_usage_errors(tmp_path: Path) -> None:
    held = write_jsonl(tmp_path / "held.jsonl", copy_rows(2))
    code, out = invoke("eval", "--data", str(held))
    assert code == 2 and "--base-only" in out
    code, out = invoke("eval", "a/b", "--base-only", "--data", str(held))
    assert code == 2 and "--with-base" in out
    code, out = invoke("eval", "no/such", "--data", str(held))
    assert code == 1 and "no/such" in out and "Traceback" not in out
