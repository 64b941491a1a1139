"""The base-model fingerprint: resolution of model layouts, hash invariances, the digest cache, and bad inputs.

The oracle for content/arch hashes is an independent re-implementation of the documented scheme over tensors read
with safetensors' own loader (`safe_open`), so the tests check the published definition, not the code against itself.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from adapterhub.errors import InvalidModel, PickleRefused
from adapterhub.fingerprint import (
    arch_hash,
    content_hash,
    digest_cache_dir,
    fingerprint,
    hash_model,
    model_type,
    resolve_model_files,
)

# the module itself: `adapterhub.fingerprint` as an attribute of the package is the re-exported function
fpmod = importlib.import_module("adapterhub.fingerprint")

ORACLE_PIECE = 64 << 20  # the published piece size, restated here on purpose
DTYPE_NAMES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64", torch.int64: "I64",
    torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}  # fmt: skip
SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U8": 1, "I32": 4}
HYPO = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---- helpers ------------------------------------------------------------------------------------------------------

Raw = dict[str, tuple[str, tuple[int, ...], bytes]]  # name -> (dtype, shape, bytes)


def write_raw(path: Path, tensors: list[tuple[str, str, tuple[int, ...], bytes]], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file with tensors laid out in exactly the given order (save_file picks its own)."""
    header: dict[str, object] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)  # the format pads the header to 8 bytes
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)) + blob + b"".join(t[3] for t in tensors))


def write_sharded(folder: Path, raw: Raw, shards: list[list[str]], metadata: dict[str, str] | None = None) -> Path:
    """Write `raw` split into the given shards (tensor order inside each shard as listed) plus an index JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    for i, names in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_raw(folder / fname, [(n, *raw[n]) for n in names], metadata)
        weight_map.update({n: fname for n in names})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return folder


def oracle(path_files: list[Path], piece: int = ORACLE_PIECE) -> tuple[str, str, int]:
    """(arch_hash, content_hash, parameter_count) per the documented scheme, read through safetensors' loader."""
    tensors: dict[str, torch.Tensor] = {}
    for f in path_files:
        with safe_open(str(f), framework="pt") as sf:
            for k in sf.keys():
                tensors[k] = sf.get_tensor(k)
    arch, content = hashlib.sha256(), hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        dtype, shape = DTYPE_NAMES[t.dtype], list(t.shape)
        data = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        pieces = [hashlib.sha256(data[i : i + piece]).digest() for i in range(0, len(data), piece)]
        digest = hashlib.sha256(b"".join(pieces or [hashlib.sha256(b"").digest()])).hexdigest()
        arch.update(json.dumps([name, shape, dtype], separators=(",", ":")).encode() + b"\n")
        content.update(json.dumps([name, dtype, shape, digest], separators=(",", ":")).encode() + b"\n")
    return arch.hexdigest(), content.hexdigest(), sum(t.numel() for t in tensors.values())


@st.composite
def raw_models(draw: st.DrawFn) -> Raw:
    names = draw(st.lists(st.sampled_from([f"layers.{i}.{p}" for i in range(4) for p in ("w", "b", "norm")] + ["embed", "head"]),
                          min_size=1, max_size=8, unique=True))  # fmt: skip
    rng = random.Random(draw(st.integers(0, 2**32)))
    raw: Raw = {}
    for n in names:
        dtype = draw(st.sampled_from(sorted(SIZES)))
        shape = tuple(draw(st.lists(st.integers(0, 5), min_size=0, max_size=3)))
        numel = 1
        for d in shape:
            numel *= d
        raw[n] = (dtype, shape, rng.randbytes(numel * SIZES[dtype]))
    return raw


def settle(folder: Path) -> Path:
    """Backdate every file under `folder` by a minute: files changed in the last 2 s are never cached (racy rule)."""
    for f in [folder, *folder.rglob("*")]:
        if f.is_file() and not f.is_symlink():
            st = f.stat()
            os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns - 60_000_000_000))
    return folder


