"""Registry operations on real PEFT adapters, on SQLite and PostgreSQL (the `registry` fixture runs both)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from adapterhub.card import EvalScore, Lineage, ParentLink, SearchQuery
from adapterhub.errors import (
    AdapterNotFound,
    IncompatibleAdapter,
    InvalidAdapter,
    InvalidReference,
    PickleRefused,
    UsageError,
)
from adapterhub.store import orm
from tests import factories
from tests.s3 import read_raw, remove_raw, write_raw


def count_rows(reg) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with reg.db.session() as s:
        return {
            t: s.scalar(sa.select(sa.func.count()).select_from(getattr(orm, c)))
            for t, c in [("repos", "RepoRow"), ("adapters", "AdapterRow"), ("files", "FileRow"), ("scores", "EvalScoreRow"),
                         ("tags", "TagRow"), ("aliases", "AliasRow"), ("bases", "BaseModelRow")]
        }  # fmt: skip


def test_add_records_what_the_adapter_is(registry, minilm_adapter_dir: Path, minilm_dir: Path) -> None:
    card = registry.add(
        minilm_adapter_dir, "team/sentiment", "sentiment", base=minilm_dir,
        scores=[EvalScore(dataset="sst2", metric="accuracy", value=0.91)], tags=["english", "small"],
        description="toy", license="apache-2.0",
    )  # fmt: skip
    assert card.ref == "team/sentiment@1"
    assert card.aliases == ["latest"]
    assert card.rank == 4 and card.alpha == 8.0 and card.method.value == "lora"
    assert card.target_modules == ["query", "value"]
    assert card.base_model is not None and len(card.base_model.content_hash) == 64
    assert {f.path for f in card.files} >= {"adapter_config.json", "adapter_model.safetensors"}
    assert card.tags == ["english", "small"] and card.license == "apache-2.0"
    assert card.score("sst2/accuracy") == pytest.approx(0.91)
    assert registry.get("team/sentiment") == card
    assert registry.get("team/sentiment@1") == card


def test_versions_increase_and_aliases_move(registry, minilm_adapter_dir: Path, llama_adapter_dir: Path) -> None:
    v1 = registry.add(minilm_adapter_dir, "ns/a", "t")
    v2 = registry.add(llama_adapter_dir, "ns/a", "t")
    assert (v1.version, v2.version) == (1, 2)
    assert registry.get("ns/a").version == 2
    assert registry.get("ns/a@latest").version == 2
    registry.tag("ns/a@1", "prod")
    assert registry.get("ns/a@prod").version == 1
    registry.tag("ns/a@2", "prod")
    assert registry.get("ns/a@prod").version == 2
    assert [c.version for c in registry.versions("ns/a")] == [2, 1]
    with pytest.raises(UsageError):
        registry.tag("ns/a@1", "latest")
    # removing the newest moves `latest` back; numbers are never reused
    registry.remove("ns/a@2")
    assert registry.get("ns/a").version == 1
    with pytest.raises(AdapterNotFound):
        registry.get("ns/a@prod")
    assert registry.add(minilm_adapter_dir, "ns/a", "t").version == 1  # same files as the newest: that version
    assert registry.add(minilm_adapter_dir, "ns/a", "t", force_new=True).version == 3
    removed = registry.remove("ns/a")
    assert sorted(c.version for c in removed) == [1, 3]
    with pytest.raises(AdapterNotFound):
        registry.get("ns/a")


def test_search_filters_and_sorting(registry, minilm_adapter_dir: Path, llama_adapter_dir: Path, minilm_dir: Path) -> None:
    registry.add(minilm_adapter_dir, "ns/good", "sentiment", base=minilm_dir, tags=["en"],
                 scores=[EvalScore(dataset="sst2", metric="accuracy", value=0.9),
                         EvalScore(dataset="sst2", metric="loss", value=0.2, higher_is_better=False)])  # fmt: skip
    registry.add(minilm_adapter_dir, "ns/bad", "sentiment", scores=[EvalScore(dataset="sst2", metric="accuracy", value=0.6),
                 EvalScore(dataset="sst2", metric="loss", value=0.9, higher_is_better=False)], description="weak one")  # fmt: skip
    registry.add(llama_adapter_dir, "ns/chat", "chat")

    def names(**kw):  # type: ignore[no-untyped-def]
        return [c.full_name for c in registry.search(SearchQuery(**kw)).items]

    assert sorted(names(task="sentiment")) == ["ns/bad", "ns/good"]
    assert names(task="sentiment", sort="sst2/accuracy") == ["ns/good", "ns/bad"]
    assert names(task="sentiment", sort="sst2/loss") == ["ns/good", "ns/bad"]  # lower loss first
    assert names(min_scores={"sst2/accuracy": 0.8}) == ["ns/good"]
    assert names(min_scores={"sst2/loss": 0.5}) == ["ns/good"]  # "at least as good" for a lower-is-better metric
    assert names(tags=["en"]) == ["ns/good"]
    assert names(text="weak") == ["ns/bad"]
    assert names(text="WEAK ONE") == ["ns/bad"]  # case-insensitive substring, trigram index on SQLite
    assert names(text="ak") == ["ns/bad"]  # shorter than a trigram: the LIKE path
    assert names(text='we"ak%_') == [] and names(text="ns/chat") == ["ns/chat"]
    assert names(rank_min=5) == [] and len(names(rank_max=4)) == 3
    good = registry.get("ns/good")
    assert names(base=good.base_model.content_hash[:10]) == ["ns/good"]
    assert names(base=good.base_model.name) == ["ns/good"]
    assert names(base=str(minilm_dir)) == ["ns/good"]
    res = registry.search(SearchQuery(limit=1))
    assert res.total == 3 and len(res.items) == 1
    registry.remove("ns/bad")  # the text index follows deletes
    assert names(text="weak") == []
    with pytest.raises(UsageError):
        registry.search(SearchQuery(sort="no-slash"))


def test_incompatible_base_names_module_and_registers_nothing(registry, gpt2_adapter_dir: Path, tiny_llama_dir: Path) -> None:
    with pytest.raises(IncompatibleAdapter) as info:
        registry.add(gpt2_adapter_dir, "ns/x", "t", base=tiny_llama_dir)
    assert "transformer.h.0.attn.c_attn" in str(info.value) and "not found" in str(info.value)
    assert count_rows(registry)["adapters"] == 0


def test_shape_mismatch_reports_expected_and_found(registry, tmp_path: Path, llama_adapter_dir: Path) -> None:
    other = factories.build_tiny_llama(tmp_path / "wide", seed=0)
    cfg = json.loads((other / "config.json").read_text())
    # a Llama with a different hidden size: same module names, other shapes
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg_obj = LlamaConfig(**{**cfg, "hidden_size": 48, "head_dim": 12})
    LlamaForCausalLM(cfg_obj).save_pretrained(tmp_path / "wide2")
    with pytest.raises(IncompatibleAdapter) as info:
        registry.add(llama_adapter_dir, "ns/x", "t", base=tmp_path / "wide2")
    msg = str(info.value)
    assert "model.layers.0.self_attn.q_proj" in msg and "expected base weight shape" in msg and "found" in msg
    assert count_rows(registry)["adapters"] == 0


@pytest.mark.parametrize("name", ["../evil", "ns/../x", "ns/na me", "/abs", "ns/name@3", "ns", "ns/" + "x" * 200])
def test_bad_names_are_refused(registry, minilm_adapter_dir: Path, name: str) -> None:
    with pytest.raises((InvalidReference, UsageError)):
        registry.add(minilm_adapter_dir, name, "t")
    assert count_rows(registry)["repos"] == 0


def test_bad_adapters_register_nothing(registry, tmp_path: Path, minilm_adapter_dir: Path) -> None:
    pickled = tmp_path / "pickled"
    shutil.copytree(minilm_adapter_dir, pickled)
    (pickled / "adapter_model.safetensors").write_bytes(b"PK\x03\x04" + b"\0" * 64)  # a torch zip checkpoint
    missing_b = tmp_path / "missing-b"
    shutil.copytree(minilm_adapter_dir, missing_b)
    from safetensors.torch import load_file, save_file

    t = load_file(missing_b / "adapter_model.safetensors")
    save_file(
        {k: v for k, v in t.items() if "layer.0.attention.self.query.lora_B" not in k}, missing_b / "adapter_model.safetensors"
    )
    broken_json = tmp_path / "broken-json"
    shutil.copytree(minilm_adapter_dir, broken_json)
    (broken_json / "adapter_config.json").write_text("{not json")
    truncated = tmp_path / "truncated"
    shutil.copytree(minilm_adapter_dir, truncated)
    data = (truncated / "adapter_model.safetensors").read_bytes()
    (truncated / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    nan = tmp_path / "nan"
    shutil.copytree(minilm_adapter_dir, nan)
    t = load_file(nan / "adapter_model.safetensors")
    first = sorted(t)[0]
    t[first][0, 0] = float("nan")
    save_file(t, nan / "adapter_model.safetensors")
    cases = {
        pickled: PickleRefused,
        missing_b: InvalidAdapter,
        broken_json: InvalidAdapter,
        truncated: InvalidAdapter,
        nan: InvalidAdapter,
    }
    for folder, exc in cases.items():
        with pytest.raises(exc) as info:
            registry.add(folder, "ns/bad", "t")
        assert "\n" not in str(info.value)
    assert count_rows(registry) == {k: 0 for k in count_rows(registry)}


def test_failure_inside_the_transaction_leaves_no_row(
    registry, minilm_adapter_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapterhub.store import records as records_module

    def fail(*_a, **_k):  # type: ignore[no-untyped-def]
        raise RuntimeError("crash after the rows were flushed")

    monkeypatch.setattr(records_module, "set_alias", fail)
    with pytest.raises(RuntimeError):
        registry.add(minilm_adapter_dir, "ns/a", "t", aliases=["prod"], scores=[EvalScore(dataset="d", metric="m", value=1)])
    assert count_rows(registry) == {k: 0 for k in count_rows(registry)}
    # the blobs written before the transaction are orphans; gc removes them and the next add works
    report = registry.gc(grace_seconds=0)
    assert len(report.removed) >= 2
    monkeypatch.undo()
    assert registry.add(minilm_adapter_dir, "ns/a", "t").version == 1


def test_blobs_are_deduplicated_and_gc_keeps_referenced(registry, minilm_adapter_dir: Path) -> None:
    a = registry.add(minilm_adapter_dir, "ns/a", "t")
    b = registry.add(minilm_adapter_dir, "ns/b", "t")
    assert {f.sha256 for f in a.files} == {f.sha256 for f in b.files}
    assert len(list(registry.blobs.iter_digests())) == len(a.files)
    registry.remove("ns/a")
    assert registry.gc(grace_seconds=0).removed == []  # still used by ns/b
    registry.remove("ns/b")
    (registry.home / "tmp" / "pull-killed").mkdir(parents=True)  # what an interrupted pull leaves behind
    (registry.home / "tmp" / "pull-killed" / "adapter_model.safetensors").write_bytes(b"partial")
    report = registry.gc(grace_seconds=0)
    assert sorted(report.removed) == sorted(f.sha256 for f in a.files)
    assert report.stale_staging == 1 and not any((registry.home / "tmp").iterdir())
    assert registry.fsck().clean


def test_fsck_finds_missing_and_corrupt_blobs(registry, minilm_adapter_dir: Path) -> None:
    card = registry.add(minilm_adapter_dir, "ns/a", "t")
    weights = next(f for f in card.files if f.path == "adapter_model.safetensors")
    config = next(f for f in card.files if f.path == "adapter_config.json")
    raw = bytearray(read_raw(registry.blobs, weights.sha256))
    raw[-1] ^= 0xFF
    write_raw(registry.blobs, weights.sha256, bytes(raw))
    remove_raw(registry.blobs, config.sha256)
    report = registry.fsck()
    assert not report.clean
    assert any("adapter_model.safetensors" in x for x in report.corrupt)
    assert any("adapter_config.json" in x for x in report.missing)


def test_export_is_loaded_by_peft_with_identical_outputs(
    registry, minilm_adapter_dir: Path, minilm_dir: Path, tmp_path: Path
) -> None:
    """PEFT is the oracle: the exported folder gives exactly the outputs of the folder PEFT saved."""
    from peft import PeftModel

    registry.add(minilm_adapter_dir, "ns/a", "t")
    out = registry.export("ns/a", tmp_path / "exported")
    inputs = factories.sample_inputs(factories.load_model(minilm_dir))
    ref = factories.model_output(PeftModel.from_pretrained(factories.load_model(minilm_dir), minilm_adapter_dir).eval(), inputs)
    got = factories.model_output(PeftModel.from_pretrained(factories.load_model(minilm_dir), out).eval(), inputs)
    base = factories.model_output(factories.load_model(minilm_dir), inputs)
    assert (ref - base).abs().max() > 1e-3  # the adapter really changes the output
    assert (got - ref).abs().max() <= 1e-6


def test_adapter_path_is_a_loadable_folder(registry, minilm_adapter_dir: Path) -> None:
    from adapterhub.peft_format import read_layout

    registry.add(minilm_adapter_dir, "ns/a", "t")
    p = registry.adapter_path("ns/a@1")
    assert p == registry.adapter_path("ns/a")  # materialised once
    assert read_layout(p).modules.keys() == read_layout(minilm_adapter_dir).modules.keys()


def test_lineage_and_bases(registry, minilm_adapter_dir: Path, minilm_dir: Path) -> None:
    parent = registry.add(minilm_adapter_dir, "ns/p", "t")
    lineage = Lineage(method="compose:cat", parents=[ParentLink(ref=parent.ref, weight=0.5)], params={"rank": 8})
    child = registry.add(minilm_adapter_dir, "ns/c", "t", lineage=lineage)
    assert registry.get(child.ref).lineage == lineage
    info = registry.register_base(minilm_dir, name="minilm")
    assert info.parameter_count > 20_000_000 and info.model_type == "bert"
    assert registry.register_base(minilm_dir).id == info.id  # idempotent by content hash
    assert registry.get_base(info.content_hash[:8]).id == info.id
    assert registry.get_base("minilm").id == info.id
