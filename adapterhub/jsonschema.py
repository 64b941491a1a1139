"""JSON Schema files for the public data formats, generated from the pydantic models.

`python -m adapterhub.jsonschema schemas/` rewrites the checked-in files; a test fails when they drift.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .card import AdapterCard, BaseModelInfo, SearchQuery, SearchResult

SCHEMAS: dict[str, type[BaseModel]] = {
    "adapter-card": AdapterCard,
    "search-result": SearchResult,
    "search-query": SearchQuery,
    "base-model": BaseModelInfo,
}


def generate() -> dict[str, dict[str, Any]]:
    out = {}
    for name, model in SCHEMAS.items():
        schema = model.model_json_schema(mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://adapterhub.dev/schemas/{name}.schema.json"
        out[f"{name}.schema.json"] = schema
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write(folder: Path) -> list[Path]:
    from .fsutil import atomic_write_bytes

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for filename, schema in generate().items():
        atomic_write_bytes(folder / filename, render(schema).encode())
        paths.append(folder / filename)
    return paths


if __name__ == "__main__":
    for p in write(Path(sys.argv[1] if len(sys.argv) > 1 else "schemas")):
        print(p)