def single_file(folder: Path, raw: Raw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_raw(folder / "model.safetensors", [(n, *raw[n]) for n in sorted(raw)])
    return folder


# ---- hypothesis properties ----------------------------------------------------------------------------------------


@HYPO
@given(raw=raw_models(), data=st.data())
def test_sharding_order_and_metadata_do_not_change_hashes(raw: Raw, data: st.DataObject) -> None:
    names = list(raw)
    n_shards = data.draw(st.integers(1, len(names)), label="shards")
    assign = {n: data.draw(st.integers(0, n_shards - 1), label=f"shard of {n}") for n in names}
    shards = [data.draw(st.permutations([n for n in names if assign[n] == i]), label=f"order {i}") for i in range(n_shards)]
    shards = [s for s in shards if s]
    meta = data.draw(st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3)), label="meta")
    with tempfile.TemporaryDirectory() as td:
        one = single_file(Path(td) / "one", raw)
        many = write_sharded(Path(td) / "many", raw, shards, meta)
        a, b = fingerprint(one, progress=False), fingerprint(many, progress=False)
        assert len(resolve_model_files(many)) == len(shards)
        assert a == b
        o_arch, o_content, o_params = oracle(resolve_model_files(many))
        assert (b.arch_hash, b.content_hash, b.parameter_count, b.tensor_count) == (o_arch, o_content, o_params, len(raw))


@HYPO
@given(raw=raw_models(), data=st.data())
def test_one_changed_byte_changes_content_hash_only(raw: Raw, data: st.DataObject) -> None:
    nonempty = sorted(n for n in raw if raw[n][2])
    if not nonempty:
        raw["extra"] = ("U8", (3,), b"abc")
        nonempty = ["extra"]
    name = data.draw(st.sampled_from(nonempty), label="tensor")
    dtype, shape, blob = raw[name]
    pos = data.draw(st.integers(0, len(blob) - 1), label="byte")
    flip = data.draw(st.integers(1, 255), label="xor")
    changed = dict(raw)
    changed[name] = (dtype, shape, blob[:pos] + bytes([blob[pos] ^ flip]) + blob[pos + 1 :])
    with tempfile.TemporaryDirectory() as td:
        a = fingerprint(single_file(Path(td) / "a", raw), progress=False)
        b = fingerprint(single_file(Path(td) / "b", changed), progress=False)
    assert a.arch_hash == b.arch_hash
    assert a.content_hash != b.content_hash


@HYPO
@given(raw=raw_models(), data=st.data(), change=st.sampled_from(["shape", "dtype", "name"]))
def test_changed_shape_dtype_or_name_changes_arch_hash(raw: Raw, data: st.DataObject, change: str) -> None:
    name = data.draw(st.sampled_from(sorted(raw)), label="tensor")
    dtype, shape, blob = raw[name]
    changed = dict(raw)
    if change == "shape":  # same bytes, another shape: a trailing 1 (or flattening a 1-element scalar)
        changed[name] = (dtype, (*shape, 1), blob)
    elif change == "dtype":  # same bytes reinterpreted as another dtype of the same width, or a widened copy
        other = {"F16": "BF16", "BF16": "F16", "F32": "I32", "I32": "F32", "I64": "F32", "U8": "F16"}[dtype]
        changed[name] = (other, shape, blob if SIZES[other] == SIZES[dtype] else bytes(len(blob) // SIZES[dtype] * SIZES[other]))
    else:
        del changed[name]
        changed[name + ".renamed"] = (dtype, shape, blob)
    with tempfile.TemporaryDirectory() as td:
        a = fingerprint(single_file(Path(td) / "a", raw), progress=False)
        b = fingerprint(single_file(Path(td) / "b", changed), progress=False)
    assert a.arch_hash != b.arch_hash
    assert a.content_hash != b.content_hash  # the content hash covers (name, dtype, shape) too


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=300), mutate=st.booleans())
def test_arbitrary_bytes_raise_only_our_errors(tmp_path: Path, blob: bytes, mutate: bool) -> None:
    """Garbage, or a valid file with its header bytes overwritten, never crashes: InvalidModel or PickleRefused."""
    f = Path(tempfile.mkdtemp(dir=tmp_path)) / "model.safetensors"
    if mutate:
        write_raw(f, [("a", "F32", (2, 2), bytes(16)), ("b", "U8", (3,), b"xyz")])
        data = bytearray(f.read_bytes())
        data[: len(blob)] = blob[: len(data)]
        f.write_bytes(bytes(data))
    else:
        f.write_bytes(blob)
    try:
        fp = fingerprint(f, progress=False)
    except (InvalidModel, PickleRefused):
        return
    assert oracle([f])[:2] == (fp.arch_hash, fp.content_hash)  # whatever still parses must hash by the scheme


