"""Broken, hostile and unsupported adapter folders: each gives the right error class with a one-line message.

Every bad folder is a real file on disk, made by editing a PEFT-saved adapter (or by PEFT itself for other
methods); a crafted pickle proves that nothing is ever unpickled.
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from adapterhub.adapter_check import check_adapter
from adapterhub.errors import AdapterHubError, InvalidAdapter, PickleRefused, UnsupportedFeature
from adapterhub.peft_format import CONFIG_NAME, WEIGHTS_NAME, read_layout
from adapterhub.peft_weights import load_adapter
from adapterhub.tensorfile import read_header
from tests import factories

warnings.filterwarnings("ignore", module="peft")
Q0 = "base_model.model.model.layers.0.self_attn.q_proj"
V0 = "base_model.model.model.layers.0.self_attn.v_proj"


@pytest.fixture
def good(llama_adapter_dir: Path, tmp_path: Path) -> Path:
    """A private copy of a valid PEFT adapter (tiny Llama, q_proj/v_proj, r=4) to break."""
    return Path(shutil.copytree(llama_adapter_dir, tmp_path / "adapter"))


def edit_tensors(folder: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    tensors = load_file(str(folder / WEIGHTS_NAME))
    change(tensors)
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    return folder


def edit_config(folder: Path, change: Callable[[dict], None]) -> Path:
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    change(cfg)
    (folder / CONFIG_NAME).write_text(json.dumps(cfg))
    return folder


def expect(error: type[AdapterHubError], folder: Path, *fragments: str) -> AdapterHubError:
    """load_adapter raises exactly `error` with a one-line message naming the problem; check_adapter reports it."""
    with pytest.raises(AdapterHubError) as info:
        load_adapter(folder)
    exc = info.value
    assert type(exc) is error, f"{type(exc).__name__}: {exc}"
    message = str(exc)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    report = check_adapter(folder)
    assert not report.ok
    assert any(all(f in m for f in fragments) for m in report.messages()), report.messages()
    return exc


def test_the_good_adapter_is_good(good: Path) -> None:
    assert check_adapter(good).ok
    assert len(load_adapter(good).modules) == 4


# --- the file itself -----------------------------------------------------------------------------------------


def test_truncated_safetensors(good: Path) -> None:
    data = (good / WEIGHTS_NAME).read_bytes()
    (good / WEIGHTS_NAME).write_bytes(data[:-100])
    expect(InvalidAdapter, good, "extends past the end of the file")


def test_header_length_overflow(good: Path) -> None:
    data = (good / WEIGHTS_NAME).read_bytes()
    (good / WEIGHTS_NAME).write_bytes(struct.pack("<Q", 2**63 + 5) + data[8:])
    expect(InvalidAdapter, good, "header length")


def test_header_not_json(good: Path) -> None:
    junk = b"{not json at all" + b" " * 16
    (good / WEIGHTS_NAME).write_bytes(struct.pack("<Q", len(junk)) + junk)
    expect(InvalidAdapter, good, "not valid JSON")


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x00"], ids=["zero-bytes", "three-bytes"])
def test_empty_or_tiny_weights_file(good: Path, content: bytes) -> None:
    (good / WEIGHTS_NAME).write_bytes(content)
    expect(InvalidAdapter, good, "shorter than a safetensors header")


def test_weights_file_without_tensors(good: Path) -> None:
    save_file({}, str(good / WEIGHTS_NAME))
    expect(InvalidAdapter, good, "no LoRA tensors")


def test_no_weights_file(good: Path) -> None:
    (good / WEIGHTS_NAME).unlink()
    expect(InvalidAdapter, good, f"no {WEIGHTS_NAME}")


# --- pickle is refused, never opened ---------------------------------------------------------------------------


class _Trap:
    """Unpickling this creates `path`: if the file appears, something unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (str(self.path), "w"))


def test_adapter_model_bin_is_refused(good: Path, tmp_path: Path) -> None:
    trap = tmp_path / "UNPICKLED"
    (good / WEIGHTS_NAME).unlink()
    (good / "adapter_model.bin").write_bytes(pickle.dumps({"x": _Trap(trap)}, protocol=2))
    exc = expect(PickleRefused, good, "pickle", "arbitrary code")
    assert "adapter_model.bin" in str(exc)
    assert not trap.exists()


