"""Search latency with 100,000 adapters registered, and the wall time of `adapterhub search` as a person runs it.

    .venv/bin/python benchmarks/bench_search.py [--adapters 100000] [--database-url URL]

Rows are bulk-inserted through the store's own tables (registering 100,000 real folders would measure hashing, not
search). Targets: p95 <= 20 ms per query on SQLite; `adapterhub search` <= 0.5 s wall.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from adapterhub.card import SearchQuery
from adapterhub.store.orm import AdapterRow, BaseModelRow, EvalScoreRow, FileRow, RepoRow, TagRow
from adapterhub.store.registry import Registry

TASKS = [f"task-{i}" for i in range(40)] + ["sentiment", "ner", "summarization", "chat", "code"]
TAGS = ["en", "de", "fr", "medical", "legal", "finance", "small", "large"]


def populate(reg: Registry, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with reg.db.write() as s:
        bases = [BaseModelRow(name=f"base-{i}", arch_hash=f"{i:02x}" * 32, content_hash=f"{i + 100:02x}" * 32,
                              parameter_count=10**9, dtype="BF16", model_type="llama") for i in range(20)]  # fmt: skip
        s.add_all(bases)
        s.flush()
        base_ids = [b.id for b in bases]
    batch = 5000
    for start in range(0, n, batch):
        with reg.db.write() as s:
            repos = [{"namespace": f"ns{i % 500}", "name": f"adapter-{i}", "last_version": 1, "private": False,
                      "created_at": t0} for i in range(start, min(n, start + batch))]  # fmt: skip
            s.execute(sa.insert(RepoRow), repos)
            rows = s.execute(sa.select(RepoRow.id).where(RepoRow.name.in_([r["name"] for r in repos]))).scalars().all()
            adapters = [
                {"repo_id": rid, "version": 1, "is_latest": True, "task": rng.choice(TASKS), "method": "lora",
                 "rank": rng.choice([4, 8, 16, 32, 64]), "rank_pattern": {}, "alpha": 16.0, "use_rslora": False,
                 "target_modules": ["q_proj", "v_proj"], "description": f"adapter number {rid}", "license": "mit", "search_text": f"adapter number {rid}",
                 "base_model_id": rng.choice(base_ids), "created_at": t0 + timedelta(seconds=rid)}
                for rid in rows
            ]  # fmt: skip
            s.execute(sa.insert(AdapterRow), adapters)
            ids = s.execute(sa.select(AdapterRow.id).where(AdapterRow.repo_id.in_(rows))).scalars().all()
            s.execute(sa.insert(EvalScoreRow), [
                {"adapter_id": i, "dataset": ds, "metric": "accuracy", "split": "test", "value": rng.random(), "higher_is_better": True}
                for i in ids for ds in ("sst2", "mmlu")
            ])  # fmt: skip
            s.execute(sa.insert(TagRow), [{"adapter_id": i, "tag": rng.choice(TAGS)} for i in ids])
            s.execute(sa.insert(FileRow), [{"adapter_id": i, "path": "adapter_model.safetensors", "sha256": "0" * 64,
                                            "size": 1000} for i in ids])  # fmt: skip
    with reg.db.engine.connect() as conn:
        if reg.db.dialect == "sqlite":
            conn.exec_driver_sql("ANALYZE")
        else:
            conn.execute(sa.text("ANALYZE"))
        conn.commit()


QUERIES = {
    "task": SearchQuery(task="sentiment"),
    "task+rank": SearchQuery(task="chat", rank_min=8, rank_max=32),
    "task+min score+sort": SearchQuery(task="ner", min_scores={"sst2/accuracy": 0.8}, sort="sst2/accuracy"),
    "base hash prefix": SearchQuery(base="0303030303"),
    "tag+sort": SearchQuery(tags=["medical"], sort="mmlu/accuracy", limit=10),
    "text": SearchQuery(text="number 4242"),
    "newest (no filter)": SearchQuery(),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapters", type=int, default=100_000)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="ah-bench-search-"))
    reg = Registry(home=home, database_url=args.database_url)
    t = time.perf_counter()
    populate(reg, args.adapters)
    print(f"populated {args.adapters:,} adapters in {time.perf_counter() - t:.1f} s ({reg.db.dialect})")
    print(f"{'query':<24}{'p50 ms':>9}{'p95 ms':>9}{'matches':>10}")
    worst_p95 = 0.0
    for label, q in QUERIES.items():
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            res = reg.search(q)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        p50, p95 = statistics.median(times), times[int(0.95 * (len(times) - 1))]
        worst_p95 = max(worst_p95, p95)
        print(f"{label:<24}{p50:>9.2f}{p95:>9.2f}{res.total:>10,}")
    print(f"worst p95 {worst_p95:.2f} ms; target <= 20 ms -> ratio {worst_p95 / 20:.2f} of budget")
    exe = str(Path(sys.executable).with_name("adapterhub"))
    env = {**os.environ, "ADAPTERHUB_HOME": str(home)}
    if args.database_url:
        env["ADAPTERHUB_DATABASE_URL"] = args.database_url
    walls = []
    for _ in range(7):
        t = time.perf_counter()
        subprocess.run(
            [exe, "search", "--task", "sentiment", "--sort", "sst2/accuracy", "--limit", "10"],
            env=env,
            check=True,
            capture_output=True,
        )
        walls.append(time.perf_counter() - t)
    wall = statistics.median(walls)
    bare = statistics.median(
        [
            (lambda t: (subprocess.run([sys.executable, "-c", "pass"], check=True), time.perf_counter() - t)[1])(
                time.perf_counter()
            )
            for _ in range(5)
        ]
    )
    print(f"`adapterhub search` wall time: median {wall:.3f} s over 7 runs (bare python start {bare:.3f} s); "
          f"target <= 0.5 s -> {wall / 0.5:.2f} of budget")  # fmt: skip


if __name__ == "__main__":
    main()
