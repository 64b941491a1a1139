"""The deploy server over a PostgreSQL registry: adapters resolved by name and alias, listed, unknown ones 404."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from transformers import AutoTokenizer

from tests.deploy.reference import greedy


@pytest.mark.postgres
def test_deploy_over_postgres(tmp_path: Path, postgres_url: str, chat_llama_dir: Path, llama_adapters: dict[str, Path]) -> None:
    from adapterhub.deploy.background import start_deploy
    from adapterhub.store.registry import Registry

    home = tmp_path / "home"
    reg = Registry(home=home, database_url=postgres_url)
    reg.add(llama_adapters["team/qv"], "pg/qv", "chat", base=chat_llama_dir)
    reg.tag("pg/qv@1", "prod")
    with start_deploy(chat_llama_dir, home, env={"ADAPTERHUB_DATABASE_URL": postgres_url}) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=120)
        assert "pg/qv" in {m.id for m in client.models.list().data}
        got = client.completions.create(model="pg/qv@prod", prompt="Hello there", max_tokens=8, temperature=0,
                                        extra_body={"return_token_ids": True})  # fmt: skip
        ids = AutoTokenizer.from_pretrained(chat_llama_dir)("Hello there")["input_ids"]
        import adapterhub

        model = adapterhub.load(chat_llama_dir, ["pg/qv@prod"], registry=reg)
        assert got.choices[0].token_ids == greedy(model, ids, 8)
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="pg/none", prompt="x", max_tokens=2)
        half = client.completions.create(model="pg/qv@prod:0.5", prompt="Hello there", max_tokens=8, temperature=0,
                                         extra_body={"return_token_ids": True, "ignore_eos": True})  # fmt: skip
        assert len(half.choices[0].token_ids) == 8  # a weighted model, composed in the engine's cache
    reg.db.dispose()
