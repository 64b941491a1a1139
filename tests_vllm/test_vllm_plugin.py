"""The adapterhub LoRAResolver inside a real `vllm serve` (CPU): adapters requested by alias through the `openai`
client give the same greedy tokens as the same folders given to vLLM directly (`--lora-modules`, a plain
LoRARequest); an adapter for another base is refused (404). Runs in its own venv: `make test-vllm`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

vllm = pytest.importorskip("vllm")
ROOT = Path(__file__).resolve().parents[1]


def _base(folder: Path, hidden: int = 256) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(ROOT))
    from tests.deploy.conftest import save_char_tokenizer

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False)  # fmt: skip
    LlamaForCausalLM(cfg).eval().save_pretrained(folder, safe_serialization=True)
    save_char_tokenizer(folder)
    return folder


def _adapter(folder: Path, hidden: int, seed: int, targets: dict[str, tuple[int, int]]) -> Path:
    """A random LoRA (r=8) written by adapterhub itself in PEFT's format: no PEFT needed in this venv."""
    import torch

    from adapterhub.peft_format import LayerKind, LoraConfig
    from adapterhub.peft_weights import LoraModule, PeftAdapter, save_adapter

    g = torch.Generator().manual_seed(seed)
    mods = {}
    for layer in range(2):
        for name, (i, o) in targets.items():
            path = f"model.layers.{layer}.self_attn.{name}"
            mods[path] = LoraModule(path, LayerKind.LINEAR, torch.randn(8, i, generator=g) * 0.1, torch.randn(o, 8, generator=g) * 0.1,
                                    8, 16.0, 2.0)  # fmt: skip
    return save_adapter(PeftAdapter(LoraConfig(r=8, lora_alpha=16, target_modules=sorted(targets)), mods), folder)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    import httpx

    from adapterhub.store.registry import Registry

    root = tmp_path_factory.mktemp("vllm")
    base = _base(root / "base")
    qv = {"q_proj": (256, 256), "v_proj": (256, 128)}
    a = _adapter(root / "a", 256, 1, qv)
    b = _adapter(root / "b", 256, 2, {"q_proj": (256, 256), "o_proj": (256, 256)})
    wide = _adapter(root / "wide", 384, 3, {"q_proj": (384, 384), "v_proj": (384, 192)})
    home = root / "home"
    reg = Registry(home=home)
    reg.add(a, "team/a", "chat", base=base, aliases=["prod"])
    reg.add(b, "team/b", "chat", base=base, aliases=["prod"])
    reg.add(wide, "other/wide", "chat")
    port = 18000 + os.getpid() % 1000
    env = {**os.environ, "VLLM_PLUGINS": "adapterhub", "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true", "ADAPTERHUB_HOME": str(home),
           "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_TARGET_DEVICE": "cpu"}  # fmt: skip
    log = root / "vllm.log"
    cmd = [sys.executable, str(Path(__file__).parent / "serve.py"), "serve", str(base), "--port", str(port), "--enable-lora",
           "--max-lora-rank", "8", "--max-loras", "4", "--max-model-len", "128", "--enforce-eager", "--dtype", "float32",
           "--lora-modules", f"direct-a={a}", f"direct-b={b}"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"vllm serve exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"vllm serve did not start: {log.read_text()[-3000:]}")
        time.sleep(1)
    yield url, str(base), log
    proc.terminate()
    proc.wait(60)


def _tokens(url: str, model: str, prompt: str) -> list[int]:
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=300)
    r = client.completions.create(model=model, prompt=prompt, max_tokens=10, temperature=0, extra_body={"return_token_ids": True})
    ids = r.choices[0].model_extra.get("token_ids")
    return list(ids) if ids is not None else list(r.choices[0].text)


def test_aliases_resolve_to_the_same_tokens_as_direct_lora_requests(served) -> None:  # type: ignore[no-untyped-def]
    url, _base_path, _log = served
    for alias, direct in [("team/a@prod", "direct-a"), ("team/b@prod", "direct-b")]:
        for prompt in ["Hello there", "The cat sat on"]:
            assert _tokens(url, alias, prompt) == _tokens(url, direct, prompt), (alias, prompt)
    assert _tokens(url, "team/a@prod", "Hello there") != _tokens(url, "team/b@prod", "Hello there")


def test_incompatible_adapter_is_refused(served) -> None:  # type: ignore[no-untyped-def]
    import openai

    url, _base_path, log = served
    with pytest.raises(openai.NotFoundError):
        _tokens(url, "other/wide", "Hello")
    assert "refusing other/wide" in log.read_text()
