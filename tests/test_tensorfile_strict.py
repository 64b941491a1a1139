"""`tensorfile.read_header` accepts exactly the safetensors files `safetensors.safe_open` accepts (safetensors 0.8's
`read_metadata` + `Metadata::validate`), except where adapterhub is stricter on purpose: duplicate JSON keys, a dtype
adapterhub does not read (F4, F6_*, C64, ...), a tensor entry that is not an object or a dtype that is not a string.

Hypothesis builds valid headers and mutates them (duplicate names, gaps and overlaps, trailing bytes, UTF-16,
non-integer shapes and offsets, bad `__metadata__`, a header length past the end, deep nesting, ...)."""

from __future__ import annotations

import json
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapterhub.errors import InvalidAdapter, InvalidFile
from adapterhub.tensorfile import DTYPE_SIZES, MAX_JSON_DEPTH, SAFETENSORS_DTYPE_BITS, read_header

safetensors = pytest.importorskip("safetensors")


@dataclass
class Built:
    header: bytes
    data_len: int
    stricter: bool = False  # adapterhub refuses it even where safetensors loads it
    declared: int | None = None  # header length field, when it lies
    notes: list[str] = field(default_factory=list)


def _entry_text(fields: list[tuple[str, object]]) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in fields) + "}"


names = st.text(st.characters(blacklist_categories=("Cs",), min_codepoint=1), min_size=0, max_size=12)
bad_numbers = st.sampled_from([-1, 1.0, 2.5, "2", True, None, 2**64, -0.0, [1]])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def headers(draw: st.DrawFn) -> Built:
    count = draw(st.integers(0, 4))
    tensor_names = draw(st.lists(names, min_size=count, max_size=count, unique=True).filter(lambda ns: "__metadata__" not in ns))
    entries: list[tuple[str, list[tuple[str, object]]]] = []
    sizes = []
    stricter = False
    for name in tensor_names:
        dtype = draw(st.sampled_from(sorted(SAFETENSORS_DTYPE_BITS)))
        shape = draw(st.lists(st.integers(0, 5), max_size=3))
        n = 1
        for d in shape:
            n *= d
        bits = n * SAFETENSORS_DTYPE_BITS[dtype]
        sizes.append(bits // 8 + (1 if bits % 8 else 0))
        stricter |= dtype not in DTYPE_SIZES
        entries.append((name, [("dtype", dtype), ("shape", shape)]))
    order = draw(st.permutations(range(count)))  # data order differs from key order
    offset = 0
    spans: dict[int, tuple[int, int]] = {}
    for i in order:
        spans[i] = (offset, offset + sizes[i])
        offset += sizes[i]
    for i, (_, fields) in enumerate(entries):
        fields.append(("data_offsets", list(spans[i])))
        draw(st.randoms()).shuffle(fields)
    data_len = offset
    metadata: str | None = None
    if draw(st.booleans()):
        metadata = json.dumps(draw(st.dictionaries(names, names, max_size=3)))
    built = Built(b"", data_len)

    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), max_size=2)):
        built.notes.append(mutation)
        if mutation == "dup_tensor" and entries:
            entries.append(draw(st.sampled_from(entries)))
            stricter = True
        elif mutation == "dup_field" and entries:
            fields = draw(st.sampled_from(entries))[1]
            fields.append(draw(st.sampled_from(fields)))
        elif mutation == "shift_offset" and entries:
            fields = draw(st.sampled_from(entries))[1]
            k = next((j for j, (key, v) in enumerate(fields) if key == "data_offsets" and isinstance(v, list) and len(v) == 2), None)
            if k is None or not all(isinstance(o, int) for o in fields[k][1]):  # type: ignore[union-attr]
                continue
            b, e = fields[k][1]  # type: ignore[misc]
            delta = draw(st.integers(-3, 3))
            fields[k] = ("data_offsets", [max(b + delta, 0), e] if draw(st.booleans()) else [b, max(e + delta, 0)])
        elif mutation == "data_len":
            built.data_len = max(0, data_len + draw(st.integers(-3, 3)))
        elif mutation == "bad_shape" and entries:
            fields = draw(st.sampled_from(entries))[1]
            k = next((j for j, (key, _) in enumerate(fields) if key == "shape"), None)
            if k is None:
                continue
            fields[k] = ("shape", [*fields[k][1], draw(bad_numbers)] if isinstance(fields[k][1], list) else [draw(bad_numbers)])  # type: ignore[misc]
        elif mutation == "bad_offsets" and entries:
            fields = draw(st.sampled_from(entries))[1]
            k = next((j for j, (key, _) in enumerate(fields) if key == "data_offsets"), None)
            if k is None:
                continue
            fields[k] = ("data_offsets", draw(st.sampled_from([[0], [0, 0, 0], [0.0, 0], [-1, 0], ["0", "0"], {"a": 0, "b": 0}, None])))
        elif mutation == "bad_dtype" and entries:
            fields = draw(st.sampled_from(entries))[1]
            k = next((j for j, (key, _) in enumerate(fields) if key == "dtype"), None)
            if k is None:
                continue
            fields[k] = ("dtype", draw(st.sampled_from(["f32", "F128", "", 4, None, ["F32"]])))
        elif mutation == "missing_field" and entries:
            fields = draw(st.sampled_from(entries))[1]
            fields.pop(draw(st.integers(0, len(fields) - 1)))
        elif mutation == "extra_field" and entries:
            fields = draw(st.sampled_from(entries))[1]
            fields.append((draw(st.sampled_from(["x", "offsets", "dtypes"])), draw(json_values)))
        elif mutation == "bad_metadata":
            metadata = draw(st.sampled_from(['{"k": 1}', "[]", '"x"', "null", '{"k": null}', '{"k": "a", "k": "b"}']))
            stricter |= metadata == '{"k": "a", "k": "b"}'
        elif mutation == "header_length":
            built.declared = draw(st.sampled_from([10**9, 2**63, 0, 1]))
        built.stricter = stricter
    parts = [] if metadata is None else [f'"__metadata__":{metadata}']
    parts += [f"{json.dumps(name)}:{_entry_text(fields)}" for name, fields in entries]
    text = "{" + ",".join(parts) + "}"
    raw = text.encode()
    for mutation in built.notes:
        if mutation == "encoding":
            raw = text.encode(draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "utf-8-sig"])))
        elif mutation == "padding":
            raw += draw(st.sampled_from([b"   ", b"\t\n\r ", b"\x00", b"\xc2\xa0", b"{}", b" x"]))
        elif mutation == "deep":
            depth = draw(st.integers(MAX_JSON_DEPTH - 3, MAX_JSON_DEPTH + 3))
            nested = "[" * (depth - 1) + "]" * (depth - 1)
            raw = ("{" + ",".join([*parts, f'"__x":{{"dtype":"U8","shape":[0],"data_offsets":[0,0],"d":{nested[2:-2] or "0"}}}']) + "}").encode()
        elif mutation == "entry_as_list" and entries:
            name, fields = entries[0]
            raw = raw.replace(f"{json.dumps(name)}:{_entry_text(fields)}".encode(), f"{json.dumps(name)}:{json.dumps([v for _, v in fields])}".encode(), 1)
            built.stricter = True
    built.header = raw
    built.stricter = stricter or built.stricter
    return built


