"""JSONL reading: the three formats detected per file, and one clear problem per bad line (line number, what)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapterhub.errors import AdapterHubError, NotFound
from adapterhub.tuning.data import MAX_LINE_BYTES, MAX_PROBLEMS, InvalidData, read_jsonl

from .conftest import write_jsonl

CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
}


def test_each_format_is_detected_and_parsed(tmp_path: Path) -> None:
    vertex = read_jsonl(
        write_jsonl(tmp_path / "v.jsonl", [{"input_text": "a", "output_text": "b"}, "", {"input_text": "c", "output_text": "d"}])
    )
    assert vertex.format == "vertex" and len(vertex) == 2
    assert vertex.examples[1].prompt == (("user", "c"),) and vertex.examples[1].answer == "d" and vertex.examples[1].line == 3
    chat = read_jsonl(write_jsonl(tmp_path / "c.jsonl", [CHAT]))
    assert chat.format == "chat" and chat.examples[0].prompt == (("system", "Be brief."), ("user", "hi"))
    assert chat.examples[0].answer == "hello"
    pc = read_jsonl(write_jsonl(tmp_path / "p.jsonl", [{"prompt": "x", "completion": "y", "extra": 1}]))
    assert pc.format == "prompt_completion" and pc.examples[0].answer == "y"


def test_sha256_and_size_are_of_the_file_bytes(tmp_path: Path) -> None:
    import hashlib

    path = write_jsonl(tmp_path / "v.jsonl", [{"input_text": "a", "output_text": "b"}])
    ds = read_jsonl(path)
    assert ds.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and ds.size == path.stat().st_size


BAD_LINES = [
    ("{not json", "line 2: not JSON"),
    ("[1, 2]", "line 2: expected a JSON object, found a list"),
    ('{"input_text": 5, "output_text": "b"}', "line 2: 'input_text' must be a string, found a number"),
    ('{"input_text": "a"}', "line 2: missing 'output_text'"),
    ('{"input_text": "a", "output_text": "  "}', "line 2: 'output_text' is empty"),
    ('{"prompt": "a", "completion": "b"}', "line 2: prompt_completion example in a vertex file (format set by line 1)"),
    ('{"input_text": "a", "output_text": "b", "messages": []}', "line 2: keys of more than one format"),
    ('{"question": "a"}', 'line 2: no known format (keys "question")'),
    ("[" * 100_000 + "]" * 100_000, "line 2: "),  # deeply nested: refused, never a RecursionError traceback
]


@pytest.mark.parametrize(("line", "expected"), BAD_LINES, ids=[e.split(": ", 1)[-1][:30] for _, e in BAD_LINES])
def test_a_bad_line_is_named_with_what_is_wrong(tmp_path: Path, line: str, expected: str) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"input_text": "a", "output_text": "b"}, line, {"input_text": "c", "output_text": "d"}]
    )
    with pytest.raises(InvalidData) as err:
        read_jsonl(path)
    assert err.value.problems[0].startswith(expected), err.value.problems
    assert len(err.value.problems) == 1 and str(path) in str(err.value)
    assert isinstance(err.value, AdapterHubError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ("hi", "'messages' must be a non-empty list, found a string"),
        ([], "'messages' must be a non-empty list, found an empty list"),
        (["hi"], "messages[0] must be an object with role and content, found a string"),
        ([{"role": "bot", "content": "x"}], 'messages[0].role must be one of system, user, assistant, found "bot"'),
        ([{"role": "user", "content": ["x"]}], "messages[0].content must be a string, found a list"),
        ([{"role": "user", "content": "x"}], "the last message must be the assistant's answer"),
        ([{"role": "system", "content": "s"}, {"role": "assistant", "content": "x"}], "no user message before the answer"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}], "the assistant's answer is empty"),
    ],
)
def test_bad_chat_messages(tmp_path: Path, messages: object, expected: str) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [CHAT, {"messages": messages}])
    with pytest.raises(InvalidData) as err:
        read_jsonl(path)
    assert err.value.problems == [f"line 2: {expected}"]


def test_every_bad_line_is_reported_not_only_the_first(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"input_text": "a", "output_text": "b"}, "oops", {"input_text": 1, "output_text": "b"}, "{}"]
    )
    with pytest.raises(InvalidData) as err:
        read_jsonl(path)
    assert [p.split(":")[0] for p in err.value.problems] == ["line 2", "line 3", "line 4"]


def test_non_utf8_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"input_text": "a", "output_text": "b"}\n{"input_text": "caf\xe9", "output_text": "b"}\n')
    with pytest.raises(InvalidData) as err:
        read_jsonl(path)
    assert err.value.problems == ["line 2: not UTF-8 (byte 0xe9 at column 20)"]


def test_binary_file_is_one_error_per_line_capped(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xff\xfe\x00garbage\n" * 1000)
    with pytest.raises(InvalidData) as err:
        read_jsonl(path)
    assert len(err.value.problems) == MAX_PROBLEMS + 1 and err.value.problems[-1] == "stopped reading after this many problems"


def test_huge_line_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    with path.open("wb") as f:
        f.write(b'{"input_text": "a", "output_text": "b"}\n')
        f.write(b'{"input_text": "' + b"x" * (3 * MAX_LINE_BYTES) + b'", "output_text": "b"}\n')
        f.write(b'{"input_text": "c", "output_text": "d"}\n')
    with pytest.raises(InvalidData) as err:
        read_jsonl(path)
    assert err.value.problems == [f"line 2: longer than {MAX_LINE_BYTES:,} bytes"]


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidData, match="no examples"):
        read_jsonl(write_jsonl(tmp_path / "e.jsonl", ["", "   "]))
    with pytest.raises(NotFound):
        read_jsonl(tmp_path / "missing.jsonl")


def test_shipped_datasets_parse() -> None:
    import adapterhub

    data = Path(adapterhub.__file__).parent / "data"
    for name, fmt in [("dates", "vertex"), ("records", "chat")]:
        for split, n in [("train", 256), ("heldout", 64)]:
            ds = read_jsonl(data / f"{name}-{split}.jsonl")
            assert (ds.format, len(ds)) == (fmt, n)
        train = {json.dumps(e.prompt) for e in read_jsonl(data / f"{name}-train.jsonl").examples}
        assert not train & {json.dumps(e.prompt) for e in read_jsonl(data / f"{name}-heldout.jsonl").examples}
