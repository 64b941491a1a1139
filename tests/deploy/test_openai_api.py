"""`adapterhub deploy` through the unmodified `openai` client: every adapter's greedy tokens equal
`adapterhub.load` + `generate` run locally, streaming equals non-streaming, and a concurrent burst over four
adapters gives each request the tokens it gets alone."""

from __future__ import annotations

import concurrent.futures as cf
from typing import Any

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from tests.deploy.conftest import ADAPTERS, Deployed
from tests.deploy.reference import greedy, local_model

PROMPTS = ["Hello there", "The cat sat on", "1 2 3 4", "What is LoRA?", "abc"]


def _ids(deployed: Deployed, text: str) -> list[int]:
    return AutoTokenizer.from_pretrained(deployed.base)(text)["input_ids"]


def _complete(client: Any, model: str, prompt: str, max_tokens: int = 12, **kw: Any) -> Any:
    return client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0,
                                     extra_body={"return_token_ids": True}, **kw)  # fmt: skip


def test_models_lists_base_and_fitting_adapters(deployed: Deployed) -> None:
    models = {m.id: m for m in deployed.client.models.list().data}
    assert set(models) == {"tiny-llama", *ADAPTERS}  # other/wide records no base: not listed for this one
    qv = models["team/qv"]
    assert qv.owned_by == "team" and qv.model_extra["task"] == "chat" and "prod" in qv.model_extra["aliases"]


@pytest.mark.parametrize("model", ["tiny-llama", *ADAPTERS, "team/qv@prod", "team/all@1"])
def test_greedy_equals_local_generate(deployed: Deployed, model: str) -> None:
    refs = [] if model == "tiny-llama" else [model]
    local = local_model(deployed.base, deployed.home, refs)
    for prompt in PROMPTS[:3]:
        got = _complete(deployed.client, model, prompt)
        want = greedy(local, _ids(deployed, prompt), 12)
        assert got.choices[0].token_ids == want, (model, prompt)
        assert got.choices[0].finish_reason == ("length" if len(want) == 12 else "stop")
        assert got.usage.completion_tokens == len(want) and got.usage.prompt_tokens == len(_ids(deployed, prompt))
        tok = AutoTokenizer.from_pretrained(deployed.base)
        assert got.choices[0].text == tok.decode(want, skip_special_tokens=True)


def test_adapters_change_the_output(deployed: Deployed) -> None:
    outs = {m: tuple(_complete(deployed.client, m, "The cat sat on").choices[0].token_ids) for m in ["tiny-llama", *ADAPTERS]}
    assert len(set(outs.values())) == len(outs), outs


def test_chat_uses_the_template_and_equals_local(deployed: Deployed) -> None:
    tok = AutoTokenizer.from_pretrained(deployed.base)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    local = local_model(deployed.base, deployed.home, ["team/mlp"])
    got = deployed.client.chat.completions.create(model="team/mlp", messages=messages, max_tokens=10, temperature=0,
                                                  extra_body={"return_token_ids": True})  # fmt: skip
    want = greedy(local, ids, 10)
    assert got.choices[0].model_extra["token_ids"] == want
    assert got.choices[0].message.role == "assistant" and got.choices[0].message.content == tok.decode(
        want, skip_special_tokens=True
    )
    assert got.usage.prompt_tokens == len(ids)


@pytest.mark.parametrize("model", ["team/all", "tiny-llama"])
def test_streaming_equals_non_streaming(deployed: Deployed, model: str) -> None:
    c = deployed.client
    whole = _complete(c, model, "The cat sat on", max_tokens=15)
    chunks = list(c.completions.create(model=model, prompt="The cat sat on", max_tokens=15, temperature=0, stream=True,
                                       stream_options={"include_usage": True}))  # fmt: skip
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == whole.choices[0].text
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens

    msgs = [{"role": "user", "content": "stream me"}]
    chat = c.chat.completions.create(model=model, messages=msgs, max_tokens=15, temperature=0)
    parts = list(c.chat.completions.create(model=model, messages=msgs, max_tokens=15, temperature=0, stream=True))
    assert parts[0].choices[0].delta.role == "assistant"
    assert "".join(p.choices[0].delta.content or "" for p in parts) == chat.choices[0].message.content
    assert parts[-1].choices[0].finish_reason == chat.choices[0].finish_reason


def test_concurrent_burst_over_four_adapters_equals_each_alone(deployed: Deployed) -> None:
    names = [*ADAPTERS, "tiny-llama"]
    jobs = [(names[i % len(names)], PROMPTS[i % len(PROMPTS)], 6 + (i * 5) % 14) for i in range(20)]
    with cf.ThreadPoolExecutor(len(jobs)) as pool:
        got = list(pool.map(lambda j: _complete(deployed.client, j[0], j[1], max_tokens=j[2]).choices[0].token_ids, jobs))
    models = {n: local_model(deployed.base, deployed.home, [] if n == "tiny-llama" else [n]) for n in names}
    for (name, prompt, n), tokens in zip(jobs, got):
        assert tokens == greedy(models[name], _ids(deployed, prompt), n), (name, prompt, n)
    metrics = httpx.get(f"{deployed.url}/metrics").text
    count = _metric(metrics, "adapterhub_deploy_batch_size_count")
    assert _metric(metrics, "adapterhub_deploy_batch_size_sum") > count, "some forward should have run several rows"