MUTATIONS = [
    "dup_tensor", "dup_field", "shift_offset", "data_len", "bad_shape", "bad_offsets", "bad_dtype", "missing_field",
    "extra_field", "bad_metadata", "header_length", "encoding", "padding", "deep", "entry_as_list",
]  # fmt: skip


def _write(folder: Path, built: Built) -> Path:
    path = folder / "t.safetensors"
    n = len(built.header) if built.declared is None else built.declared
    path.write_bytes(struct.pack("<Q", n) + built.header + b"\x00" * built.data_len)
    return path


def _safetensors_accepts(path: Path) -> bool:
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            f.keys()
    except Exception:  # noqa: BLE001 - SafetensorError and whatever the binding raises for a bad file
        return False
    return True


def _ours_accepts(path: Path) -> bool:
    try:
        read_header(path)
    except InvalidFile as exc:  # InvalidAdapter, or PickleRefused for a header length whose first byte is 0x80
        assert "\n" not in str(exc)
        return False
    return True


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(headers())
def test_read_header_accepts_exactly_what_safetensors_accepts(built: Built) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), built)
        theirs, ours = _safetensors_accepts(path), _ours_accepts(path)
    assert ours == (theirs and not built.stricter), (built.notes, built.header[:300], built.data_len, theirs, ours)


REFUSED = {
    "duplicate tensor name": (b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', 2),
    "overlapping offsets": (b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}', 3),
    "gap between tensors": (b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}}', 3),
    "trailing bytes": (b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', 2),
    "UTF-16 header": ('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'.encode("utf-16"), 1),
    "float shape": (b'{"a":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}}', 1),
    "string shape": (b'{"a":{"dtype":"U8","shape":["1"],"data_offsets":[0,1]}}', 1),
    "negative offset": (b'{"a":{"dtype":"U8","shape":[0],"data_offsets":[-1,-1]}}', 0),
    "float offset": (b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1.0]}}', 1),
    "size mismatch": (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,2]}}', 2),
    "unknown dtype": (b'{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}', 16),
    "metadata not str->str": (b'{"__metadata__":{"format":1}}', 0),
    "NaN in an extra field": (b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":NaN}}', 1),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_each_hole_the_review_found_is_refused(case: str, tmp_path: Path) -> None:
    header, data_len = REFUSED[case]
    path = _write(tmp_path, Built(header, data_len))
    assert not _safetensors_accepts(path)
    with pytest.raises(InvalidAdapter, match="invalid safetensors header"):
        read_header(path)


def test_header_length_past_the_end_and_too_many_tensors(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(InvalidAdapter, match="exceeds file size"):
        read_header(path)
    header = json.dumps({f"t{i}": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]} for i in range(11)}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    assert len(read_header(path).tensors) == 11
    with pytest.raises(InvalidAdapter, match="tensors in one file, over the limit"):
        read_header(path, max_tensors=10)