@pytest.mark.parametrize("kind", ["torch-zip", "raw-pickle-v2", "raw-pickle-v5"])
def test_pickle_renamed_to_safetensors_is_refused(good: Path, tmp_path: Path, kind: str) -> None:
    trap = tmp_path / "UNPICKLED"
    if kind == "torch-zip":
        torch.save({"lora_A": torch.zeros(2, 2), "trap": _Trap(trap)}, good / WEIGHTS_NAME)  # writes; never loads
        assert (good / WEIGHTS_NAME).read_bytes()[:2] == b"PK"
    else:
        (good / WEIGHTS_NAME).write_bytes(pickle.dumps(_Trap(trap), protocol=int(kind[-1])))
    expect(PickleRefused, good, "pickle", "arbitrary code")
    with pytest.raises(PickleRefused):
        read_header(good / WEIGHTS_NAME)
    assert not trap.exists()


def test_safetensors_whose_header_length_starts_with_0x80_is_not_mistaken_for_pickle(good: Path) -> None:
    """A header of 0x..80 bytes makes the file's first byte 0x80, like a pickle; byte 8 (`{`) tells them apart."""
    tensors = load_file(str(good / WEIGHTS_NAME))
    for pad in range(0, 300):
        save_file(tensors, str(good / WEIGHTS_NAME), metadata={"format": "pt", "p": "x" * pad})
        if (good / WEIGHTS_NAME).read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("could not produce a header whose length ends in 0x80")
    assert check_adapter(good).ok


# --- tensors vs config -----------------------------------------------------------------------------------------


def test_missing_lora_b(good: Path) -> None:
    edit_tensors(good, lambda t: t.pop(f"{Q0}.lora_B.weight"))
    expect(InvalidAdapter, good, "model.layers.0.self_attn.q_proj", "lora_B missing")


def test_missing_lora_a(good: Path) -> None:
    edit_tensors(good, lambda t: t.pop(f"{V0}.lora_A.weight"))
    expect(InvalidAdapter, good, "v_proj", "lora_A missing")


def test_shapes_disagree_with_rank(good: Path) -> None:
    edit_config(good, lambda c: c.update(r=8))
    expect(InvalidAdapter, good, "rank 8 from the config (r)", "lora_A is [4, 32]")


def test_rank_pattern_mismatch(good: Path) -> None:
    edit_config(good, lambda c: c.update(rank_pattern={"v_proj": 2}))
    exc = expect(InvalidAdapter, good, "rank 2 from the config (rank_pattern)", "v_proj")
    assert "q_proj" not in str(exc)  # q_proj still has r=4 and is fine


def test_a_and_b_ranks_disagree(good: Path) -> None:
    edit_tensors(good, lambda t: t.update({f"{Q0}.lora_B.weight": torch.zeros(32, 3)}))
    expect(InvalidAdapter, good, "q_proj", "lora_B is [32, 3]")


def test_magnitude_without_use_dora(good: Path) -> None:
    edit_tensors(good, lambda t: t.update({f"{Q0}.lora_magnitude_vector": torch.ones(32)}))
    expect(InvalidAdapter, good, "magnitude vector but use_dora is false")


def test_use_dora_without_magnitude(good: Path) -> None:
    edit_config(good, lambda c: c.update(use_dora=True))
    expect(InvalidAdapter, good, "use_dora is true but the magnitude vector is missing")


def test_lora_bias_of_wrong_shape(good: Path) -> None:
    edit_config(good, lambda c: c.update(lora_bias=True))
    edit_tensors(
        good,
        lambda t: t.update(
            {f"{k[: -len('lora_A.weight')]}lora_B.bias": torch.zeros(5) for k in list(t) if k.endswith("lora_A.weight")}
        ),
    )
    expect(InvalidAdapter, good, "lora_B.bias has shape [5]")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_in_a_tensor(good: Path, dtype: torch.dtype, value: float) -> None:
    def poison(t: dict[str, torch.Tensor]) -> None:
        for k in t:
            t[k] = t[k].to(dtype)
        t[f"{V0}.lora_B.weight"][3, 1] = value

    edit_tensors(good, poison)
    assert read_layout(good).problems == []  # the header is fine; only the values are not
    expect(InvalidAdapter, good, f"{V0}.lora_B.weight", "NaN or Inf")


