"""Issue 11's registry habits on the CLI: same bytes give the same version, scores after the fact, untag, `rm NAME`
asks first, `gc` says what it kept, and `-q` prints only references."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adapterhub.card import EvalScore, ScoreSource
from adapterhub.store.registry import Registry


def _add(run_split, folder: Path, name: str = "team/a", *extra: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    return run_split("add", str(folder), "--name", name, "--task", "t", *extra)  # type: ignore[no-any-return]


def test_same_files_same_name_returns_the_existing_version(run_split, minilm_adapter_dir: Path, llama_adapter_dir: Path) -> None:  # type: ignore[no-untyped-def]
    assert _add(run_split, minilm_adapter_dir) == (0, "team/a@1\n", "")
    code, out, err = _add(run_split, minilm_adapter_dir, "team/a", "--alias", "prod")
    assert (code, out) == (0, "team/a@1\n")
    assert "team/a@1 already has these files" in err and "--force-new" in err and err.count("\n") == 1
    code, out, _ = run_split("show", "team/a", "--json")
    assert json.loads(out)["aliases"] == ["latest", "prod"]  # the alias asked for still moved to it
    assert _add(run_split, minilm_adapter_dir, "team/a", "-q") == (0, "team/a@1\n", "")  # -q: the reference only
    assert _add(run_split, minilm_adapter_dir, "team/a", "--force-new") == (0, "team/a@2\n", "")
    assert _add(run_split, llama_adapter_dir)[1] == "team/a@3\n"  # other bytes: a new version
    assert _add(run_split, minilm_adapter_dir)[1] == "team/a@4\n"  # the newest version's files are what count
    assert _add(run_split, minilm_adapter_dir, "team/b")[1] == "team/b@1\n"  # same bytes, other name: its own version
    code, out, _ = run_split("ls", "--all", "-q")
    assert out.splitlines() == ["team/b@1", "team/a@4", "team/a@3", "team/a@2", "team/a@1"]


def test_same_content_is_files_and_digests(registry: Registry, tmp_path: Path, minilm_adapter_dir: Path) -> None:
    """Library level, on SQLite and PostgreSQL (the `registry` fixture)."""
    reg = registry
    v1 = reg.add(minilm_adapter_dir, "ns/x", "t")
    assert reg.add(minilm_adapter_dir, "ns/x", "other task").version == 1
    assert reg.same_content("ns/x", v1.files) == reg.get("ns/x@1")
    changed = tmp_path / "changed"
    shutil.copytree(minilm_adapter_dir, changed)
    (changed / "notes.txt").write_text("one more file")
    assert reg.add(changed, "ns/x", "t").version == 2
    assert reg.same_content("ns/x", v1.files) is None  # v2 is the newest now and it has another file set
    assert reg.same_content("ns/nothing", v1.files) is None


def test_score_records_and_replaces(run_split, minilm_adapter_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _add(run_split, minilm_adapter_dir, "team/a", "--metric", "sst2/accuracy=0.9", "--metric", "sst2/f1=0.8")
    code, out, _ = run_split(
        "score", "team/a@1", "--metric", "sst2/accuracy=0.93", "--metric", "wikitext/perplexity:validation=12.5"
    )
    assert code == 0 and out.strip() == "team/a@1: sst2/accuracy=0.93, sst2/f1=0.8, wikitext/perplexity=12.5"
    card = json.loads(run_split("show", "team/a", "--json")[1])
    scores = {(s["dataset"], s["metric"], s["split"]): (s["value"], s["higher_is_better"]) for s in card["scores"]}
    assert scores == {("sst2", "accuracy", "test"): (0.93, True), ("sst2", "f1", "test"): (0.8, True),
                      ("wikitext", "perplexity", "validation"): (12.5, False)}  # fmt: skip
    code, out, _ = run_split("search", "--min", "sst2/accuracy=0.92", "-q")
    assert out == "team/a@1\n"
    assert run_split("score", "team/a@1", "--metric", "no-equals")[0] == 2
    assert run_split("score", "team/a@1")[0] == 2  # --metric is required
    code, _, err = run_split("score", "team/none@1", "--metric", "a/b=1")
    assert code == 1 and "not found" in err


def test_record_scores_library(registry: Registry, minilm_adapter_dir: Path) -> None:
    reg = registry
    reg.add(minilm_adapter_dir, "ns/x", "t", scores=[EvalScore(dataset="d", metric="m", value=1.0)])
    card = reg.record_scores(
        "ns/x",
        [EvalScore(dataset="d", metric="m", value=2.0), EvalScore(dataset="d", metric="m", split="dev", value=3.0)],
        source=ScoreSource.REPORTED,
    )
    assert [(s.split, s.value) for s in card.scores] == [("dev", 3.0), ("test", 2.0)]
    assert reg.get("ns/x@1").scores == card.scores


def test_untag(run_split, minilm_adapter_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _add(run_split, minilm_adapter_dir)
    run_split("tag", "team/a@1", "prod")
    run_split("tag", "team/a@1", "staging")
    assert run_split("untag", "team/a", "prod") == (0, "removed team/a@prod\n", "")
    code, out, _ = run_split("untag", "team/a@staging", "--json")
    assert code == 0 and json.loads(out) == {"name": "team/a", "alias": "staging", "removed": True}
    assert json.loads(run_split("show", "team/a@1", "--json")[1])["aliases"] == ["latest"]
    code, _, err = run_split("untag", "team/a", "prod")
    assert code == 1 and "team/a@prod" in err and "not found" in err
    assert run_split("untag", "team/a", "latest")[0] == 2  # `latest` is not an alias one can remove
    assert run_split("untag", "team/a")[0] == 2  # no alias given
    assert run_split("untag", "team/a@1")[0] == 2  # a version is not an alias


def test_rm_every_version_needs_yes_off_a_terminal(run_split, minilm_adapter_dir: Path, llama_adapter_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _add(run_split, minilm_adapter_dir)
    _add(run_split, llama_adapter_dir)
    code, out, err = run_split("rm", "team/a")
    assert code == 2 and out == "" and "--yes" in err and "team/a@VERSION" in err
    assert run_split("ls", "--all", "-q")[1] == "team/a@2\nteam/a@1\n"  # nothing removed
    assert run_split("rm", "team/a@1", "-q") == (0, "team/a@1\n", "")  # one version: no question
    assert run_split("rm", "team/a", "--yes") == (0, "removed team/a@2\n", "")
    assert run_split("ls", "-q")[1] == ""


def _on_terminal(args: list[str], answer: str, home: Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI under `script`, so its stdin and stdout are a terminal, typing `answer`."""
    cmd = " ".join([sys.executable, "-m", "adapterhub", *args])
    env = {**os.environ, "ADAPTERHUB_HOME": str(home)}
    return subprocess.run(
        ["script", "-qec", cmd, "/dev/null"], input=answer, capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux `script` for a terminal")
def test_rm_every_version_asks_on_a_terminal(minilm_adapter_dir: Path, llama_adapter_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    reg = Registry(home=home)
    reg.add(minilm_adapter_dir, "team/a", "t")
    reg.add(llama_adapter_dir, "team/a", "t")
    no = _on_terminal(["rm", "team/a"], "n\n", home)
    assert "remove every version of team/a (@2, @1)?" in no.stdout and no.returncode == 1
    assert [c.version for c in reg.versions("team/a")] == [2, 1]
    yes = _on_terminal(["rm", "team/a"], "y\n", home)
    assert yes.returncode == 0 and "removed team/a@1, team/a@2" in yes.stdout
    assert reg.list() == []


def test_gc_says_what_it_kept_for_the_grace_period(run_split, minilm_adapter_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _add(run_split, minilm_adapter_dir)
    run_split("rm", "team/a", "--yes")
    n = len(list(minilm_adapter_dir.iterdir()))
    code, out, _ = run_split("gc")
    assert code == 0 and out.splitlines()[0] == "removed 0 blobs, 0 bytes"
    assert f"kept {n} unreferenced blobs younger than the grace period (600 s)" in out and "--grace 0" in out
    code, out, _ = run_split("gc", "--dry-run", "--grace", "0", "--json")
    report = json.loads(out)
    assert len(report["removed"]) == n and report["kept_young"] == 0 and report["dry_run"]
    code, out, _ = run_split("gc", "--grace", "0")
    assert out.startswith(f"removed {n} blobs") and "kept" not in out
