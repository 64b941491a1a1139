"""The registry commands: output for people and for scripts, exit codes 0/1/2, and no torch import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_add_ls_show_search_tag_rm(run, minilm_adapter_dir: Path, minilm_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out = run("add", str(minilm_adapter_dir), "--name", "team/sent", "--task", "sentiment", "--base", str(minilm_dir),
                    "--metric", "sst2/accuracy=0.91", "--metric", "sst2/loss:validation=0.3", "--tag", "en")  # fmt: skip
    assert (code, out.strip()) == (0, "team/sent@1")
    code, out = run("add", str(minilm_adapter_dir), "--name", "team/sent", "--task", "sentiment", "--force-new", "--json")
    assert code == 0 and json.loads(out)["version"] == 2
    code, out = run("ls")
    assert code == 0 and "team/sent@2" in out and "team/sent@1" not in out
    code, out = run("ls", "--all", "--json")
    assert sorted(c["version"] for c in json.loads(out)) == [1, 2]
    code, out = run("show", "team/sent@1", "--json")
    card = json.loads(out)
    scores = {(s["metric"], s["split"]): s for s in card["scores"]}
    assert scores[("loss", "validation")]["higher_is_better"] is False
    assert scores[("accuracy", "test")]["value"] == 0.91
    code, out = run("show", "team/sent@1")
    assert code == 0 and "sst2/accuracy [test] = 0.91" in out and "adapter_model.safetensors" in out
    code, out = run("search", "--task", "sentiment", "--min", "sst2/accuracy=0.9", "--all-versions", "--json")
    assert [i["version"] for i in json.loads(out)["items"]] == [1]
    code, out = run("tag", "team/sent@1", "prod")
    assert code == 0 and "team/sent@prod -> team/sent@1" in out
    code, out = run("export", "team/sent@prod", str(tmp_path / "out"))
    assert code == 0 and (tmp_path / "out" / "adapter_model.safetensors").is_file()
    code, out = run("rm", "team/sent@2")
    assert code == 0 and "team/sent@2" in out
    code, out = run("gc", "--grace", "0", "--json")
    assert code == 0 and json.loads(out)["removed"] == []  # v2 shared every blob with v1
    code, out = run("fsck")
    assert code == 0 and "0 missing, 0 corrupt" in out
    code, out = run("bases", "--json")
    assert json.loads(out)[0]["model_type"] == "bert"


def test_exit_codes(run, minilm_adapter_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("show", "nobody/nothing")[0] == 1
    assert run("search", "--min", "no-equals-sign")[0] == 2
    assert run("add", str(minilm_adapter_dir), "--name", "bad name", "--task", "t")[0] == 2
    assert run("tag", "x/y@1", "latest")[0] == 2
    assert run("frobnicate")[0] == 2
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "adapter_config.json").write_text("{}")
    (tmp_path / "pickled" / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")
    code, out = run("add", str(tmp_path / "pickled"), "--name", "a/b", "--task", "t")
    assert code == 1 and "pickle" in out and "arbitrary code" in out


def _subprocess(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ADAPTERHUB_HOME": str(home)}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)


def test_console_script_exit_codes_and_errors_are_one_line(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("adapterhub"))
    r = _subprocess([exe, "show", "nobody/nothing"], tmp_path)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: adapter")
    r = _subprocess([exe, "ls", "--bogus"], tmp_path)
    assert r.returncode == 2


def test_read_commands_do_not_import_torch(tmp_path: Path, minilm_adapter_dir: Path) -> None:
    """`ls`, `search` and `show` answer without paying for torch (several seconds on a small machine)."""
    from adapterhub.store.registry import Registry

    Registry(home=tmp_path).add(minilm_adapter_dir, "ns/a", "t")
    probe = (
        "import sys\nfrom adapterhub.cli import main\n"
        "for args in (['ls'], ['search', '--task', 't'], ['show', 'ns/a'], ['ls', '--json']):\n"
        "    try:\n        main(args)\n    except SystemExit as e:\n        assert e.code == 0, (args, e.code)\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'numpy', 'alembic') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    r = _subprocess([sys.executable, "-c", probe], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "HEAVY="
