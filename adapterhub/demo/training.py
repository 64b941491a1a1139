"""A small trainer for the demo: task adapters on a sentence encoder, with no classifier head at all.

Choice: a sentence is classified by the cosine between its mean-pooled embedding and the embedding of each label's
description, both computed by the adapted encoder. The adapter is then the whole task: nothing outside the PEFT
folder is needed to reproduce its score, so PEFT (or adapterhub) loading the folder gives the same classifier.
Training pulls each sentence toward its label's description (cross-entropy over the cosines).
"""

from __future__ import annotations

import json
import random
import time
from importlib import resources
from typing import Any

import torch
from pydantic import BaseModel

from ..lora.trainable import add_trainable

# LoRA on attention and FFN outputs of the top three layers only: gradients stop there, so a step costs a forward
# plus half a backward, and the adapter stays small.
DEMO_TARGETS = r".*encoder\.layer\.[345]\.(attention\.self\.(query|value)|attention\.output\.dense|output\.dense)"


class Example(BaseModel):
    text: str
    label: str
    split: str  # "train" or "test" (held out)


class LabelTask(BaseModel):
    """A classification task given by a dataset file and one description per label."""

    name: str
    dataset: str  # file under adapterhub/data/
    label_texts: dict[str, str]  # label -> the text its sentences are pulled toward

    @property
    def labels(self) -> list[str]:
        return list(self.label_texts)


TASKS: dict[str, LabelTask] = {
    "sentiment": LabelTask(
        name="sentiment", dataset="sentiment.jsonl",
        label_texts={"positive": "This is a positive review.", "negative": "This is a negative review."},
    ),
    "topic": LabelTask(
        name="topic", dataset="topic.jsonl",
        label_texts={
            "sports": "This text is about sports.", "science": "This text is about science.",
            "food": "This text is about food and cooking.", "business": "This text is about money and business.",
        },
    ),
}  # fmt: skip


class TrainResult(BaseModel):
    task: str
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    trainable_parameters: int


def load_examples(task: LabelTask) -> dict[str, list[Example]]:
    """The task's examples by split, from the JSONL file shipped in adapterhub/data/."""
    text = resources.files("adapterhub").joinpath("data").joinpath(task.dataset).read_text(encoding="utf-8")
    out: dict[str, list[Example]] = {}
    for line in text.splitlines():
        if line.strip():
            ex = Example.model_validate(json.loads(line))
            out.setdefault(ex.split, []).append(ex)
    return out


def embed(model: torch.nn.Module, tokenizer: Any, texts: list[str], *, max_length: int = 48) -> torch.Tensor:
    """Unit-length mean-pooled embeddings [len(texts), hidden] (gradients flow when enabled)."""
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(pooled, dim=-1)


def classify(model: torch.nn.Module, tokenizer: Any, task: LabelTask, texts: list[str]) -> list[str]:
    with torch.no_grad():
        sims = embed(model, tokenizer, texts) @ embed(model, tokenizer, list(task.label_texts.values())).T
    return [task.labels[i] for i in sims.argmax(-1).tolist()]


def accuracy(model: torch.nn.Module, tokenizer: Any, task: LabelTask, examples: list[Example]) -> float:
    predicted = classify(model, tokenizer, task, [e.text for e in examples])
    return sum(p == e.label for p, e in zip(predicted, examples)) / max(len(examples), 1)


def train_adapter(
    model: torch.nn.Module,
    tokenizer: Any,
    task: LabelTask,
    name: str,
    train: list[Example],
    *,
    steps: int = 30,
    batch_size: int = 16,
    r: int = 8,
    lr: float = 3e-3,
    temperature: float = 0.05,
    seed: int = 0,
) -> TrainResult:
    """Add a fresh LoRA `name` to `model` and train it on `train`; it stays attached (save it with save_attached)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    add_trainable(model, name, r=r, lora_alpha=2 * r, target_modules=DEMO_TARGETS)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    label_index = {label: i for i, label in enumerate(task.labels)}
    order: list[Example] = []
    losses: list[float] = []
    t0 = time.perf_counter()
    for _ in range(steps):
        if len(order) < batch_size:  # epochs over a reshuffled training set
            order += rng.sample(train, len(train))
        batch, order = order[:batch_size], order[batch_size:]
        sent = embed(model, tokenizer, [e.text for e in batch])
        protos = embed(model, tokenizer, list(task.label_texts.values()))
        target = torch.tensor([label_index[e.label] for e in batch])
        loss = torch.nn.functional.cross_entropy(sent @ protos.T / temperature, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        opt.step()
        losses.append(loss.item())
    for p in params:
        p.requires_grad_(False)
    return TrainResult(
        task=task.name, steps=steps, seconds=time.perf_counter() - t0, first_loss=losses[0], last_loss=losses[-1],
        trainable_parameters=sum(p.numel() for p in params),
    )  # fmt: skip
