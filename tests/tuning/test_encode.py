"""Prompt masking: labels are -100 on exactly the tokens the chat template renders for the prompt, and the answer
tokens (with the template's end-of-turn marker) carry the loss."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapterhub.tuning.data import Example, InvalidData
from adapterhub.tuning.encode import IGNORE, Collator, encode, encode_all


@pytest.fixture(scope="module")
def chat_tokenizer(chat_llama_dir: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(chat_llama_dir))


EX = Example(prompt=(("system", "Be brief."), ("user", "date: May 1, 2020")), answer="2020-05-01", line=1)


def test_labels_mask_exactly_the_templated_prompt(chat_tokenizer) -> None:  # type: ignore[no-untyped-def]
    tok = chat_tokenizer
    prompt = tok.apply_chat_template(EX.messages, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template([*EX.messages, {"role": "assistant", "content": EX.answer}], tokenize=False)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tok(full, add_special_tokens=False)["input_ids"]
    row = encode(tok, EX, 512)
    assert row["input_ids"] == full_ids  # the whole conversation exactly as the template writes it
    assert row["labels"][: len(prompt_ids)] == [IGNORE] * len(prompt_ids)
    assert row["labels"][len(prompt_ids) :] == full_ids[len(prompt_ids) :]
    answer = tok.decode(row["labels"][len(prompt_ids) :])
    assert answer == "2020-05-01<|im_end|>\n"  # the answer and the end-of-turn marker are learned, nothing of the prompt


def test_without_a_chat_template_the_plain_prompt_is_masked_and_eos_learned(plain_llama_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(plain_llama_dir))
    assert not tok.chat_template
    ex = Example(prompt=(("user", "copy: cat"),), answer="cat", line=1)
    row = encode(tok, ex, 512)
    prompt_ids = tok("copy: cat\n")["input_ids"]
    assert row["input_ids"] == prompt_ids + tok("cat", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert row["labels"] == [IGNORE] * len(prompt_ids) + row["input_ids"][len(prompt_ids) :]


def test_truncation_and_a_prompt_too_long(chat_tokenizer) -> None:  # type: ignore[no-untyped-def]
    n_prompt = len(encode(chat_tokenizer, EX, 512)["labels"]) - len(
        chat_tokenizer("2020-05-01<|im_end|>\n", add_special_tokens=False)["input_ids"]
    )
    row = encode(chat_tokenizer, EX, n_prompt + 3)
    assert len(row["input_ids"]) == len(row["labels"]) == n_prompt + 3 and row["labels"][-3:] == row["input_ids"][-3:]
    with pytest.raises(InvalidData, match=r"line 7: the prompt alone is \d+ tokens, over the limit of 10"):
        encode_all(chat_tokenizer, [Example(prompt=EX.prompt, answer="x", line=7)], 10, "d.jsonl")


def test_collator_pads_right_with_masked_labels() -> None:
    batch = Collator(pad_id=0)([{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [IGNORE, 6, 7]},
                                {"input_ids": [5], "attention_mask": [1], "labels": [5]}])  # fmt: skip
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [5, IGNORE, IGNORE]]