# ---- real models ----------------------------------------------------------------------------------------------------

MINILM_ARCH = "b8d8f384a20bb8db33c89f22e7099fe5899741b1f852cd80710f34d499710e07"
MINILM_CONTENT = "acc8fe9a14db5b4c7dbacee702204b329387a6460c151a982613ef5d53516c0f"


def test_minilm_hashes_stably_and_matches_the_scheme(minilm_dir: Path) -> None:
    """Pinned values guard the scheme: a change here changes every base hash users have already recorded."""
    first = fingerprint(minilm_dir, progress=False, use_cache=False)
    again = fingerprint(minilm_dir, progress=False)
    cached = fingerprint(minilm_dir, progress=False)
    assert first == again == cached
    o_arch, o_content, o_params = oracle(resolve_model_files(minilm_dir))
    assert (first.arch_hash, first.content_hash, first.parameter_count) == (o_arch, o_content, o_params)
    assert (first.arch_hash, first.content_hash) == (MINILM_ARCH, MINILM_CONTENT)
    assert first.dtype == "F32" and first.tensor_count == 104
    assert model_type(minilm_dir) == "bert"


def test_save_pretrained_sharded_equals_single_file(tmp_path: Path, tiny_llama_dir: Path) -> None:
    from transformers import LlamaForCausalLM

    single = tiny_llama_dir
    model = LlamaForCausalLM.from_pretrained(single)
    model.save_pretrained(tmp_path / "sharded", safe_serialization=True, max_shard_size="40KB")
    shards = resolve_model_files(tmp_path / "sharded")
    assert len(shards) > 2 and (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    a, b = fingerprint(single, progress=False), fingerprint(tmp_path / "sharded", progress=False)
    assert a == b
    assert a.parameter_count == sum(t.numel() for t in model.state_dict().values())
    assert model_type(tmp_path / "sharded") == "llama"
    assert arch_hash(single) == a.arch_hash and content_hash(tmp_path / "sharded") == a.content_hash


def _bytes_read_by_this_process() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io to count bytes read")
def test_arch_hash_reads_headers_only(tmp_path: Path) -> None:
    """rchar counts every byte this process read(): hashing the architecture of 8 MB of weights reads a few KB."""
    save_file({f"w{i}": torch.ones(512, 1024) for i in range(4)}, str(tmp_path / "model.safetensors"))
    before = _bytes_read_by_this_process()
    arch = arch_hash(tmp_path)
    assert _bytes_read_by_this_process() - before < 64 * 1024
    assert arch == oracle([tmp_path / "model.safetensors"])[0]


def test_dtype_is_the_one_holding_most_parameters(tmp_path: Path) -> None:
    mixed = {"big": torch.zeros(10, 10, dtype=torch.bfloat16), "a": torch.zeros(30), "b": torch.zeros(30)}
    save_file(mixed, str(tmp_path / "m.safetensors"))
    fp = fingerprint(tmp_path / "m.safetensors", progress=False)
    assert (fp.dtype, fp.parameter_count, fp.tensor_count) == ("BF16", 160, 3)
    save_file({"x": torch.zeros(4, dtype=torch.float16), "y": torch.zeros(4)}, str(tmp_path / "tie.safetensors"))
    assert fingerprint(tmp_path / "tie.safetensors", progress=False).dtype == "F16"  # a tie goes to the first name


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 3 * 4096 + 7), min_size=1, max_size=12), seed=st.integers(0, 1000))
def test_piece_planning_with_a_small_piece_size(monkeypatch: pytest.MonkeyPatch, sizes: list[int], seed: int) -> None:
    """With 4 KiB pieces, random tensor sizes exercise every planning case (batches of small tensors, exact
    multiples, multi-piece tensors, empty ones) against the oracle using the same piece size."""
    monkeypatch.setattr(fpmod, "PIECE_BYTES", 4096)
    monkeypatch.setattr(fpmod, "WINDOW_BYTES", 1024)
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as td:
        f = Path(td) / "model.safetensors"
        write_raw(f, [(f"t{i:02d}", "U8", (n,), rng.randbytes(n)) for i, n in enumerate(sizes)])
        fp = hash_model(f, progress=False, use_cache=False, threads=2).fingerprint
        assert fp.content_hash == oracle([f], piece=4096)[1]


