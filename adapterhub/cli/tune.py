"""`adapterhub tune` (train an adapter from JSONL and register it) and `adapterhub eval` (measure and record scores)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._common import json_option, print_json, print_table, show_progress

_DATA = click.Path(exists=True, dir_okay=False, path_type=Path)


def _quiet_libraries() -> None:
    """transformers' info and warning chatter off: the command prints its own result (and a progress bar on a tty)."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # transformers leaves these unannotated
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # same
    except ImportError:
        pass


@click.command()
@click.option(
    "--base", default="smollm2", show_default=True, help="Base model folder, or `smollm2` for the embedded SmolLM2-135M-Instruct."
)
@click.option(
    "--data",
    required=True,
    type=_DATA,
    help="Training examples, JSONL (Vertex input_text/output_text, chat messages, or prompt/completion).",
)
@click.option("--eval", "eval_data", type=_DATA, default=None, help="Held-out JSONL: its loss is recorded in the card.")
@click.option("--name", required=True, help="namespace/name to register the adapter as (next version).")
@click.option("--task", required=True, help="What the adapter is for, e.g. dates.")
@click.option("--rank", type=int, default=8, show_default=True)
@click.option("--alpha", type=float, default=16.0, show_default=True)
@click.option("--targets", default="all-linear", show_default=True, help="all-linear, or module names: q_proj,v_proj")
@click.option("--epochs", type=float, default=None, help="Passes over the data (default 3 unless --max-steps).")
@click.option("--max-steps", type=int, default=None, help="Optimizer steps (instead of --epochs).")
@click.option("--lr", type=float, default=2e-4, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--grad-accum", type=int, default=1, show_default=True, help="Batches per optimizer step.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--dora", is_flag=True, help="Weight-decomposed LoRA (DoRA).")
@click.option("--rslora", is_flag=True, help="Rank-stabilised scaling alpha/sqrt(r).")
@click.option("--base-dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True,
              help="dtype of the frozen base while training (bfloat16 halves its memory; adapter weights stay float32).")  # fmt: skip
@click.option("--max-length", type=int, default=512, show_default=True, help="Tokens per example (prompt + answer).")
@click.option("--save-steps", type=int, default=50, show_default=True, help="Checkpoint every N steps (for --resume).")
@click.option(
    "--resume", is_flag=True, help="Continue an interrupted run (same base, data and options) from its last checkpoint."
)
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--description", default="", help="One line about the adapter.")
@json_option
def tune(base: str, data: Path, eval_data: Path | None, name: str, task: str, rank: int, alpha: float, targets: str,
         epochs: float | None, max_steps: int | None, lr: float, batch_size: int, grad_accum: int, seed: int, dora: bool,
         rslora: bool, base_dtype: str, max_length: int, save_steps: int, resume: bool, tags: tuple[str, ...], description: str,
         as_json: bool) -> None:  # fmt: skip
    """Train a LoRA adapter on a JSONL file (loss on the answers only) and register it with its provenance.

    Nothing is registered until training has finished; after Ctrl-C or a crash, rerun with --resume."""
    from ..tuning.train import TuneSettings
    from ..tuning.train import tune as run_tune

    _quiet_libraries()
    settings = TuneSettings(rank=rank, alpha=alpha, targets=targets, epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size,
                            grad_accum=grad_accum, seed=seed, dora=dora, rslora=rslora, base_dtype=base_dtype, max_length=max_length, save_steps=save_steps)  # fmt: skip
    try:
        card = run_tune(base, data, name=name, task=task, eval_data=eval_data, settings=settings, resume=resume,
                        description=description, tags=tags, progress=show_progress())  # fmt: skip
    except KeyboardInterrupt:
        click.echo("interrupted: nothing was registered; rerun the same command with --resume to continue from the "
                   f"last checkpoint (one is written every {save_steps} steps)", err=True)  # fmt: skip
        sys.exit(130)
    if as_json:
        print_json(card)
        return
    prov = card.tune_provenance
    assert prov is not None
    click.echo(card.ref)
    click.echo(f"  {prov.steps} steps in {prov.wall_time_s:.1f} s, loss {prov.loss_curve[0][1]:.3f} -> {prov.loss_curve[-1][1]:.3f}, "
               f"{prov.trainable_params:,} of {prov.total_params:,} parameters trained, peak RSS {prov.peak_rss_bytes / 2**20:,.0f} MiB"
               if prov.loss_curve else f"  {prov.steps} steps")  # fmt: skip


@click.command(name="eval")
@click.argument("refs", nargs=-1)
@click.option("--data", required=True, type=_DATA, help="Held-out examples, JSONL (any format `tune` reads).")
@click.option(
    "--metric",
    type=click.Choice(["exact_match", "accuracy", "rougeL", "chrf", "perplexity"]),
    default="exact_match",
    show_default=True,
)
@click.option("--max-tokens", type=int, default=64, show_default=True, help="Greedy decoding: at most this many new tokens.")
@click.option(
    "--batch-size", type=int, default=8, show_default=True, help="Rows per forward; rows of one batch may use different adapters."
)
@click.option("--base", default="smollm2", show_default=True, help="Base model folder, or `smollm2` for the embedded one.")
@click.option(
    "--base-only", is_flag=True, help="Score the base alone and record it on the base (what adapters' gains are measured from)."
)
@click.option("--with-base", is_flag=True, help="Also score and record the base, in the same batches as the adapters.")
@click.option("--dataset", default=None, help="Dataset name for the score (default: the file's stem).")
@click.option("--split", default="test", show_default=True)
@click.option("--no-record", is_flag=True, help="Print the scores without recording them.")
@json_option
def eval_cmd(refs: tuple[str, ...], data: Path, metric: str, max_tokens: int, batch_size: int, base: str, base_only: bool,
             with_base: bool, dataset: str | None, split: str, no_record: bool, as_json: bool) -> None:  # fmt: skip
    """Measure adapters REFS... (and/or the base) on a JSONL file and record the scores as `measured`."""
    from ..errors import UsageError
    from ..tuning.evaluate import evaluate

    if base_only and refs:
        raise UsageError("--base-only takes no adapters", hint="use --with-base to score adapters and the base together")
    if not refs and not base_only:
        raise UsageError("give adapter references, or --base-only")
    _quiet_libraries()
    report = evaluate(list(refs), data, base=base, metric=metric, max_tokens=max_tokens, batch_size=batch_size, with_base=with_base,
                      dataset=dataset, split=split, record=not no_record)  # fmt: skip
    if as_json:
        print_json({"base_fingerprint": report.base_fingerprint, "notes": report.notes,
                    "results": [{"target": o.target, "score": o.score, "gain": o.gain} for o in report.outcomes]})  # fmt: skip
        return
    rows = [[o.target, f"{o.score.dataset}/{o.score.metric}", f"{o.score.value:.4f}", "" if o.gain is None else f"{o.gain:+.4f}"]
            for o in report.outcomes]  # fmt: skip
    print_table(["target", "score", "value", "gain over base"], rows)
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    if not no_record:
        click.echo(f"recorded as measured (dataset sha256 {report.outcomes[0].score.provenance.dataset_sha256[:12]}, "  # type: ignore[union-attr]
                   f"base {report.base_fingerprint[:12]})")  # fmt: skip
