"""Model cards: the README.md a push writes (YAML front matter in the Hub's conventions) and what a pull reads back.

The front matter carries `base_model`, `base_model_relation: adapter`, `library_name: peft`, `tags`, `license` and a
`model-index` with the eval scores, so the Hub's pages and `ModelCardData` understand it. Reading works on any
PEFT repo's README, not only ours: a plain repo still yields its base model, task and scores.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from ..card import AdapterCard, EvalScore

ADAPTERHUB_TAG = "adapterhub"
# A README larger than this has its front matter ignored when read (the body is never needed whole), and is refused
# by validate-yaml: a few KiB is typical, and YAML parsing is slow and memory-hungry.
MAX_CARD_BYTES = 1 << 20
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")  # `org/name`, not a local path
_FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\r?\n(.*?)(?:\r?\n)?---[ \t]*(?:\r?\n|\Z)", re.S)
# PEFT's task_type -> a task name, for repos that say nothing else about their task.
_PEFT_TASKS = {
    "CAUSAL_LM": "text-generation", "SEQ_CLS": "text-classification", "SEQ_2_SEQ_LM": "text2text-generation",
    "TOKEN_CLS": "token-classification", "QUESTION_ANS": "question-answering", "FEATURE_EXTRACTION": "feature-extraction",
}  # fmt: skip
# Tags the Hub or PEFT add that say nothing about the task.
_GENERIC_TAGS = {ADAPTERHUB_TAG, "peft", "lora", "dora", "safetensors", "base_model:adapter", "transformers"}


class CardInfo(BaseModel):
    """What a README front matter (plus the adapter config) says about an adapter, for registering it."""

    model_config = ConfigDict(extra="forbid")

    task: str = "unknown"
    base_model: str | None = None
    license: str | None = None
    tags: list[str] = Field(default_factory=list)
    scores: list[EvalScore] = Field(default_factory=list)
    description: str = ""


def render(card: AdapterCard, *, repo_id: str | None = None) -> str:
    """README.md for an adapter: Hub-style front matter, then a short human-readable body."""
    repo_id = repo_id or card.full_name
    meta: dict[str, Any] = {}
    base_name = hub_base_model(card)
    if base_name:
        meta["base_model"] = base_name
        meta["base_model_relation"] = "adapter"
    meta["library_name"] = "peft"
    if card.license:
        meta["license"] = card.license
    meta["tags"] = _dedupe([card.task, ADAPTERHUB_TAG, card.method.value, *card.tags])
    if card.scores:
        meta["model-index"] = [{"name": repo_id, "results": [_result(card.task, s) for s in card.scores]}]
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    lines = [f"---\n{front}---", "", f"# {repo_id}", ""]
    if card.description:
        lines += [card.description, ""]
    lines += [
        f"A LoRA adapter ({card.method.value}, rank {card.rank}, alpha {card.alpha:g}) for **{card.task}**"
        + (f" on `{base_name}`." if base_name else "."),
        "",
        f"- Version: {card.version} of `{card.full_name}` in its adapterhub registry",
        f"- Target modules: {', '.join(card.target_modules) or 'n/a'}",
    ]
    if card.base_model:
        lines.append(f"- Base weights: content hash `{card.base_model.content_hash[:16]}`, architecture hash `{card.base_model.arch_hash[:16]}`")
    if card.scores:
        lines += ["", "| dataset | split | metric | value |", "|---|---|---|---|"]
        lines += [f"| {s.dataset} | {s.split} | {s.metric} | {s.value:g} |" for s in card.scores]
    lines += [
        "", "## Use", "", "```python", "from peft import PeftModel", "",
        f'model = PeftModel.from_pretrained(base_model, "{repo_id}")', "```", "",
        f"`adapterhub pull {repo_id}` registers it locally after checking every file's size and sha256 against `adapterhub.json`.", "",
    ]  # fmt: skip
    return "\n".join(lines)


def hub_base_model(card: AdapterCard) -> str | None:
    """The `base_model` to declare: the config's Hub id when it is one (the Hub links it), else the registry's name."""
    declared = card.base_model_name_or_path
    if declared and _HUB_ID.fullmatch(declared):
        return declared
    return card.base_model.name if card.base_model else declared


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without anchors and aliases: a few hundred bytes of nested aliases expand to gigabytes ("billion
    laughs"), and a model card has no use for them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.YAMLError("YAML anchors and aliases (& and *) are not allowed in model card front matter")
        return super().compose_node(parent, index)


def front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a README as a dict ({} when there is none); invalid YAML, anchors or aliases, or a
    README over MAX_CARD_BYTES raise ValueError."""
    if len(text) > MAX_CARD_BYTES:
        raise ValueError(f"the model card is {len(text)} characters long (the limit is {MAX_CARD_BYTES})")
    m = _FRONT_MATTER.match(text)
    if not m:
        return {}
    try:
        data = yaml.load(m.group(1), Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, RecursionError) as exc:
        raise ValueError(f"invalid YAML front matter: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("the front matter is not a YAML mapping")
    return data


def read_card(path: Path) -> str | None:
    """A README's text for `front_matter`, or None when the file is over MAX_CARD_BYTES (never read whole then)."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_CARD_BYTES + 1)
    return None if len(data) > MAX_CARD_BYTES else data.decode("utf-8", "replace")


def body(text: str) -> str:
    m = _FRONT_MATTER.match(text)
    return text[m.end():] if m else text


def card_info(readme: str | None, adapter_config: dict[str, Any] | None = None) -> CardInfo:
    """Base model, task, tags, license and scores from a README's front matter, falling back to the adapter config."""
    meta = front_matter(readme) if readme else {}
    cfg = adapter_config or {}
    tags = [str(t) for t in _as_list(meta.get("tags"))]
    scores = _scores(meta.get("model-index"))
    task = _task(meta, tags, cfg)
    base = meta.get("base_model")
    if isinstance(base, list):
        base = base[0] if base else None
    base = str(base) if base else cfg.get("base_model_name_or_path")
    lic = meta.get("license")
    user_tags = [t for t in tags if t != task and t not in _GENERIC_TAGS and ":" not in t]
    return CardInfo(task=task, base_model=base, license=str(lic) if lic else None, tags=user_tags, scores=scores,
                    description=_first_paragraph(body(readme)) if readme else "")  # fmt: skip


def _result(task: str, s: EvalScore) -> dict[str, Any]:
    return {
        "task": {"type": task},
        "dataset": {"name": s.dataset, "type": s.dataset, "split": s.split},
        "metrics": [{"type": s.metric, "name": s.metric, "value": s.value, "higher_is_better": s.higher_is_better}],
    }


def _scores(model_index: Any) -> list[EvalScore]:
    out: list[EvalScore] = []
    for entry in _as_list(model_index):
        for res in _as_list(entry.get("results") if isinstance(entry, dict) else None):
            if not isinstance(res, dict):
                continue
            ds = res.get("dataset") or {}
            ds_name = str(ds.get("type") or ds.get("name") or "unknown") if isinstance(ds, dict) else str(ds)
            split = str(ds.get("split") or "test") if isinstance(ds, dict) else "test"
            for m in _as_list(res.get("metrics")):
                if not isinstance(m, dict) or "value" not in m:
                    continue
                try:
                    value = float(m["value"])
                except (TypeError, ValueError):
                    continue  # "N/A" and friends are not scores
                metric = str(m.get("type") or m.get("name") or "score")
                hib = m.get("higher_is_better")
                out.append(EvalScore(dataset=ds_name, metric=metric, value=value, split=split,
                                     higher_is_better=bool(hib) if hib is not None else not _lower_is_better(metric)))  # fmt: skip
    return out


def _task(meta: dict[str, Any], tags: list[str], cfg: dict[str, Any]) -> str:
    # Our own cards put the task first in `tags` and in model-index; other repos have pipeline_tag or the PEFT task type.
    for entry in _as_list(meta.get("model-index")):
        for res in _as_list(entry.get("results") if isinstance(entry, dict) else None):
            t = res.get("task") if isinstance(res, dict) else None
            if isinstance(t, dict) and t.get("type"):
                return str(t["type"])
    if ADAPTERHUB_TAG in tags:
        first = next((t for t in tags if t not in _GENERIC_TAGS and ":" not in t), None)
        if first:
            return first
    if meta.get("pipeline_tag"):
        return str(meta["pipeline_tag"])
    return _PEFT_TASKS.get(str(cfg.get("task_type") or "").upper(), "unknown")


def _lower_is_better(metric: str) -> bool:
    m = metric.lower()
    return any(k in m for k in ("loss", "perplexity", "ppl", "error", "wer", "cer", "mse", "mae"))


def _first_paragraph(text: str) -> str:
    for para in re.split(r"\n\s*\n", text.strip()):
        para = para.strip()
        if para and not para.startswith(("#", "|", "```", "-", "<")):
            return para[:1000]
    return ""


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    return x if isinstance(x, list) else [x]


def _dedupe(items: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for i in items:
        if i:
            seen.setdefault(i, None)
    return list(seen)