def test_unusual_tensor_names_follow_the_json_scheme(tmp_path: Path) -> None:
    names = ['quote"d', "back\\slash", "ünïcødé.weight", "tab\tname", "emoji😀", "/leading.slash"]
    write_raw(tmp_path / "m.safetensors", [(n, "U8", (i + 1,), bytes(range(i + 1))) for i, n in enumerate(names)])
    fp = fingerprint(tmp_path / "m.safetensors", progress=False)
    assert (fp.arch_hash, fp.content_hash) == oracle([tmp_path / "m.safetensors"])[:2]


def test_tensor_larger_than_one_piece(tmp_path: Path) -> None:
    """A tensor over 64 MiB is digested in pieces (by 2 threads); the result must follow the published scheme."""
    big = torch.randint(0, 255, (ORACLE_PIECE + 12345,), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    save_file({"big": big, "small": torch.arange(7, dtype=torch.float32)}, str(tmp_path / "model.safetensors"))
    report = hash_model(tmp_path, progress=False, threads=2)
    assert report.fingerprint.content_hash == oracle([tmp_path / "model.safetensors"])[1]
    assert report.bytes_hashed == report.tensor_bytes == ORACLE_PIECE + 12345 + 28


def test_progress_bar_only_when_asked_or_on_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = single_file(tmp_path / "m", {"a": ("U8", (5000,), bytes(5000))})
    hash_model(folder, use_cache=False)  # progress=None: stderr is captured here, not a terminal
    assert capsys.readouterr().err == ""
    hash_model(folder, progress=True, use_cache=False)
    assert "hashing" in capsys.readouterr().err


# ---- layouts --------------------------------------------------------------------------------------------------------


def _hf_cache(root: Path, src: Path, rev: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """Lay `src`'s files out the way huggingface_hub does: blobs named by hash, snapshot entries as relative links."""
    repo = root / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        if not blob.exists():
            blob.write_bytes(f.read_bytes())
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / digest)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    return repo


def test_hf_cache_snapshot_and_repo_root(tmp_path: Path, tiny_llama_dir: Path) -> None:
    repo = settle(_hf_cache(tmp_path / "hub", tiny_llama_dir))
    snap = next((repo / "snapshots").iterdir())
    expected = fingerprint(tiny_llama_dir, progress=False)
    assert resolve_model_files(repo) == resolve_model_files(snap) == [snap / "model.safetensors"]
    assert (snap / "model.safetensors").is_symlink()
    assert fingerprint(snap, progress=False) == fingerprint(repo, progress=False) == expected
    assert model_type(repo) == "llama"
    # another revision pointing at the same blob reuses the cached digests (the cache keys the resolved path)
    other = repo / "snapshots" / "fedcba9876543210fedcba9876543210fedcba98"
    other.mkdir()
    (other / "model.safetensors").symlink_to(os.readlink(snap / "model.safetensors"))
    report = hash_model(other, progress=False)
    assert report.fingerprint == expected and report.bytes_hashed == 0 and report.cached_files == 1


def test_hf_cache_broken_layouts(tmp_path: Path, tiny_llama_dir: Path) -> None:
    repo = _hf_cache(tmp_path / "hub", tiny_llama_dir)
    snap = next((repo / "snapshots").iterdir())
    (repo / "refs" / "main").write_bytes(b"\xff\xfe")
    with pytest.raises(InvalidModel, match="cannot read"):
        resolve_model_files(repo)
    (repo / "refs" / "main").write_text("../../../etc")
    with pytest.raises(InvalidModel, match="not a revision"):
        resolve_model_files(repo)
    (repo / "refs" / "main").write_text("ffffffffffffffffffffffffffffffffffffffff")
    with pytest.raises(InvalidModel, match="not in snapshots"):
        resolve_model_files(repo)
    (repo / "refs" / "main").unlink()
    assert resolve_model_files(repo) == [snap / "model.safetensors"]  # a lone snapshot is unambiguous
    for blob in (repo / "blobs").iterdir():
        blob.unlink()  # an interrupted download leaves dangling links
    with pytest.raises(InvalidModel, match="broken symlink"):
        resolve_model_files(snap)


def test_single_file_and_index_file_paths(tmp_path: Path, tiny_llama_dir: Path) -> None:
    raw: Raw = {"a": ("F32", (2,), bytes(8)), "b": ("U8", (1,), b"z")}
    folder = write_sharded(tmp_path / "m", raw, [["a"], ["b"]])
    index = folder / "model.safetensors.index.json"
    assert resolve_model_files(index) == resolve_model_files(folder)
    assert resolve_model_files(tiny_llama_dir / "model.safetensors") == [tiny_llama_dir / "model.safetensors"]
    assert model_type(tiny_llama_dir / "model.safetensors") == "llama"
    assert model_type(folder) is None  # no config.json
    (folder / "config.json").write_text("{not json")
    assert model_type(folder) is None


# ---- the digest cache -----------------------------------------------------------------------------------------------


def _flip_byte_keep_stat(path: Path, offset: int) -> None:
    """Change one byte in place (same inode and size) and put the old mtime back."""
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_cache_hit_reads_no_bytes_and_changed_files_are_rehashed(tmp_path: Path, adapterhub_home: Path) -> None:
    raw: Raw = {f"t{i}": ("F32", (64,), random.Random(i).randbytes(256)) for i in range(6)}
    folder = settle(write_sharded(tmp_path / "m", raw, [["t0", "t1", "t2"], ["t3", "t4", "t5"]]))
    first = hash_model(folder, progress=False)
    assert (first.bytes_hashed, first.cached_files) == (first.tensor_bytes, 0)
    assert digest_cache_dir().is_relative_to(adapterhub_home) and len(list(digest_cache_dir().glob("*.json"))) == 2
    second = hash_model(folder, progress=False)
    assert (second.bytes_hashed, second.cached_files, second.fingerprint) == (0, 2, first.fingerprint)

    # Evidence that a hit reads no tensor bytes: change a byte behind the cache's back (same size, mtime, inode);
    # the cached answer is the old one, while an uncached read sees the change.
    shard = resolve_model_files(folder)[1]
    _flip_byte_keep_stat(shard, shard.stat().st_size - 1)
    stale = hash_model(folder, progress=False)
    fresh = hash_model(folder, progress=False, use_cache=False)
    assert stale.fingerprint.content_hash == first.fingerprint.content_hash and stale.bytes_hashed == 0
    assert fresh.fingerprint.content_hash != first.fingerprint.content_hash

    # A new mtime invalidates only that file's entry.
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 1_000_000))
    third = hash_model(folder, progress=False)
    assert third.fingerprint.content_hash == fresh.fingerprint.content_hash
    assert (third.bytes_hashed, third.cached_files) == (768, 1)

    # A file replaced by rename (new inode), with the same size and mtime, is re-hashed too.
    st = shard.stat()
    replacement = shard.with_name("new.tmp")
    replacement.write_bytes(shard.read_bytes())
    _flip_byte_keep_stat(replacement, replacement.stat().st_size - 2)
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(replacement, shard)
    assert (shard.stat().st_size, shard.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns) and shard.stat().st_ino != st.st_ino
    fourth = hash_model(folder, progress=False)
    assert fourth.bytes_hashed == 768
    assert fourth.fingerprint.content_hash == oracle(resolve_model_files(folder))[1] != third.fingerprint.content_hash


