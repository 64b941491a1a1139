"""`adapterhub.evaluate`: score registered adapters (and the base itself) on a JSONL file and record the scores as
`measured`, each with its provenance.

The base is loaded once; every adapter is attached to it and the rows of one batch may each use a different adapter
(`route`), so N adapters cost one model load and batches as full as one adapter's. Decoding is greedy, with the
prompt rendered exactly as `tune` rendered it for training (the base's chat template when it has one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..card import EvalScore, ScoreProvenance, ScoreSource
from ..errors import UsageError
from .data import Example, read_jsonl
from .encode import IGNORE, Collator, encode_all, prompt_ids
from .metrics import LOWER_IS_BETTER, check_metric, score

if TYPE_CHECKING:
    from ..store.registry import Registry

BASE = "base"  # how the base's own row is labelled in a report


@dataclass
class Outcome:
    """One evaluated target (an adapter ref, or `base`): its score, its gain over the base, and its predictions."""

    target: str
    score: EvalScore
    gain: float | None = None  # score minus the base's score on the same data (sign: positive means better)
    predictions: list[str] = field(default_factory=list)


@dataclass
class EvalReport:
    outcomes: list[Outcome]
    base_fingerprint: str
    notes: list[str] = field(default_factory=list)

    def get(self, target: str) -> Outcome:
        return next(o for o in self.outcomes if o.target == target)


def evaluate(
    refs: Sequence[str],
    data: Path | str,
    *,
    base: Path | str = "smollm2",
    metric: str = "exact_match",
    max_tokens: int = 64,
    batch_size: int = 8,
    with_base: bool = False,
    dataset: str | None = None,
    split: str = "test",
    record: bool = True,
    registry: Registry | None = None,
) -> EvalReport:
    """Score each adapter in `refs` (and the base itself when `with_base`, or when `refs` is empty) on `data`.

    With `record`, adapter scores are stored on their versions (`Registry.record_scores`) and the base's on its base
    record (`Registry.record_base_scores`), all `source: measured`. Each adapter's gain is measured against the base's
    score on the same dataset bytes, from this run or from an earlier `--base-only` run."""
    from .. import __version__
    from ..fingerprint import fingerprint
    from ..loading import load
    from ..store.registry import Registry
    from .train import resolve_base

    check_metric(metric)
    if max_tokens < 1 or batch_size < 1:
        raise UsageError("--max-tokens and --batch-size must be positive")
    registry = registry or Registry()
    cards = [registry.get(r) for r in refs]  # unknown refs fail before anything is loaded
    if len({c.ref for c in cards}) != len(cards):
        raise UsageError("the same adapter version is given twice")
    base_dir = resolve_base(base, registry.home)
    ds = read_jsonl(data)
    fp = fingerprint(base_dir)
    targets: list[str | None] = [f"a{i}" for i in range(len(cards))]
    if with_base or not cards:
        targets.append(None)
    import torch
    from transformers import AutoTokenizer

    model = load(
        base_dir, [c.ref for c in cards], registry=registry, names=[t for t in targets if t], activate=False, dtype="float32"
    )
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    with torch.inference_mode():
        if metric == "perplexity":
            values = _perplexities(model, tokenizer, ds.examples, targets, batch_size, str(ds.path))
            preds: dict[str | None, list[str]] = {t: [] for t in targets}
        else:
            preds = _generate(model, tokenizer, ds.examples, targets, batch_size, max_tokens)
            refs_text = [ex.answer for ex in ds.examples]
            values = {t: score(metric, preds[t], refs_text) for t in targets}

    prov = ScoreProvenance(
        dataset_sha256=ds.sha256, dataset_size=len(ds), metric=metric, base_fingerprint=fp.content_hash,
        decoding={"strategy": "greedy", "max_new_tokens": max_tokens, "batch_size": batch_size, "dtype": "float32",
                  "chat_template": bool(getattr(tokenizer, "chat_template", None))} if metric != "perplexity" else
                 {"strategy": "teacher-forced", "batch_size": batch_size, "dtype": "float32"},
        adapterhub_version=__version__, date=datetime.now(timezone.utc),
    )  # fmt: skip
    name = dataset or ds.path.stem
    higher = metric not in LOWER_IS_BETTER

    def make(t: str | None) -> EvalScore:
        return EvalScore(dataset=name, metric=metric, value=values[t], split=split, higher_is_better=higher,
                         source=ScoreSource.MEASURED, provenance=prov)  # fmt: skip

    notes = [f"{c.ref} was registered against base {c.base_model.content_hash[:12]}, measured on {fp.content_hash[:12]}"
             for c in cards if c.base_model and c.base_model.content_hash != fp.content_hash]  # fmt: skip
    base_value = (
        values.get(None) if None in targets else _recorded_base_value(registry, fp.content_hash, name, metric, split, ds.sha256)
    )
    outcomes = []
    for c, t in zip(cards, targets):
        gain = None if base_value is None else (values[t] - base_value) * (1 if higher else -1)
        outcomes.append(Outcome(c.ref, make(t), gain, preds[t]))
    if None in targets:
        outcomes.append(Outcome(BASE, make(None), 0.0, preds[None]))
    if record:
        for c, o in zip(cards, outcomes):
            registry.record_scores(c.ref, [o.score])
        if None in targets:
            registry.register_base(base_dir)
            registry.record_base_scores(fp.content_hash, [outcomes[-1].score])
    return EvalReport(outcomes=outcomes, base_fingerprint=fp.content_hash, notes=notes)


def _recorded_base_value(registry: Registry, content_hash: str, dataset: str, metric: str, split: str, sha: str) -> float | None:
    """The base's measured score on these very bytes (same dataset sha256), if an earlier run recorded one."""
    from ..errors import NotFound

    try:
        info = registry.get_base(content_hash)
    except NotFound:
        return None
    for s in info.scores:
        if (s.dataset, s.metric, s.split) == (dataset, metric, split) and s.provenance and s.provenance.dataset_sha256 == sha:
            return s.value
    return None


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """Token ids that end an answer: the tokenizer's EOS, the model's, and a chat template's end-of-turn marker."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos])
    for marker in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
        tid = tokenizer.convert_tokens_to_ids(marker) if marker in tokenizer.get_vocab() else None
        ids.add(tid)
    return sorted(int(i) for i in ids if i is not None)


def _generate(model: Any, tokenizer: Any, examples: Sequence[Example], targets: Sequence[str | None], batch_size: int,
              max_tokens: int) -> dict[str | None, list[str]]:  # fmt: skip
    """Greedy answers for every (example, target) pair, in mixed-adapter batches (left-padded prompts)."""
    import torch

    from ..lora.routing import route

    jobs = [(i, t) for i in range(len(examples)) for t in targets]  # one example's targets share a batch: equal lengths
    prompts = [prompt_ids(tokenizer, ex) for ex in examples]
    out: dict[str | None, list[str]] = {t: [""] * len(examples) for t in targets}
    pad, stops = int(tokenizer.pad_token_id), _stop_ids(model, tokenizer)
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        rows = [prompts[i] for i, _ in batch]
        n = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (n - len(r)) + r for r in rows], dtype=torch.long)
        mask = torch.tensor([[0] * (n - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
        with route(model, [t for _, t in batch]):
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_tokens, do_sample=False,
                                 num_beams=1, pad_token_id=pad, eos_token_id=stops)  # fmt: skip
        for (i, t), row in zip(batch, gen[:, n:].tolist()):
            cut = next((k for k, tok in enumerate(row) if tok in stops), len(row))
            out[t][i] = tokenizer.decode(row[:cut], skip_special_tokens=True).strip()
    return out


def _perplexities(model: Any, tokenizer: Any, examples: Sequence[Example], targets: Sequence[str | None], batch_size: int,
                  path: str) -> dict[str | None, float]:  # fmt: skip
    """exp(mean negative log-likelihood of the answer tokens), prompt masked as in training, per target."""
    import torch

    from ..lora.routing import route

    rows = encode_all(tokenizer, examples, 10**9, path)
    jobs = [(i, t) for i in range(len(rows)) for t in targets]
    nll: dict[str | None, float] = {t: 0.0 for t in targets}
    count: dict[str | None, int] = {t: 0 for t in targets}
    collate = Collator(int(tokenizer.pad_token_id))
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        b = collate([rows[i] for i, _ in batch])
        with route(model, [t for _, t in batch]):
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
        labels = b["labels"][:, 1:]
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        keep = labels != IGNORE
        tok_nll = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
        for k, (_, t) in enumerate(batch):
            nll[t] += float(tok_nll[k].sum())
            count[t] += int(keep[k].sum())
    return {t: math.exp(nll[t] / max(count[t], 1)) for t in targets}
