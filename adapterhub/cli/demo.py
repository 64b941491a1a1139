"""`adapterhub demo`: the whole job end to end on the embedded MiniLM base, in a fresh folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import click


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"), show_default=True,
              help="Scratch folder (emptied first) holding the demo registry and files.")  # fmt: skip
def demo(workdir: Path) -> None:
    """Fingerprint MiniLM, register adapters, search, train/attach/swap, merge, and share them through a hub."""
    from ..demo import run_demo

    if workdir.exists():
        shutil.rmtree(workdir)
    ctx = run_demo(workdir)
    click.echo("")
    click.echo(f"done: registry at {ctx.registry.home}")