def test_files_written_moments_ago_are_not_cached(tmp_path: Path) -> None:
    """A same-size rewrite within one timestamp tick would keep (size, mtime, inode): fresh files are not cached."""
    folder = single_file(tmp_path / "m", {"a": ("F32", (4,), bytes(range(16)))})
    assert [hash_model(folder, progress=False).bytes_hashed for _ in range(2)] == [16, 16]
    assert not list(digest_cache_dir().glob("*.json"))
    settle(folder)
    assert [hash_model(folder, progress=False).bytes_hashed for _ in range(2)] == [16, 0]


def test_corrupt_cache_entry_is_a_miss(tmp_path: Path) -> None:
    folder = settle(single_file(tmp_path / "m", {"a": ("F32", (4,), bytes(range(16)))}))
    good = hash_model(folder, progress=False).fingerprint
    (entry,) = digest_cache_dir().glob("*.json")
    for junk in (b"{broken", b"[]", json.dumps({"scheme": fpmod.SCHEME, "key": {}, "tensors": {}}).encode()):
        entry.write_bytes(junk)
        report = hash_model(folder, progress=False)
        assert report.fingerprint == good and report.bytes_hashed == 16
    assert hash_model(folder, progress=False).bytes_hashed == 0  # the entry was rewritten


def test_unwritable_cache_still_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path / "file" / "home"))  # a home below a file cannot be created
    folder = single_file(tmp_path / "m", {"a": ("U8", (3,), b"abc")})
    assert fingerprint(folder, progress=False).content_hash == oracle([folder / "model.safetensors"])[1]


