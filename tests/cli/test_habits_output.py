"""Issue 11's output and error habits on the CLI: --json everywhere and nothing else on stdout, examples in --help,
"did you mean", one-line errors for a missing adapter folder, an unusable ADAPTERHUB_HOME and a taken port, and
`run --sentence` on a causal LM saying what it pools."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch

from adapterhub.cli import COMMANDS, main
from tests import factories

PRINTS_NOTHING_TO_PARSE = {"serve", "deploy", "demo"}  # servers' logs; a narrated walk-through


def _commands() -> dict[str, click.Command]:
    """Every leaf command by its full name (`db upgrade`, `token list`, ...)."""
    ctx = click.Context(main)
    out: dict[str, click.Command] = {}
    for name in COMMANDS:
        cmd = main.get_command(ctx, name)
        assert cmd is not None, name
        if isinstance(cmd, click.Group):
            out.update({f"{name} {sub}": c for sub, c in cmd.commands.items()})
        else:
            out[name] = cmd
    return out


def test_every_command_that_prints_takes_json() -> None:
    missing = [n for n, c in _commands().items() if n not in PRINTS_NOTHING_TO_PARSE and "--json" not in _flags(c)]
    assert missing == []


def test_quiet_on_commands_that_print_references() -> None:
    cmds = _commands()
    assert [n for n in ("ls", "search", "add", "pull", "rm") if "-q" not in _flags(cmds[n])] == []


def _flags(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts}


def test_every_search_option_has_help_and_every_command_an_example(run) -> None:  # type: ignore[no-untyped-def]
    search = _commands()["search"]
    assert [p.name for p in search.params if isinstance(p, click.Option) and not p.help] == []
    for name in COMMANDS:
        code, out = run(name, "--help")
        assert code == 0 and "Examples:" in out, name
        assert f"\n    adapterhub {name}" in out or f"adapterhub {name} " in out.split("Examples:")[1], name


def test_unknown_command_suggests_the_nearest(run) -> None:  # type: ignore[no-untyped-def]
    code, out = run("serch", "--task", "x")
    assert code == 2 and "No such command 'serch'. Did you mean 'search'?" in out
    code, out = run("untga")
    assert code == 2 and "Did you mean 'untag'?" in out
    code, out = run("zzzzqqq")
    assert code == 2 and "No such command 'zzzzqqq'." in out and "Did you mean" not in out


def test_tables_are_rich_and_quiet_prints_refs(run_split, minilm_adapter_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run_split("add", str(minilm_adapter_dir), "--name", "team/a", "--task", "sentiment", "--metric", "sst2/accuracy=0.9")
    code, out, _ = run_split("ls")
    header, rule, row = out.splitlines()
    assert header.split() == ["ADAPTER", "ALIASES", "TASK", "METHOD", "RANK", "BASE", "SCORES"]
    assert set(rule) <= {"─", " "} and row.split()[:3] == ["team/a@1", "sentiment", "lora"]
    assert all(line == line.rstrip() for line in out.splitlines())  # piped: no trailing padding
    assert run_split("search", "sent", "-q")[1] == "team/a@1\n"
    assert run_split("ls", "--namespace", "nobody", "-q")[1] == ""
    code, out, _ = run_split("export", "team/a", str(tmp_path / "out"), "--json")
    assert json.loads(out) == {"ref": "team/a", "path": str(tmp_path / "out")}
    code, out, _ = run_split("db", "current", "--json")
    assert set(json.loads(out)) == {"current", "head"}


# --- --json keeps library logs off stdout ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def causal_with_tokenizer(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A tiny Llama over MiniLM's WordPiece vocabulary, with that tokenizer saved beside it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)  # fmt: skip
    folder = tmp_path_factory.mktemp("causal-tok")
    LlamaForCausalLM(cfg).save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, folder / name)
    return folder


def _cli(args: list[str], home: Path, *, terminal: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ADAPTERHUB_HOME": str(home)}
    cmd = [sys.executable, "-m", "adapterhub", *args]
    if terminal:  # stdout and stderr a terminal (util-linux `script`): what a person at a shell sees
        cmd = ["script", "-qec", "stty cols 120 rows 40; " + " ".join(cmd), "/dev/null"]  # a size, as a real one has
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_run_json_stdout_is_one_document_and_library_logs_stay_off(causal_with_tokenizer: Path, tmp_path: Path) -> None:
    adapter = factories.make_peft_adapter(causal_with_tokenizer, tmp_path / "a", target_modules=["q_proj", "v_proj"], seed=3)
    base = ["run", "--base", str(causal_with_tokenizer), "--adapter", str(adapter), "--prompt", "the cat"]
    plain = _cli(base, tmp_path / "home")
    assert plain.returncode == 0 and "Loading weights" in plain.stderr  # transformers' bar, without --json
    r = _cli([*base, "--json"], tmp_path / "home")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kind"] == "causal-lm"
    assert "Loading weights" not in r.stderr + r.stdout  # silenced in --json mode


def test_hash_json_stdout_parses(tiny_llama_dir: Path, tmp_path: Path) -> None:
    r = _cli(["hash", str(tiny_llama_dir), "--json"], tmp_path / "home")
    assert r.returncode == 0 and json.loads(r.stdout)["model_type"] == "llama"


def test_run_sentence_on_a_causal_lm_says_what_it_pools(causal_with_tokenizer: Path, tmp_path: Path, run_split) -> None:  # type: ignore[no-untyped-def]
    """The bare base's number is the mean of the last hidden layer (transformers as the oracle), not of the logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = factories.make_peft_adapter(causal_with_tokenizer, tmp_path / "a", target_modules=["q_proj", "v_proj"], seed=3)
    code, out, _ = run_split(
        "run", "--base", str(causal_with_tokenizer), "--adapter", str(adapter), "--sentence", "a fine day", "--json"
    )
    data = json.loads(out)
    assert code == 0 and data["kind"] == "causal-lm" and "last hidden layer" in data["pooled"] and "causal LM" in data["pooled"]
    model = AutoModelForCausalLM.from_pretrained(causal_with_tokenizer).eval()
    enc = AutoTokenizer.from_pretrained(causal_with_tokenizer)("a fine day", return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states[-1][0]
    assert data["base_embedding_norm"] == pytest.approx(float(hidden.mean(0).norm()), rel=1e-4)
    code, out, _ = run_split("run", "--base", str(causal_with_tokenizer), "--sentence", "a fine day")
    assert code == 0 and "mean-pooled the last hidden layer (a causal LM: not a trained sentence embedding)" in out


# --- one-line errors ------------------------------------------------------------------------------------------


def test_a_missing_adapter_folder_says_so(run_split, tiny_llama_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run_split("validate", "my_adapter", "--base", str(tiny_llama_dir))
    assert code == 2 and "'my_adapter': no such folder, and not a registry reference" in err
    code, _, err = run_split("validate", str(tmp_path / "gone"), "--base", str(tiny_llama_dir))
    assert code == 1 and f"{tmp_path / 'gone'}: no such folder" in err and err.count("\n") == 1
    (tmp_path / "f.txt").write_text("x")
    code, _, err = run_split("validate", str(tmp_path / "f.txt"), "--base", str(tiny_llama_dir))
    assert code == 1 and "a file, not an adapter folder" in err


def test_an_unusable_home_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_split) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a-file").write_text("")
    r = _cli(["ls"], tmp_path / "a-file" / "home")
    assert r.returncode == 1 and r.stdout == ""
    assert (
        r.stderr
        == f"error: cannot create the registry folder {tmp_path / 'a-file' / 'home'}: Not a directory; set ADAPTERHUB_HOME to a folder you can write\n"
    )
    home = tmp_path / "read-only"
    home.mkdir()
    monkeypatch.setenv("ADAPTERHUB_HOME", str(home))
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == home else real_access(p, mode)
    )  # root may write anywhere
    code, _, err = run_split("ls")
    assert (
        code == 1 and err == f"error: the registry folder {home} is not writable; set ADAPTERHUB_HOME to a folder you can write\n"
    )


