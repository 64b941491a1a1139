"""Migration 0005 on a registry with scores already in it: old scores become `reported`, nothing is lost."""

from __future__ import annotations

import sqlalchemy as sa

from adapterhub.card import ScoreSource
from adapterhub.store import db as dbmod
from adapterhub.store.db import Database


def test_scores_recorded_before_0005_become_reported(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    old = Database(database_url, auto_migrate=False)
    assert old.upgrade("0004") == "0004"
    with old.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO repos (namespace, name, last_version, private, created_at) VALUES ('ns', 'a', 1, false, CURRENT_TIMESTAMP)"
            )
        )
        repo_id = conn.execute(sa.text("SELECT id FROM repos")).scalar_one()
        conn.execute(sa.text(
            "INSERT INTO adapters (repo_id, version, is_latest, task, method, rank, rank_pattern, alpha, use_rslora, target_modules,"
            " description, search_text, created_at) VALUES (:r, 1, true, 't', 'lora', 8, '{}', 16, false, '[]', '', 'ns/a t', CURRENT_TIMESTAMP)"
        ), {"r": repo_id})  # fmt: skip
        adapter_id = conn.execute(sa.text("SELECT id FROM adapters")).scalar_one()
        conn.execute(sa.text("INSERT INTO eval_scores (adapter_id, dataset, metric, split, value, higher_is_better)"
                             " VALUES (:a, 'sst2', 'accuracy', 'test', 0.9, true)"), {"a": adapter_id})  # fmt: skip
    assert old.upgrade() == dbmod.SCHEMA_HEAD
    old.dispose()
    from adapterhub.store.registry import Registry

    reg = Registry(home=tmp_path / "home", database_url=database_url)
    (score,) = reg.get("ns/a").scores
    assert (score.dataset, score.value, score.source, score.provenance) == ("sst2", 0.9, ScoreSource.REPORTED, None)
    reg.db.dispose()
