"""`adapterhub merge | compose | extract`: registry refs with weights, table and JSON output, exit codes 0/1/2."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from adapterhub.cli import main
from adapterhub.lora.delta import delta_weight
from adapterhub.peft_weights import load_adapter


def test_merge_by_registry_ref_with_weight_registers_a_base_with_lineage(
    run, tiny_llama_dir: Path, llama_adapter_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from adapterhub.store.registry import Registry

    assert run("add", str(llama_adapter_dir), "--name", "t/qv", "--task", "lm", "--base", str(tiny_llama_dir))[0] == 0
    code, out = run("merge", "--base", str(tiny_llama_dir), "--adapter", "t/qv@1:0.5", "--out", str(tmp_path / "m"),
                    "--name", "llama-qv-half", "--dtype", "float32", "--json")  # fmt: skip
    assert code == 0, out
    res = json.loads(out)
    assert res["files"] == ["model.safetensors"] and res["merged_tensors"] == 4
    info = Registry().get_base("llama-qv-half")
    assert info.lineage is not None and info.lineage.method == "merge"
    assert [(p.ref, p.weight) for p in info.lineage.parents] == [("t/qv@1", 0.5)]
    base_hash = [b for b in Registry().list_bases() if b.name != "llama-qv-half"][0].content_hash
    assert info.lineage.base == base_hash and info.content_hash != base_hash
    # the weight really was applied: merged = base + 0.5 * delta
    ad = load_adapter(llama_adapter_dir)
    merged = load_file(str(tmp_path / "m" / "model.safetensors"))
    base = load_file(str(tiny_llama_dir / "model.safetensors"))
    k = "model.layers.0.self_attn.q_proj"
    torch.testing.assert_close(merged[k + ".weight"], base[k + ".weight"] + 0.5 * delta_weight(ad.modules[k]))


def test_merge_table_output_and_failures(
    run, tiny_llama_dir: Path, tiny_gpt2_dir: Path, llama_adapter_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    code, out = run(
        "merge", "--base", str(tiny_llama_dir), "--adapter", str(llama_adapter_dir), "--out", str(tmp_path / "m"), "--no-register"
    )
    assert code == 0 and "tensors changed  4" in out and "registered as" not in out
    runner = CliRunner()
    r = runner.invoke(
        main,
        [
            "merge",
            "--base",
            str(tiny_gpt2_dir),
            "--adapter",
            str(llama_adapter_dir),
            "--out",
            str(tmp_path / "g"),
            "--no-register",
        ],
    )
    assert r.exit_code == 1 and "does not fit base" in r.output and "q_proj" in r.output
    assert not (tmp_path / "g").exists()
    r = runner.invoke(
        main, ["merge", "--base", str(tiny_llama_dir), "--adapter", f"{llama_adapter_dir}:abc", "--out", str(tmp_path / "x")]
    )
    assert r.exit_code == 2 and "bad weight" in r.output
    r = runner.invoke(
        main,
        [
            "merge",
            "--base",
            str(tiny_llama_dir),
            "--adapter",
            str(llama_adapter_dir),
            "--out",
            str(tmp_path / "x"),
            "--dtype",
            "int7",
        ],
    )
    assert r.exit_code == 2 and "unknown dtype" in r.output
    r = runner.invoke(main, ["merge", "--base", str(tiny_llama_dir), "--adapter", "no/such@3", "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "not found" in r.output


def test_compose_registers_and_prints_energy(run, tiny_llama_dir: Path, llama_adapter_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from adapterhub.store.registry import Registry

    run("add", str(llama_adapter_dir), "--name", "t/a", "--task", "lm", "--base", str(tiny_llama_dir))
    run("add", str(llama_adapter_dir), "--name", "t/b", "--task", "lm")
    code, out = run(
        "compose", "t/a", "t/b:-0.25", "--method", "svd", "--rank", "2", "--name", "t/mix", "--out", str(tmp_path / "c")
    )
    assert code == 0, out
    assert out.startswith("t/mix@1: svd, rank 2, 4 modules") and "RETAINED ENERGY" in out
    card = Registry().get("t/mix")
    assert card.lineage is not None and card.lineage.method == "compose:svd" and card.lineage.params == {"rank": 2}
    assert [(p.ref, p.weight) for p in card.lineage.parents] == [("t/a@1", 1.0), ("t/b@1", -0.25)]
    code, out = run("compose", "t/a", "--method", "cat", "--name", "t/one", "--json")
    res = json.loads(out)
    assert code == 0 and res["rank"] == 4 and res["card"]["lineage"]["method"] == "compose:cat"
    runner = CliRunner()
    r = runner.invoke(main, ["compose", "t/a", "t/b", "--method", "ties", "--name", "t/bad"])
    assert r.exit_code == 2 and "density" in r.output
    r = runner.invoke(main, ["compose", "t/a", "--method", "mean", "--name", "t/bad"])
    assert r.exit_code == 2


def test_extract_round_trip(run, tiny_llama_dir: Path, llama_adapter_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert (
        run(
            "merge",
            "--base",
            str(tiny_llama_dir),
            "--adapter",
            str(llama_adapter_dir),
            "--out",
            str(tmp_path / "m"),
            "--no-register",
        )[0]
        == 0
    )
    code, out = run("extract", "--base", str(tiny_llama_dir), "--finetuned", str(tmp_path / "m"), "--rank", "4",
                    "--targets", "q_proj,v_proj", "--name", "t/ex", "--json")  # fmt: skip
    assert code == 0, out
    res = json.loads(out)
    assert res["modules"] == 4 and all(abs(e - 1) < 1e-6 for e in res["energy"].values())
    code, out = run("show", "t/ex", "--json")
    assert code == 0 and json.loads(out)["lineage"]["method"] == "extract"
    r = CliRunner().invoke(
        main, ["extract", "--base", str(tiny_llama_dir), "--finetuned", str(tiny_llama_dir), "--rank", "2", "--name", "t/none"]
    )
    assert r.exit_code == 2 and "no targeted linear weight differs" in r.output
