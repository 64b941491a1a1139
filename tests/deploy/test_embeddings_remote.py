"""Embeddings on the MiniLM encoder base (equal to local outputs), an API key, and adapters pulled from a remote hub
(a private one without a token is a 404, as if absent)."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
import torch

from tests.deploy.reference import greedy, local_model


def _local_embeddings(base: Path, home: Path, refs: list[str], texts: list[str]) -> torch.Tensor:
    from transformers import AutoTokenizer

    from adapterhub.deploy.engine import mean_pool

    model = local_model(base, home, refs)
    tok = AutoTokenizer.from_pretrained(base)
    rows = []
    for t in texts:  # one at a time: no padding in the reference
        enc = tok(t, return_tensors="pt")
        with torch.no_grad():
            rows.append(mean_pool(model(**enc), enc["attention_mask"])[0])
    return torch.stack(rows)


def test_embeddings_equal_local_minilm_and_api_key(tmp_path: Path, minilm_dir: Path, minilm_adapter_dir: Path) -> None:
    from adapterhub.deploy.background import start_deploy
    from adapterhub.store.registry import Registry

    home = tmp_path / "home"
    reg = Registry(home=home)
    reg.add(minilm_adapter_dir, "team/emb", "embedding", base=minilm_dir)
    reg.db.dispose()
    texts = ["A man is eating food.", "LoRA adapters are small.", "short"]
    with start_deploy(minilm_dir, home, args=["--name", "minilm"], env={"ADAPTERHUB_API_KEY": "s3cret"}) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="s3cret", max_retries=0, timeout=120)
        for model, refs in [("team/emb", ["team/emb"]), ("minilm", [])]:
            want = _local_embeddings(minilm_dir, home, refs, texts)
            for fmt in [{"encoding_format": "float"}, {}]:  # omitted: the client asks for base64 and decodes it
                got = client.embeddings.create(model=model, input=texts, **fmt)  # type: ignore[arg-type]
                vecs = torch.tensor([d.embedding for d in got.data])
                assert torch.allclose(vecs, want, atol=1e-5), (model, fmt, (vecs - want).abs().max())
            assert got.usage.prompt_tokens > 0
        assert not torch.allclose(_local_embeddings(minilm_dir, home, ["team/emb"], texts[:1]),
                                  _local_embeddings(minilm_dir, home, [], texts[:1]), atol=1e-3)  # fmt: skip
        wrong = openai.OpenAI(base_url=server.base_url, api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.embeddings.create(model="minilm", input="x")
        assert httpx.get(f"{server.url}/v1/models").status_code == 401
        assert httpx.get(f"{server.url}/health").status_code == 200
        with pytest.raises(openai.BadRequestError):  # an encoder does not generate
            client.completions.create(model="minilm", prompt="x", max_tokens=2)


def test_adapters_pulled_from_remote_and_private_is_404(
    tmp_path: Path, chat_llama_dir: Path, llama_adapters: dict[str, Path]
) -> None:
    from adapterhub.deploy.background import start_deploy
    from adapterhub.hub.client import push
    from adapterhub.hub.server.background import start_hub
    from adapterhub.store.registry import Registry

    author = Registry(home=tmp_path / "author")
    author.add(llama_adapters["team/qv"], "pub/qv", "chat", base=chat_llama_dir)
    author.add(llama_adapters["team/mlp"], "priv/mlp", "chat", base=chat_llama_dir)
    with start_hub(tmp_path / "hub", args=["--token", "hubtoken"]) as hub:
        push("pub/qv", remote=hub.url, token="hubtoken", registry=author)
        push("priv/mlp", remote=hub.url, token="hubtoken", registry=author, private=True)
        home = tmp_path / "deploy-home"
        with start_deploy(chat_llama_dir, home, args=["--remote", hub.url]) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=120)
            got = client.completions.create(model="pub/qv", prompt="Hello there", max_tokens=8, temperature=0,
                                            extra_body={"return_token_ids": True})  # fmt: skip
            from transformers import AutoTokenizer

            ids = AutoTokenizer.from_pretrained(chat_llama_dir)("Hello there")["input_ids"]
            want = greedy(local_model(chat_llama_dir, tmp_path / "author", ["pub/qv"]), ids, 8)
            assert got.choices[0].token_ids == want
            pulled = {f.path: f for f in Registry(home=home).get("pub/qv").files}  # the same bytes, verified
            authored = {f.path: f for f in Registry(home=tmp_path / "author").get("pub/qv").files}
            assert pulled["adapter_model.safetensors"] == authored["adapter_model.safetensors"]
            with pytest.raises(openai.NotFoundError) as err:
                client.completions.create(model="priv/mlp", prompt="x", max_tokens=2)
            assert err.value.code == "model_not_found"
            ids_listed = {m.id for m in client.models.list().data}
            assert "pub/qv" in ids_listed and "priv/mlp" not in ids_listed
