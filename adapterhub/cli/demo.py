"""`adapterhub demo`: the whole job end to end on the embedded MiniLM base, in a fresh folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import click


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"), show_default=True,
              help="Scratch folder (emptied first) holding the demo registry and files.")  # fmt: skip
@click.option("--only", "only", multiple=True, metavar="STEP",
              help="Run only this step (repeatable), e.g. tune_steps; the registry is still fresh.")  # fmt: skip
def demo(workdir: Path, only: tuple[str, ...]) -> None:
    """Fingerprint MiniLM, register adapters, search, train/attach/swap, merge, share them through a hub, and tune
    an adapter on SmolLM2 from JSONL with measured scores."""
    from ..demo import run_demo

    if workdir.exists():
        shutil.rmtree(workdir)
    ctx = run_demo(workdir, only=only)
    click.echo("")
    click.echo(f"done: registry at {ctx.registry.home}")