def test_weighted_adapters_equal_local_activation(deployed: Deployed) -> None:
    local = local_model(deployed.base, deployed.home, ["team/qv", "team/mlp"], weights=[0.7, 0.3])
    got = _complete(deployed.client, "team/qv:0.7+team/mlp:0.3", "Hello there")
    assert got.choices[0].token_ids == greedy(local, _ids(deployed, "Hello there"), 12)


def test_sampling_n_seed_and_stop(deployed: Deployed) -> None:
    c = deployed.client
    a = c.completions.create(model="team/qv", prompt="abc", max_tokens=8, n=3, seed=7, temperature=1.0, top_p=0.9)
    b = c.completions.create(model="team/qv", prompt="abc", max_tokens=8, n=3, seed=7, temperature=1.0, top_p=0.9)
    assert [x.text for x in a.choices] == [x.text for x in b.choices] and len(a.choices) == 3
    assert sorted(x.index for x in a.choices) == [0, 1, 2]
    assert a.usage.prompt_tokens == 3 and a.usage.completion_tokens == sum(len(x.text) for x in a.choices)
    full = _complete(c, "team/qv", "The cat sat on", max_tokens=12).choices[0].text
    stop = full[5:7]
    cut = _complete(c, "team/qv", "The cat sat on", max_tokens=12, stop=[stop]).choices[0]
    assert cut.text == full[: full.index(stop)] and cut.finish_reason == "stop"


def test_batch_of_prompts(deployed: Deployed) -> None:
    got = deployed.client.completions.create(model="team/head", prompt=PROMPTS[:3], max_tokens=5, temperature=0)
    assert [ch.index for ch in got.choices] == [0, 1, 2]
    for prompt, ch in zip(PROMPTS[:3], got.choices):
        assert ch.text == _complete(deployed.client, "team/head", prompt, max_tokens=5).choices[0].text


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_metrics_and_health(deployed: Deployed) -> None:
    _complete(deployed.client, "team/qv", "abc", max_tokens=2)
    text = httpx.get(f"{deployed.url}/metrics").text
    for name in ["adapterhub_deploy_requests_total", "adapterhub_deploy_tokens_total", "adapterhub_deploy_batch_size_count",
                 "adapterhub_deploy_resident_adapters", "adapterhub_deploy_adapter_cache_hits"]:  # fmt: skip
        _metric(text, name)
    assert _metric(text, "adapterhub_deploy_adapter_cache_hits") >= 1
    assert httpx.get(f"{deployed.url}/health").json()["status"] == "ok"


# --- errors, in OpenAI's shape ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model", ["team/nope", "team/qv@9", "team/qv@nosuchalias", "team/qv\n", "team/qv ", "../etc", "x" * 500, ""]
)
def test_unknown_model_is_404(deployed: Deployed, model: str) -> None:
    with pytest.raises((openai.NotFoundError, openai.BadRequestError)) as err:
        _complete(deployed.client, model, "abc")
    if model and len(model) <= 400:
        assert err.value.status_code == 404 and err.value.code == "model_not_found"
    assert "Traceback" not in str(err.value) and "/tmp" not in str(err.value)


def test_incompatible_adapter_is_400_naming_module_and_shapes(deployed: Deployed) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        _complete(deployed.client, "other/wide", "abc")
    assert err.value.code == "incompatible_adapter"
    msg = str(err.value)
    assert "q_proj" in msg and "48" in msg and "32" in msg
    assert str(deployed.base) not in msg  # no server paths


def test_over_long_prompt_and_bounds_are_400(deployed: Deployed) -> None:
    c = deployed.client
    with pytest.raises(openai.BadRequestError) as err:
        _complete(c, "team/qv", "x" * 80)  # the tiny base takes 64 positions
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as err:
        _complete(c, "team/qv", "abc", max_tokens=100)
    assert err.value.code == "context_length_exceeded"
    for bad in [{"n": 1000}, {"n": 0}, {"max_tokens": 0}, {"temperature": 5}, {"stop": ["a", "b", "c", "d", "e"]},
                {"top_p": 0}, {"prompt": [999999]}, {"prompt": []}]:  # fmt: skip
        body = {"model": "team/qv", "prompt": "abc", "max_tokens": 2, **bad}
        r = httpx.post(f"{deployed.url}/v1/completions", json=body)
        assert r.status_code == 400, (bad, r.text)
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_bodies_are_bounded(deployed: Deployed) -> None:
    url = f"{deployed.url}/v1/completions"
    r = httpx.post(
        url, content=b'{"model": "team/qv", "prompt": "' + b"a" * (2 << 20) + b'"}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks() -> Any:
        yield b'{"model": "team/qv", "prompt": "'
        for _ in range(64):
            yield b"a" * 65536
        yield b'"}'

    r = httpx.post(url, content=chunks(), headers={"content-type": "application/json"})  # chunked: no length
    assert r.status_code == 413
    for raw in [b"{", b"[]", b'"x"', b"\xff"]:
        r = httpx.post(url, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "error" in r.json(), raw
    r = httpx.post(f"{deployed.url}/v1/embeddings", json={"model": "team/qv", "input": "abc"})
    assert r.status_code == 400  # a decoder base has no embeddings endpoint
