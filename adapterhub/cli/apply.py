"""`adapterhub validate` and `adapterhub run`: check an adapter against a base, and take a quick look at its effect."""

from __future__ import annotations

import sys

import click

from ._common import json_option, parse_ref_weight, print_json, print_table


@click.command()
@click.argument("adapter")
@click.option("--base", "base", required=True, type=click.Path(), help="Base model folder or .safetensors file.")
@json_option
def validate(adapter: str, base: str, as_json: bool) -> None:
    """Check ADAPTER (a registry reference or a PEFT folder) against a base model, from file headers only.

    Exit 0 when it is exact or compatible, 1 when it is incompatible.
    """
    from ..compatibility import Outcome
    from ..compatibility import validate as run_validate

    report = run_validate(adapter, base)
    if as_json:
        print_json(report)
    else:
        click.echo(f"{report.outcome.value.upper()}: {report.adapter_ref or report.adapter} on {report.base}")
        click.echo(
            f"  {report.method}, rank {report.rank}, {report.modules_checked} modules checked"
            + (f" ({', '.join(report.target_modules)})" if report.target_modules else "")
        )
        if report.trained_on is not None:
            click.echo(f"  registered with base {report.trained_on.name} (content {report.trained_on.content_hash[:12]})")
        for w in report.warnings:
            click.echo(f"  warning: {w}")
        for n in report.notes:
            click.echo(f"  note: {n}")
        for u in report.unsupported:
            click.echo(f"  unsupported: {u}")
        if report.issues:
            print_table(
                ["module", "problem", "expected", "found"],
                [[i.module, i.problem + (f" ({i.detail})" if i.detail else ""), i.expected, i.found] for i in report.issues],
            )
    if report.outcome is Outcome.INCOMPATIBLE:
        sys.exit(1)


@click.command()
@click.option("--base", "base", required=True, type=click.Path(), help="Base model folder.")
@click.option(
    "--adapter", "adapters", multiple=True, metavar="REF[:WEIGHT]", help="Registry reference or PEFT folder; repeatable."
)
@click.option("--prompt", default=None, help="Causal LM: show the top next tokens after this text.")
@click.option("--sentence", default=None,
              help="Show a summary of this sentence's mean-pooled last hidden layer (an encoder's embedding; on a causal LM "
                   "the same pooling, which is no trained sentence embedding).")  # fmt: skip
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(1, 100))
@click.option("--dtype", default=None, type=click.Choice(["float32", "float16", "bfloat16"]))
@json_option
def run(
    base: str, adapters: tuple[str, ...], prompt: str | None, sentence: str | None, top_k: int, dtype: str | None, as_json: bool
) -> None:
    """Load the base with the adapters attached and run one input, next to the bare base's result."""
    from ..loading import probe

    if (prompt is None) == (sentence is None):
        raise click.UsageError("give exactly one of --prompt or --sentence")
    parsed = [parse_ref_weight(a) for a in adapters]
    result = probe(
        base, [r for r, _ in parsed], prompt=prompt, sentence=sentence, weights=[w for _, w in parsed] or None,
        top_k=top_k, dtype=dtype,
    )  # fmt: skip
    if as_json:
        print_json(result)
        return
    click.echo(f"{result.kind} {result.base} + {', '.join(result.adapters) or '(no adapter)'}: {result.text!r}")
    if result.top_tokens:
        rows = [
            [i + 1, repr(a.token), f"{a.prob:.4f}", repr(b.token), f"{b.prob:.4f}"]
            for i, (a, b) in enumerate(zip(result.top_tokens, result.base_top_tokens))
        ]
        print_table(["rank", "with adapters", "p", "bare base", "p"], rows)
    else:
        click.echo(f"  mean-pooled {result.pooled}")
        click.echo(f"  embedding norm {result.embedding_norm:.4f} (bare base {result.base_embedding_norm:.4f})")
        click.echo(f"  cosine to the bare base's embedding {result.cosine_to_base:.4f}")
        click.echo(f"  first values {result.embedding_head}")