def test_mixed_dtypes(good: Path) -> None:
    edit_tensors(good, lambda t: t.update({f"{Q0}.lora_A.weight": t[f"{Q0}.lora_A.weight"].half()}))
    expect(InvalidAdapter, good, "mixed dtypes", "1 tensors F16", "7 tensors F32")


def test_duplicate_keys_with_and_without_adapter_name(good: Path) -> None:
    edit_tensors(good, lambda t: t.update({f"{Q0}.lora_A.default.weight": t[f"{Q0}.lora_A.weight"].clone()}))
    expect(InvalidAdapter, good, "duplicate key", "lora_A.default.weight")


def test_keys_with_the_adapter_name_alone_are_read(good: Path) -> None:
    """Hand-made files that keep `.default` (or another adapter name) read the same as PEFT's spelling."""
    reference = load_adapter(good)

    def rename(t: dict[str, torch.Tensor]) -> None:
        for k in list(t):
            t[k.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.mine.weight")] = t.pop(k)

    edit_tensors(good, rename)
    renamed = load_adapter(good)
    assert set(renamed.modules) == set(reference.modules)
    for name, m in reference.modules.items():
        assert torch.equal(renamed.modules[name].delta(), m.delta())


def test_unknown_key(good: Path) -> None:
    edit_tensors(good, lambda t: t.update({"base_model.model.model.norm.weight": torch.ones(32)}))
    expect(InvalidAdapter, good, "unknown key 'model.norm.weight'")


# --- the config ------------------------------------------------------------------------------------------------


def test_broken_config_json(good: Path) -> None:
    (good / CONFIG_NAME).write_text('{"r": 4, "lora_alpha": ')
    expect(InvalidAdapter, good, "adapter_config.json is not valid JSON")


def test_config_not_an_object(good: Path) -> None:
    (good / CONFIG_NAME).write_text("[1, 2, 3]")
    expect(InvalidAdapter, good, "not a JSON object")


def test_missing_config(good: Path) -> None:
    (good / CONFIG_NAME).unlink()
    expect(InvalidAdapter, good, f"no {CONFIG_NAME}")


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [("r", 0, "field r"), ("r", "four", "field r"), ("bias", "some", "field bias"), ("lora_alpha", float("nan"), "field lora_alpha"),
     ("target_modules", 7, "field target_modules"), ("rank_pattern", {"q_proj": -1}, "field rank_pattern"),
     ("rank_pattern", {"(": 2}, "not a valid regular expression")],
)  # fmt: skip
def test_config_fields_with_bad_values(good: Path, field: str, value: object, fragment: str) -> None:
    edit_config(good, lambda c: c.update({field: value}))
    expect(InvalidAdapter, good, fragment)


def test_peft_type_not_lora(llama_adapter_dir: Path, tiny_llama_dir: Path, tmp_path: Path) -> None:
    """A real IA3 adapter saved by PEFT, and a LoRA folder relabelled LOHA."""
    from peft import IA3Config, get_peft_model

    model = get_peft_model(
        factories.load_model(tiny_llama_dir), IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"])
    )
    model.save_pretrained(tmp_path / "ia3")
    expect(UnsupportedFeature, tmp_path / "ia3", "peft_type IA3")
    relabelled = edit_config(Path(shutil.copytree(llama_adapter_dir, tmp_path / "loha")), lambda c: c.update(peft_type="LOHA"))
    expect(UnsupportedFeature, relabelled, "peft_type LOHA")


def test_conv2d_lora_is_unsupported(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    class ConvNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)
            self.head = torch.nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.conv(x).mean((2, 3)))

    torch.manual_seed(0)
    get_peft_model(ConvNet(), LoraConfig(r=2, target_modules=["conv", "head"])).save_pretrained(tmp_path / "conv")
    expect(UnsupportedFeature, tmp_path / "conv", "4-d weight", "module conv")


def test_trainable_tokens_are_unsupported(tiny_llama_dir: Path, tmp_path: Path) -> None:
    folder = factories.make_peft_adapter(
        tiny_llama_dir, tmp_path / "tt", target_modules=["q_proj"], trainable_token_indices=[1, 2]
    )
    expect(UnsupportedFeature, folder, "trainable tokens")