def test_concurrent_processes_read_each_file_once(tmp_path: Path) -> None:
    """Three processes hash one sharded model at once: the per-file lock means every shard is read exactly once."""
    raw: Raw = {f"t{i}": ("U8", (200_000,), random.Random(i).randbytes(200_000)) for i in range(6)}
    folder = settle(write_sharded(tmp_path / "m", raw, [["t0", "t1"], ["t2", "t3"], ["t4", "t5"]]))
    code = "import sys; from adapterhub.fingerprint import hash_model as h; print(h(sys.argv[1]).model_dump_json())"
    cmd = [sys.executable, "-c", code, str(folder)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, env=os.environ.copy()) for _ in range(3)]
    reports = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len({json.dumps(r["fingerprint"], sort_keys=True) for r in reports}) == 1
    assert sum(r["bytes_hashed"] for r in reports) == 1_200_000
    assert sum(r["cached_files"] for r in reports) == 6


# ---- bad inputs -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0, 5, 8, 40, -1])
def test_truncated_file(tmp_path: Path, keep: int) -> None:
    f = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(16, 16), "b": torch.ones(16)}, str(f))
    data = f.read_bytes()
    f.write_bytes(data[:keep] if keep >= 0 else data[:-3])
    with pytest.raises(InvalidModel) as exc:
        fingerprint(tmp_path, progress=False)
    assert "\n" not in str(exc.value)


