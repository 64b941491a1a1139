"""Hostile input to a real `adapterhub deploy` server: every odd `model`, token list and bound gives a clear 4xx,
never a 500, and no `model` string makes the server load a folder that is not a registered adapter."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from .conftest import Deployed

BAD_MODELS = [
    "team/qv\n", "team/qv ", "../x", "/etc", "/etc/passwd", "team/../../etc", "team/qv/../mlp", "..", ".", "team/.",
    "team/qv@../../x", "team/qv@1/../2", "team/qv:nan", "team/qv:inf", "team/qv:-inf", "team/qv:1e308",
    "team/qv:0.5+team/qv:0.5", "team/qv:", ":1", "+", "team/qv+", "team/qv:1:2", "\u00e9/x", "team/qv\x00",
    "+".join(f"ns/a{i}:1" for i in range(40)), "+".join(["team/qv:1"] * 40), "team/qv@999999999999999999999",
    "team/qv@-1", "team/nope", "other/wide", "tiny-llama/../x",
]  # fmt: skip


def post(deployed: Deployed, path: str, body: Any) -> httpx.Response:
    return httpx.post(deployed.url + path, content=json.dumps(body), headers={"content-type": "application/json"}, timeout=120)


@pytest.mark.parametrize("model", BAD_MODELS)
def test_bad_model_is_a_clean_4xx(deployed: Deployed, model: str) -> None:
    r = post(deployed, "/v1/completions", {"model": model, "prompt": "hi", "max_tokens": 1})
    assert 400 <= r.status_code < 500, (model, r.status_code, r.text)
    assert "error" in r.json()


@pytest.mark.parametrize(
    "extra",
    [
        {"prompt": [-1]}, {"prompt": [10**20]}, {"prompt": [128]}, {"prompt": []}, {"prompt": [[]]}, {"prompt": [[1], []]},
        {"prompt": [1.5]}, {"prompt": True}, {"prompt": [True]}, {"prompt": [[-5]]}, {"prompt": [5] * 100_000},
        {"prompt": "x" * 100_000}, {"prompt": "hi", "max_tokens": 10**20}, {"prompt": "hi", "max_tokens": -1},
        {"prompt": "hi", "n": 10**9}, {"prompt": "hi", "n": 0}, {"prompt": "hi", "stop": ["a"] * 100},
        {"prompt": "hi", "stop": "a" * 10_000}, {"prompt": "hi", "seed": 10**30}, {"prompt": "hi", "temperature": float("nan")},
        {"prompt": "hi", "top_p": 0}, {"prompt": ["hi"] * 1000}, {"prompt": "hi", "max_completion_tokens": 10**12},
        {"prompt": "hi", "stream_options": "x"}, {"prompt": "hi", "echo": True}, {"prompt": "hi", "seed": 2**63 - 1, "n": 2},
    ],
)  # fmt: skip
def test_bad_completion_fields_are_a_clean_4xx(deployed: Deployed, extra: dict[str, Any]) -> None:
    body = {"model": "tiny-llama", "max_tokens": 1, **extra}
    try:
        r = post(deployed, "/v1/completions", body)
    except ValueError:  # NaN cannot be sent as strict JSON
        return
    assert r.status_code < 500, (str(extra)[:200], r.status_code, r.text[:300])


def test_too_many_weighted_terms_refused_before_any_lookup(deployed: Deployed) -> None:
    """Nine names are refused for their count alone: no adapter is looked up (or pulled from --remote) first."""
    model = "+".join(f"ns/unknown{i}:0.1" for i in range(9))
    r = post(deployed, "/v1/completions", {"model": model, "prompt": "hi", "max_tokens": 1})
    assert r.status_code == 400, r.text
    assert "at most 8" in r.json()["error"]["message"]


def test_composed_folders_are_bounded(deployed: Deployed) -> None:
    """Every distinct weight is a new composition: it lives in the adapter cache (under its byte budget), and no
    folder is written per weight (this wrote five folders, kept forever)."""
    scratch = deployed.home / "tmp" / "deploy-combined"
    before = len(list(scratch.iterdir())) if scratch.is_dir() else 0
    for i in range(5):
        r = post(deployed, "/v1/completions", {"model": f"team/qv:0.{i + 11}+team/mlp:0.5", "prompt": "hi", "max_tokens": 1})
        assert r.status_code == 200, r.text
    assert (len(list(scratch.iterdir())) if scratch.is_dir() else 0) - before <= 1


def test_stream_disconnect_frees_its_rows(deployed: Deployed) -> None:
    """A client that leaves mid-stream: its rows are cancelled, the server keeps answering."""
    body = {"model": "team/qv", "prompt": "hi", "max_tokens": 40, "n": 8, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", deployed.url + "/v1/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        next(r.iter_lines())
    for _ in range(200):
        health = httpx.get(deployed.url + "/health", timeout=60).json()
        if health["active_rows"] == 0:
            break
        httpx.get(deployed.url + "/v1/models", timeout=60)  # a little work between polls, no sleeps
    assert health["active_rows"] == 0
    r = post(deployed, "/v1/completions", {"model": "team/qv", "prompt": "hi", "max_tokens": 2})
    assert r.status_code == 200
