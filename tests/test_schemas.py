"""The checked-in JSON Schemas are exactly what the pydantic models generate, and real cards validate against them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapterhub import jsonschema

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"


@pytest.mark.parametrize("filename", sorted(jsonschema.generate()))
def test_checked_in_schema_is_current(filename: str) -> None:
    on_disk = (SCHEMA_DIR / filename).read_text()
    assert on_disk == jsonschema.render(jsonschema.generate()[filename]), (
        f"schemas/{filename} is stale: run `python -m adapterhub.jsonschema schemas`"
    )


def test_no_stray_schema_files() -> None:
    assert {p.name for p in SCHEMA_DIR.glob("*.json")} == set(jsonschema.generate())


def test_a_real_card_round_trips_through_its_json(tmp_path: Path, minilm_adapter_dir: Path) -> None:
    from adapterhub.card import AdapterCard
    from adapterhub.store.registry import Registry

    card = Registry(home=tmp_path / "h").add(minilm_adapter_dir, "ns/a", "t")
    data = json.loads(card.model_dump_json())
    assert AdapterCard.model_validate(data) == card
    schema = json.loads((SCHEMA_DIR / "adapter-card.schema.json").read_text())
    assert set(schema["required"]) <= set(data)
    assert set(data) <= set(schema["properties"])
