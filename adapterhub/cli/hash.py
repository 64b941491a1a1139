"""`adapterhub hash PATH`: a base model's fingerprint (architecture and content hashes) from its safetensors files."""

from __future__ import annotations

import click

from ._common import json_option, print_json, print_table, show_progress


@click.command("hash")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--no-cache", is_flag=True, help="Re-read every byte instead of using cached per-tensor digests.")
@json_option
def hash_cmd(path: str, no_cache: bool, as_json: bool) -> None:
    """Fingerprint the base model at PATH: a model folder, a .safetensors file, or a Hugging Face cache entry.

    The content hash covers every tensor byte and does not depend on sharding, tensor order or metadata.
    """
    from ..fingerprint import hash_model  # imported here so `adapterhub --help` stays fast

    report = hash_model(path, progress=show_progress(), use_cache=not no_cache)
    if as_json:
        print_json(report)
        return
    fp = report.fingerprint
    rows = [
        ("arch hash", fp.arch_hash),
        ("content hash", fp.content_hash),
        ("parameters", f"{fp.parameter_count:,}"),
        ("dtype", fp.dtype),
        ("tensors", fp.tensor_count),
        ("model type", report.model_type or "-"),
        ("bytes read", f"{report.bytes_hashed:,} of {report.tensor_bytes:,} ({report.cached_files} file(s) cached)"),
    ]
    rows += [("file" if i == 0 else "", f) for i, f in enumerate(report.files)]
    print_table(["field", "value"], rows)
