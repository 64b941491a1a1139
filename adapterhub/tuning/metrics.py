"""Scoring predictions against references with well-kept metric code (sacrebleu's chrF, Google's rouge-score),
nothing downloaded at run time. Every score is in [0, 1] except perplexity (>= 1, lower is better)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import UsageError

METRICS = ("exact_match", "accuracy", "rougeL", "chrf", "perplexity")
LOWER_IS_BETTER = {"perplexity"}


def check_metric(name: str) -> str:
    if name not in METRICS:
        raise UsageError(f"unknown metric {name!r}", hint=f"one of {', '.join(METRICS)}")
    return name


def normalize(text: str) -> str:
    """For `accuracy`: case-folded, whitespace collapsed, surrounding quotes and a final period dropped."""
    return re.sub(r"\s+", " ", text).strip().strip("\"'").rstrip(".").strip().casefold()


def score(metric: str, predictions: Sequence[str], references: Sequence[str]) -> float:
    """The corpus score of `predictions` against `references` (same length, non-empty)."""
    if len(predictions) != len(references) or not references:
        raise UsageError(f"{len(predictions)} predictions for {len(references)} references")
    n = len(references)
    if metric == "exact_match":  # the answer exactly, surrounding whitespace aside
        return sum(p.strip() == r.strip() for p, r in zip(predictions, references)) / n
    if metric == "accuracy":  # the label, ignoring case, spacing, quotes and a final period
        return sum(normalize(p) == normalize(r) for p, r in zip(predictions, references)) / n
    if metric == "rougeL":  # mean ROUGE-L F1 over examples
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        return float(sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references))) / n
    if metric == "chrf":  # corpus chrF (sacrebleu defaults: char 6-grams, beta 2), scaled to [0, 1]
        import sacrebleu

        return float(sacrebleu.corpus_chrf(list(predictions), [list(references)]).score) / 100.0
    raise UsageError(f"metric {metric!r} is not computed from generated text", hint=f"one of {', '.join(METRICS)}")
