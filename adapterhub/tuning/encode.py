"""Examples to token ids: the prompt rendered through the base's chat template (when it has one), the answer after
it, and labels that are -100 on every prompt token so the loss is on the answer only.

`prompt_ids` is also what `adapterhub eval` feeds to generation, so training and evaluation see the same text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .data import Example, InvalidData

IGNORE = -100  # the label value torch's cross-entropy skips


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_text(tokenizer: Any, example: Example) -> str:
    """The prompt as the model sees it, ending where the answer starts."""
    if has_chat_template(tokenizer):
        return str(tokenizer.apply_chat_template(example.messages, tokenize=False, add_generation_prompt=True))
    # No template: the plain prompt for single-turn data, "role: content" lines for a conversation.
    if len(example.prompt) == 1 and example.prompt[0][0] == "user":
        return example.prompt[0][1] + "\n"
    return "".join(f"{role}: {content}\n" for role, content in example.prompt) + "assistant: "


def prompt_ids(tokenizer: Any, example: Example) -> list[int]:
    text = prompt_text(tokenizer, example)
    # a chat template writes its own special tokens; a plain prompt gets the tokenizer's usual BOS, if any
    return list(tokenizer(text, add_special_tokens=not has_chat_template(tokenizer))["input_ids"])


def answer_ids(tokenizer: Any, example: Example) -> list[int]:
    """The answer's tokens, ending with the turn's end marker: what the model must learn to produce, stop included."""
    if has_chat_template(tokenizer):
        full = str(
            tokenizer.apply_chat_template([*example.messages, {"role": "assistant", "content": example.answer}], tokenize=False)
        )
        start = prompt_text(tokenizer, example)
        if full.startswith(start):
            # the template's own closing text (e.g. "<|im_end|>\n") belongs to the answer
            return list(tokenizer(full[len(start) :], add_special_tokens=False)["input_ids"])
    ids = list(tokenizer(example.answer, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return ids


def encode(tokenizer: Any, example: Example, max_length: int) -> dict[str, list[int]]:
    """input_ids, attention_mask and labels (-100 on the prompt) for one example, cut to `max_length` tokens.

    The prompt and the answer are tokenized separately, so no token straddles the boundary and the mask is exact."""
    p, a = prompt_ids(tokenizer, example), answer_ids(tokenizer, example)
    ids = (p + a)[:max_length]
    labels = ([IGNORE] * len(p) + a)[:max_length]
    if all(x == IGNORE for x in labels):
        raise ValueError(f"the prompt alone is {len(p)} tokens, over the limit of {max_length}")
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def encode_all(tokenizer: Any, examples: Sequence[Example], max_length: int, path: str) -> list[dict[str, list[int]]]:
    """Every example encoded; InvalidData naming each line whose prompt leaves no room for the answer."""
    out, problems = [], []
    for ex in examples:
        try:
            out.append(encode(tokenizer, ex, max_length))
        except ValueError as exc:
            problems.append(f"line {ex.line}: {exc}")
    if problems:
        raise InvalidData(path, problems, hint="shorten those prompts or raise --max-length")
    return out


class Collator:
    """Pads a batch to its longest row: pad id for inputs, 0 for the mask, -100 for labels (padding on the right)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        n = max(len(r["input_ids"]) for r in rows)
        pad = {"input_ids": self.pad_id, "attention_mask": 0, "labels": IGNORE}
        return {k: torch.tensor([r[k] + [v] * (n - len(r[k])) for r in rows], dtype=torch.long) for k, v in pad.items()}
