"""Tiny seeded Llama bases with a character-level tokenizer and a ChatML template, built in a second, for tuning tests."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]


def build_char_tokenizer(folder: Path, *, chat_template: str | None = CHATML) -> None:
    """A character-level tokenizer (printable ASCII + newline) small enough for a 128-token vocabulary."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [c for c in string.printable if c not in "\t\r\x0b\x0c"]
    vocab = {t: i for i, t in enumerate([*SPECIALS, "<unk>", *chars])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"])  # fmt: skip
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(folder)


def build_tiny_chat_llama(folder: Path, *, seed: int = 0, chat_template: str | None = CHATML) -> Path:
    from tests.factories import build_tiny_llama

    build_tiny_llama(folder, seed=seed)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    (folder / "config.json").write_text(json.dumps(cfg))
    build_char_tokenizer(folder, chat_template=chat_template)
    return folder


@pytest.fixture(scope="session")
def chat_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chat_llama(tmp_path_factory.mktemp("chat-llama"))


@pytest.fixture(scope="session")
def plain_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny Llama without a chat template (the plain-prompt path)."""
    return build_tiny_chat_llama(tmp_path_factory.mktemp("plain-llama"), chat_template=None)


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def copy_rows(n: int = 24) -> list[dict[str, str]]:
    """A task a tiny model learns in a few steps: copy a short word."""
    words = ["cat", "dog", "sun", "map", "pen", "cup", "hat", "box"]
    return [{"input_text": f"copy: {words[i % 8]}", "output_text": words[i % 8]} for i in range(n)]