# --- fuzz: the parsers only ever raise adapterhub's own errors ------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
CONFIG_FIELDS = ["r", "lora_alpha", "target_modules", "rank_pattern", "alpha_pattern", "use_rslora", "use_dora",
                 "bias", "modules_to_save", "layers_to_transform", "layers_pattern", "peft_type", "fan_in_fan_out",
                 "task_type", "revision", "lora_dropout", "exclude_modules", "lora_bias", "trainable_token_indices"]  # fmt: skip


@FUZZ
@given(data=st.binary(max_size=300))
def test_fuzz_header_random_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(data)
    try:
        read_header(path)
    except AdapterHubError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(header=st.dictionaries(st.text(max_size=10), json_values, max_size=4), tail=st.binary(max_size=64))
def test_fuzz_header_random_json(tmp_path: Path, header: dict, tail: bytes) -> None:
    path = tmp_path / "fuzz.safetensors"
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + tail)
    try:
        read_header(path)
    except AdapterHubError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(config=st.dictionaries(st.sampled_from(CONFIG_FIELDS) | st.text(max_size=8), json_values, max_size=8))
def test_fuzz_config_random_json(llama_adapter_dir: Path, tmp_path: Path, config: dict) -> None:
    """Random adapter_config.json content (on a real weights file): parsed, or refused with our own error."""
    folder = tmp_path / "fuzz"
    if not folder.exists():
        shutil.copytree(llama_adapter_dir, folder)
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    try:
        read_layout(folder, strict=False)
    except AdapterHubError as exc:
        assert "\n" not in str(exc)
    report = check_adapter(folder)
    assert report.ok or report.problems


@FUZZ
@given(raw=st.binary(max_size=200))
def test_fuzz_config_random_bytes(llama_adapter_dir: Path, tmp_path: Path, raw: bytes) -> None:
    folder = tmp_path / "fuzzb"
    if not folder.exists():
        shutil.copytree(llama_adapter_dir, folder)
    (folder / CONFIG_NAME).write_bytes(raw)
    try:
        load_adapter(folder)
    except AdapterHubError as exc:
        assert "\n" not in str(exc)


def test_module_not_matched_by_target_modules(good: Path) -> None:
    edit_config(good, lambda c: c.update(target_modules=["q_proj"]))
    expect(InvalidAdapter, good, "model.layers.0.self_attn.v_proj: not matched by target_modules")


def test_layers_to_transform_excludes_a_saved_module(good: Path) -> None:
    edit_config(good, lambda c: c.update(layers_to_transform=[1]))
    exc = expect(InvalidAdapter, good, "model.layers.0.self_attn.q_proj: not matched by target_modules")
    assert "layers.1" not in str(exc)


# --- export refuses what it could not read back ----------------------------------------------------------------


def test_save_refuses_an_inconsistent_adapter_and_writes_nothing(llama_adapter_dir: Path, tmp_path: Path) -> None:
    from adapterhub.peft_weights import save_adapter

    adapter = load_adapter(llama_adapter_dir)
    adapter.modules["model.layers.0.self_attn.q_proj"].magnitude = torch.ones(32)  # DoRA tensor, config says LoRA
    with pytest.raises(InvalidAdapter, match="use_dora is false") as info:
        save_adapter(adapter, tmp_path / "out")
    assert str(tmp_path / "out") in str(info.value) and ".ah-tmp" not in str(info.value)
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []

    adapter = load_adapter(llama_adapter_dir)
    adapter.config = adapter.config.model_copy(update={"target_modules": ["v_proj"]})
    with pytest.raises(InvalidAdapter, match="q_proj is not matched by target_modules"):
        save_adapter(adapter, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_linear_and_embedding_keys_mixed_in_one_module(good: Path) -> None:
    def mix(t: dict[str, torch.Tensor]) -> None:
        t[f"{Q0}.lora_embedding_B"] = t.pop(f"{Q0}.lora_B.weight")

    edit_tensors(good, mix)
    expect(InvalidAdapter, good, "model.layers.0.self_attn.q_proj: mixes Linear")
