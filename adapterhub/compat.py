"""A base model's tensors by name, from its safetensors headers alone (no weights loaded), with adapter-path resolution."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidModel
from .tensorfile import TensorInfo, read_header


@dataclass(frozen=True)
class BaseTensors:
    """Every tensor of a base model by name, from its headers."""

    tensors: dict[str, TensorInfo]

    @classmethod
    def from_path(cls, path: Path | str) -> BaseTensors:
        from .fingerprint import resolve_model_files

        tensors: dict[str, TensorInfo] = {}
        for f in resolve_model_files(Path(path)):
            tensors.update(read_header(f, error=InvalidModel).tensors)
        return cls(tensors)

    def resolve(self, param: str) -> str | None:
        """The base tensor name for an adapter-side parameter path, tolerating a task-head prefix on either side
        (PEFT paths of `BertForSequenceClassification` start with `bert.`, a BertModel checkpoint's do not)."""
        if param in self.tensors:
            return param
        parts = param.split(".")
        for i in range(1, len(parts) - 1):
            if ".".join(parts[i:]) in self.tensors:
                return ".".join(parts[i:])
        hits = [n for n in self.tensors if n.endswith("." + param)]
        return hits[0] if len(hits) == 1 else None
