"""`merge`, `compose`, `extract`: each parses its options, calls one library function, prints a table or JSON."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import json_option, parse_ref_weight, print_json, print_table

METHODS = ("cat", "linear", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune")  # compose_methods.METHODS


def _targets(values: tuple[str, ...]) -> list[str] | None:
    """`--targets q_proj --targets v_proj` or `--targets q_proj,v_proj`."""
    out = [t.strip() for v in values for t in v.split(",") if t.strip()]
    return out or None


def _energy_rows(energy: dict[str, float]) -> list[list[object]]:
    return [[m, f"{e:.6f}"] for m, e in sorted(energy.items())]


@click.command()
@click.option(
    "--base", required=True, type=click.Path(exists=True, path_type=Path), help="Base model folder or .safetensors file."
)
@click.option(
    "--adapter",
    "adapters",
    required=True,
    multiple=True,
    help="Adapter folder or ns/name[@v], optionally :WEIGHT (repeatable, applied in order).",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder to write (must be new or empty).")
@click.option("--dtype", help="Output dtype for floating tensors: float32, float16 or bfloat16 (default: keep each tensor's).")
@click.option("--max-shard-size", default="2GB", show_default=True, help="Largest shard, e.g. 2GB, 500MB, 1GiB.")
@click.option("--name", help="Name to register the merged model under (default: the output folder's name).")
@click.option("--no-register", is_flag=True, help="Only write the folder; do not record it in the registry.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out folder.")
@json_option
def merge(base: Path, adapters: tuple[str, ...], out: Path, dtype: str | None, max_shard_size: str, name: str | None,
          no_register: bool, overwrite: bool, as_json: bool) -> None:  # fmt: skip
    """Merge adapters into the base, streaming one tensor at a time, and write standalone safetensors weights."""
    from ..lora.merge import merge as merge_fn

    res = merge_fn(base, [parse_ref_weight(a) for a in adapters], out, dtype=dtype, max_shard_size=max_shard_size,
                   register=not no_register, name=name, overwrite=overwrite)  # fmt: skip
    if as_json:
        print_json(res)
        return
    rows: list[list[object]] = [["output", res.out], ["files", ", ".join(res.files)], ["tensors", res.tensor_count],
                                ["tensors changed", res.merged_tensors], ["bytes", res.bytes_written]]  # fmt: skip
    rows += [["adapter", f"{p.ref} x {p.weight:g}"] for p in res.parents]
    if res.registered is not None:
        rows += [["registered as", res.registered.name], ["content hash", res.registered.content_hash]]
    print_table(["merge", "value"], rows)


@click.command()
@click.argument("adapters", nargs=-1, required=True)
@click.option("--method", type=click.Choice(METHODS), default="cat", show_default=True, help="How to combine the deltas.")
@click.option("--rank", type=int, help="Rank of the result for svd and task-vector methods (default: the largest input rank).")
@click.option("--density", type=float, help="Fraction kept by ties, dare_* and magnitude_prune, in (0, 1].")
@click.option("--seed", type=int, help="Seed for DARE's random drops (recorded in the lineage).")
@click.option(
    "--majority-sign", type=click.Choice(["total", "frequency"]), default="total", show_default=True, help="TIES sign election."
)
@click.option("--name", required=True, help="namespace/name to register the composed adapter under.")
@click.option("--task", help="Task of the result (default: the parents' task when they agree).")
@click.option("--base", type=click.Path(exists=True, path_type=Path), help="Base model to register the result against.")
@click.option("--out", type=click.Path(path_type=Path), help="Also keep the adapter folder here.")
@click.option("--description", default="", help="Free text for the card.")
@json_option
def compose(adapters: tuple[str, ...], method: str, rank: int | None, density: float | None, seed: int | None, majority_sign: str,
            name: str, task: str | None, base: Path | None, out: Path | None, description: str, as_json: bool) -> None:  # fmt: skip
    """Combine adapters REF[:WEIGHT]... into one new PEFT adapter and register it with its lineage."""
    from ..lora.compose import compose as compose_fn

    res = compose_fn([parse_ref_weight(a) for a in adapters], method, name=name, out=out, rank=rank, density=density,
                     seed=seed, majority_sign_method=majority_sign, task=task, base=base, description=description)  # type: ignore[arg-type]  # fmt: skip
    if as_json:
        print_json(res)
        return
    click.echo(f"{res.card.ref if res.card else name}: {method}, rank {res.rank}, {res.modules} modules"
               + "".join(f", {k}={v}" for k, v in res.params.items() if v is not None))  # fmt: skip
    if res.energy:
        print_table(["module", "retained energy"], _energy_rows(res.energy))


@click.command()
@click.option("--base", required=True, type=click.Path(exists=True, path_type=Path), help="The base model.")
@click.option("--finetuned", required=True, type=click.Path(exists=True, path_type=Path), help="The fully fine-tuned model.")
@click.option("--rank", required=True, type=int, help="Rank of the extracted LoRA.")
@click.option("--targets", multiple=True, help="Module names to extract, e.g. q_proj,v_proj (default: all linear weights).")
@click.option("--name", required=True, help="namespace/name to register the adapter under.")
@click.option("--task", default="extracted", show_default=True, help="Task of the adapter.")
@click.option("--out", type=click.Path(path_type=Path), help="Also keep the adapter folder here.")
@json_option
def extract(
    base: Path, finetuned: Path, rank: int, targets: tuple[str, ...], name: str, task: str, out: Path | None, as_json: bool
) -> None:
    """Extract a rank-R LoRA of (finetuned - base), tensor by tensor, and register it against the base."""
    from ..lora.extract import extract as extract_fn

    res = extract_fn(base, finetuned, rank, targets=_targets(targets), name=name, out=out, task=task)
    if as_json:
        print_json(res)
        return
    click.echo(f"{res.card.ref if res.card else name}: rank {res.rank}, {res.modules} modules")
    print_table(["module", "retained energy"], _energy_rows(res.energy))
    if res.not_captured:
        click.echo(f"changed but not captured (not 2-D linear weights): {', '.join(res.not_captured)}")
