"""A real `adapterhub deploy` server on 127.0.0.1 over a tiny seeded Llama with a character tokenizer and a chat
template, four registered adapters (one tagged `prod`), one adapter for another base, and the unmodified `openai`
client pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests import factories

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
)
ADAPTERS = {
    "team/qv": {"target_modules": ["q_proj", "v_proj"]},
    "team/mlp": {"target_modules": ["gate_proj", "up_proj", "down_proj"]},
    "team/all": {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], "r": 8},
    "team/head": {"target_modules": ["o_proj"], "use_rslora": True},
}


def save_char_tokenizer(folder: Path, vocab_size: int = 128) -> None:
    """A character-level tokenizer filling `vocab_size` ids (0-2 special), so every id decodes to one character and
    text round-trips to the same ids."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + [chr(c) for c in range(0xC0, 0xC0 + vocab_size - 3 - 95)]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{ch: i + 3 for i, ch in enumerate(chars)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)


@dataclass
class Deployed:
    base: Path
    home: Path
    url: str
    client: object  # openai.OpenAI
    folders: dict[str, Path]


@pytest.fixture(scope="session")
def chat_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = factories.build_tiny_llama(tmp_path_factory.mktemp("deploy-llama") / "tiny-llama")
    save_char_tokenizer(folder)
    return folder


@pytest.fixture(scope="session")
def llama_adapters(tmp_path_factory: pytest.TempPathFactory, chat_llama_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("deploy-adapters")
    out = {}
    for i, (name, kw) in enumerate(ADAPTERS.items()):
        out[name] = factories.make_peft_adapter(chat_llama_dir, root / name.replace("/", "_"), seed=100 + i, **kw)
    return out


@pytest.fixture(scope="session")
def foreign_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adapter for a Llama of another width: incompatible with the deployed base."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("deploy-foreign")
    torch.manual_seed(5)
    cfg = LlamaConfig(vocab_size=128, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(root / "wide", safe_serialization=True)
    return factories.make_peft_adapter(root / "wide", root / "lora", target_modules=["q_proj", "v_proj"], seed=9)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, chat_llama_dir: Path, llama_adapters: dict[str, Path],
             foreign_adapter: Path) -> Iterator[Deployed]:  # fmt: skip
    import openai

    from adapterhub.deploy.background import start_deploy
    from adapterhub.store.registry import Registry

    home = tmp_path_factory.mktemp("deploy-home")
    reg = Registry(home=home)
    for name, folder in llama_adapters.items():
        reg.add(folder, name, "chat", base=chat_llama_dir)
    reg.tag("team/qv@1", "prod")
    reg.add(foreign_adapter, "other/wide", "chat")  # no recorded base: judged by shapes, and they do not fit
    reg.db.dispose()
    with start_deploy(chat_llama_dir, home, args=["--name", "tiny-llama", "--max-batch", "8", "--batch-window-ms", "50",
                                                  "--adapters", "team/qv"]) as server:  # fmt: skip
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)
        yield Deployed(chat_llama_dir, home, server.url, client, llama_adapters)