def test_pickles_are_refused_unread(tmp_path: Path) -> None:
    state = {"w": torch.ones(2)}
    (tmp_path / "renamed").mkdir()
    torch.save(state, tmp_path / "renamed" / "model.safetensors")  # zip magic PK\x03\x04 under a safetensors name
    with pytest.raises(PickleRefused):
        fingerprint(tmp_path / "renamed", progress=False)
    with pytest.raises(PickleRefused):
        fingerprint(tmp_path / "renamed" / "model.safetensors", progress=False)
    (tmp_path / "binonly").mkdir()
    torch.save(state, tmp_path / "binonly" / "pytorch_model.bin")
    (tmp_path / "binonly" / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(PickleRefused):
        resolve_model_files(tmp_path / "binonly")
    with pytest.raises(PickleRefused):
        resolve_model_files(tmp_path / "binonly" / "pytorch_model.bin")
    (tmp_path / "binonly" / "model.safetensors.index.json").write_text('{"weight_map": {"w": "pytorch_model.bin"}}')
    with pytest.raises(PickleRefused):  # an index may not lead to a pickle either
        resolve_model_files(tmp_path / "binonly")


def _two_shards(folder: Path) -> Path:
    return write_sharded(folder, {"a": ("F32", (2,), bytes(8)), "b": ("U8", (1,), b"z")}, [["a"], ["b"]])


@pytest.mark.parametrize(
    ("index_text", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"metadata": {}}', "weight_map"),
        ('{"weight_map": {"a": 3}}', "weight_map"),
        ('{"weight_map": {"a": "../outside.safetensors"}}', "plain relative path"),
        ('{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors"}}', "does not hold"),
    ],
)
def test_broken_index(tmp_path: Path, index_text: str, match: str) -> None:
    folder = _two_shards(tmp_path / "m")
    (folder / "model.safetensors.index.json").write_text(index_text)
    with pytest.raises(InvalidModel, match=match):
        fingerprint(folder, progress=False)


def test_missing_shard_and_duplicate_tensor(tmp_path: Path) -> None:
    folder = _two_shards(tmp_path / "m")
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(InvalidModel, match="shard model-00002-of-00002.safetensors listed in the index is missing"):
        resolve_model_files(folder)
    dup = write_sharded(tmp_path / "d", {"a": ("F32", (2,), bytes(8))}, [["a"]])
    write_raw(dup / "model-00002-of-00002.safetensors", [("a", "F32", (2,), bytes(8))])
    index = json.loads((dup / "model.safetensors.index.json").read_text())
    index["weight_map"]["b"] = "model-00002-of-00002.safetensors"
    (dup / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(InvalidModel, match="also stored in"):
        fingerprint(dup, progress=False)


def test_folders_that_are_not_models(tmp_path: Path, llama_adapter_dir: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidModel, match="no model.safetensors"):
        resolve_model_files(tmp_path / "empty")
    with pytest.raises(InvalidModel, match="no such file"):
        resolve_model_files(tmp_path / "missing")
    with pytest.raises(InvalidModel, match="PEFT adapter folder"):
        resolve_model_files(llama_adapter_dir)
    loose = tmp_path / "loose"
    loose.mkdir()
    for i in (1, 2):
        write_raw(loose / f"model-0000{i}-of-00002.safetensors", [(f"t{i}", "U8", (1,), b"x")])
    with pytest.raises(InvalidModel, match="no model.safetensors.index.json"):
        resolve_model_files(loose)
    empty_model = tmp_path / "notensors.safetensors"
    write_raw(empty_model, [])
    with pytest.raises(InvalidModel, match="holds no tensors"):
        fingerprint(empty_model, progress=False)