def test_serve_on_a_taken_port_prints_only_the_error(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        r = _cli(["serve", "--port", str(port), "--storage", str(tmp_path / "hub")], tmp_path / "home")
    assert r.returncode == 1 and r.stdout == ""
    assert (
        r.stderr
        == f"error: cannot listen on 127.0.0.1:{port}: Address already in use; stop what holds the port or pick another --port\n"
    )


# --- push and pull ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux `script` for a terminal")
def test_push_shows_progress_on_a_terminal_and_pull_twice_is_one_version(minilm_adapter_dir: Path, tmp_path: Path) -> None:
    from adapterhub.hub.server.background import start_hub
    from adapterhub.store.registry import Registry

    src = tmp_path / "src"
    Registry(home=src).add(minilm_adapter_dir, "me/sent", "sentiment")
    hub = start_hub(tmp_path / "hub", args=["--open"])
    try:
        piped = _cli(["push", "me/sent", "--remote", hub.url], src)
        assert piped.returncode == 0 and piped.stderr == "" and piped.stdout.startswith("me/sent@1 -> ")
        shown = _cli(["push", "me/sent", "--remote", hub.url], src, terminal=True)
        assert shown.returncode == 0 and "push me/sent@1:" in shown.stdout and "B/s]" in shown.stdout, shown.stdout
        dst = tmp_path / "dst"
        first = _cli(["pull", "me/sent", "--remote", hub.url], dst)
        assert (first.returncode, first.stdout, first.stderr) == (0, "me/sent@1\n", "")
        again = _cli(["pull", "me/sent", "--remote", hub.url], dst)
        assert (again.returncode, again.stdout) == (0, "me/sent@1\n")
        assert "me/sent@1 already has these files" in again.stderr and again.stderr.count("\n") == 1
        forced = _cli(["pull", "me/sent", "--remote", hub.url, "--force-new", "-q"], dst)
        assert (forced.returncode, forced.stdout, forced.stderr) == (0, "me/sent@2\n", "")
    finally:
        hub.stop()
