"""Model cards: the README.md a push writes (YAML front matter in the Hub's conventions) and what a pull reads back.

The front matter carries `base_model`, `base_model_relation: adapter`, `library_name: peft`, `tags`, `license` and a
`model-index` with the eval scores, so the Hub's pages and `ModelCardData` understand it. Reading works on any
PEFT repo's README, not only ours: a plain repo still yields its base model, task and scores.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from ..card import AdapterCard, EvalScore

if TYPE_CHECKING:
    from huggingface_hub import EvalResult, ModelCardData

ADAPTERHUB_TAG = "adapterhub"
BASE_ADAPTER_TAG = "base_model:adapter:"  # + the base's Hub id: how the Hub's model tree finds a base's adapters
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
    """README.md for an adapter: the Hub's standard front matter, built by huggingface_hub's `ModelCardData` and
    `EvalResult` (so `ModelCard.load` reads it back as written), then a short human-readable body.

    Only fields the Hub knows go in the front matter; what only adapterhub needs (each score's direction, the base's
    hashes, the file list) lives in `adapterhub.json`."""
    from huggingface_hub import ModelCard

    repo_id = repo_id or card.full_name
    base_name = hub_base_model(card)
    front = card_data(card, repo_id).to_yaml()
    lines = [f"---\n{front}\n---", "", f"# {repo_id}", ""]
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
        lines.append(
            f"- Base weights: content hash `{card.base_model.content_hash[:16]}`, architecture hash `{card.base_model.arch_hash[:16]}`"
        )
    if card.scores:
        lines += ["", "| dataset | split | metric | value |", "|---|---|---|---|"]
        lines += [f"| {s.dataset} | {s.split} | {s.metric} | {s.value:g} |" for s in card.scores]
    lines += [
        "", "## Use", "", "```python", "from peft import PeftModel", "",
        f'model = PeftModel.from_pretrained(base_model, "{repo_id}")', "```", "",
        f"`adapterhub pull {repo_id}` registers it locally after checking every file's size and sha256 against `adapterhub.json`.", "",
    ]  # fmt: skip
    return str(ModelCard("\n".join(lines)))  # parsed once here: a card the Hub's own parser refuses is never pushed


def card_data(card: AdapterCard, repo_id: str) -> ModelCardData:
    """The front matter as huggingface_hub's `ModelCardData`: base model (with `base_model_relation: adapter` and the
    `base_model:adapter:<base>` tag the Hub's model tree filters on), `library_name: peft`, license, tags (the task
    first) and one `EvalResult` per score (task, dataset, split, metric, value)."""
    from huggingface_hub import EvalResult, ModelCardData

    base_name = hub_base_model(card)
    tags = _dedupe(
        [card.task, ADAPTERHUB_TAG, card.method.value, *card.tags, f"{BASE_ADAPTER_TAG}{base_name}" if base_name else ""]
    )
    results = [
        EvalResult(task_type=card.task, dataset_type=s.dataset, dataset_name=s.dataset, dataset_split=s.split,
                   metric_type=s.metric, metric_name=s.metric, metric_value=s.value)
        for s in card.scores
    ]  # fmt: skip
    extra: dict[str, Any] = {"base_model_relation": "adapter"} if base_name else {}  # a field ModelCardData keeps as is
    return ModelCardData(base_model=base_name, library_name="peft", license=card.license, tags=tags,
                         model_name=repo_id if results else None, eval_results=results or None, **extra)  # fmt: skip


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
        event = self.peek_event()  # type: ignore[no-untyped-call]  # types-PyYAML leaves the parser's methods untyped
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
    return text[m.end() :] if m else text


def card_info(readme: str | None, adapter_config: dict[str, Any] | None = None) -> CardInfo:
    """Base model, task, tags, license and scores from a README's front matter, falling back to the adapter config.

    The front matter is parsed by `front_matter` (size cap, no YAML anchors or aliases), then read through
    huggingface_hub's `ModelCardData`: scores are its `eval_results`, as the Hub reads them. A score's direction is
    not part of the Hub's card: losses, errors and perplexities count as lower-is-better (`adapterhub.json`, when a
    repository has one, says it exactly)."""
    meta = front_matter(readme) if readme else {}
    cfg = adapter_config or {}
    data = _card_data(meta)
    tags = [str(t) for t in _as_list(meta.get("tags")) if isinstance(t, (str, int, float))]
    results = list(data.eval_results or []) if data is not None else []
    scores = [s for s in (_score(r) for r in results) if s is not None]
    task = _task(meta, tags, cfg, results[0].task_type if results else None)
    base = meta.get("base_model")
    if isinstance(base, list):
        base = base[0] if base else None
    base = str(base) if base else cfg.get("base_model_name_or_path")
    lic = meta.get("license")
    user_tags = [t for t in tags if t != task and t not in _GENERIC_TAGS and ":" not in t]
    return CardInfo(task=task, base_model=base, license=str(lic) if lic else None, tags=user_tags, scores=scores,
                    description=_first_paragraph(body(readme)) if readme else "")  # fmt: skip


def _card_data(meta: dict[str, Any]) -> ModelCardData | None:
    """The front matter's model-index as huggingface_hub's `ModelCardData` (None when it cannot read it). Only the
    model-index is handed over: other keys of a hostile card never become attributes of the object."""
    from huggingface_hub import ModelCardData

    index = meta.get("model-index")
    if not index:
        return None
    try:
        return ModelCardData(ignore_metadata_errors=True, **{"model-index": index})
    except Exception:  # noqa: BLE001 - any shape huggingface_hub trips over is "no scores", never a failed pull
        return None


def _score(r: EvalResult) -> EvalScore | None:
    """One EvalResult as a score; values that are not finite numbers ("N/A") are not scores."""
    try:
        value = float(r.metric_value)
        if not math.isfinite(value):
            return None
        return EvalScore(dataset=str(r.dataset_type or r.dataset_name), metric=str(r.metric_type), value=value,
                         split=str(r.dataset_split or "test"), higher_is_better=not _lower_is_better(str(r.metric_type)))  # fmt: skip
    except (TypeError, ValueError):
        return None


def _task(meta: dict[str, Any], tags: list[str], cfg: dict[str, Any], result_task: str | None) -> str:
    # Our own cards put the task first in `tags` and in model-index; other repos have pipeline_tag or the PEFT task type.
    if result_task:
        return str(result_task)
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
