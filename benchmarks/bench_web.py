"""Web page latency with 100,000 adapters registered: each page renders 100 results (or one adapter) server-side.

    .venv/bin/python benchmarks/bench_web.py [--adapters 100000] [--database-url URL] [--no-hub-repos]

Rows are bulk-inserted as in bench_search.py; every adapter also gets a hub repository row (as a pushed adapter
has; 1 in 1,000 private) unless --no-hub-repos, and 1 in 20 a lineage naming two parents. The hub is closed (as
`serve` without --open) and one token exists, so the anonymous caller's pages leave the private adapters out, inside
the SQL (`visible_search`); --open-hub serves it open, where nothing is filtered. Pages are requested
in-process through the ASGI app (starlette's TestClient), so a figure is the whole server-side time of a request:
routing, search, visibility, template rendering. Wall time and process CPU time are both printed: on a machine
shared with other work, wall time includes waiting for a core, and CPU time (SQLite runs in-process) is closer
to what a quiet machine's wall time would be. Target: p95 <= 50 ms for a page of 100 results. Pages count matches
up to 1,000 (or ten pages past the one shown) and then say "1,000+", as the "search alone" column does too.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))
from bench_search import populate

from adapterhub.hub.web.pages import COUNTED, parse_search
from adapterhub.store.orm import AdapterRow, HubRepoRow, RepoRow
from adapterhub.store.registry import Registry
from adapterhub.store.tokens import TokenStore
from adapterhub.store.visibility import Visibility

PAGES = {
    "newest, 100": "/?per=100",
    "task, 100": "/?task=sentiment&per=100",
    "task+min score+sort, 100": "/?task=ner&metric=sst2/accuracy&min=0.5&sort=metric&per=100",
    "tag+sort by metric, 100": "/?tag=medical&metric=mmlu/accuracy&sort=metric&per=100",
    "free text, 100": "/?q=number+4&per=100",
    "base fingerprint, 100": "/?base=0303030303&per=100",
    "page 5 of a task, 100": "/?task=chat&per=100&page=5",
    "page 50, newest, 100": "/?per=100&page=50",
    "page 20 sorted by metric, 100": "/?metric=mmlu/accuracy&sort=metric&per=100&page=20",
    "namespace (200 adapters)": "/ns7",
    "base page, 100": "/bases/0303030303030303",
    "adapter page": "/ns42/adapter-1042",
    "adapter with lineage": "/ns40/adapter-40",
    "compare 3": "/compare?a=ns1/adapter-1&a=ns2/adapter-2&a=ns3/adapter-3",
}


def add_hub_repos_and_lineage(reg: Registry, n: int) -> None:
    """A hub repository per adapter (1 in 1,000 private) and a lineage on 1 in 20 adapters."""
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with reg.db.write() as s:
        repos = s.execute(sa.select(RepoRow.id, RepoRow.namespace, RepoRow.name)).all()
        for start in range(0, len(repos), 5000):
            s.execute(sa.insert(HubRepoRow), [
                {"namespace": ns, "name": name, "repo_type": "model", "private": rid % 1000 == 0, "created_at": t0, "last_modified": t0}
                for rid, ns, name in repos[start:start + 5000]
            ])  # fmt: skip
        lineage_rows = [(rid, i) for i, (rid, _, _) in enumerate(repos) if i % 20 == 0 and i >= 2]
        for rid, i in lineage_rows:
            parents = [{"ref": f"ns{j % 500}/adapter-{j}@1", "weight": 0.5} for j in (i - 1, i - 2)]
            s.execute(
                sa.update(AdapterRow)
                .where(AdapterRow.repo_id == rid)
                .values(lineage={"method": "compose:cat", "parents": parents, "params": {}})
            )
    with reg.db.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE") if reg.db.dialect == "sqlite" else conn.execute(sa.text("ANALYZE"))
        conn.commit()


def counted(q: Any) -> int:
    """The count bound a search page uses (pages.search): COUNTED, or ten pages past the one shown."""
    return max(COUNTED, q.offset + 10 * q.limit)


def _timed(fn: Any) -> tuple[float, float]:
    """(wall ms, process CPU ms) of one call."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000


def _p50_p95(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return statistics.median(values), values[int(0.95 * (len(values) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapters", type=int, default=100_000)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--no-hub-repos", action="store_true", help="registry rows only: no hub repositories, no lineage")
    ap.add_argument("--open-hub", action="store_true", help="serve --open: every caller sees everything (nothing to filter)")
    args = ap.parse_args()
    from fastapi.testclient import TestClient

    from adapterhub.hub.server.app import create_app

    home = Path(tempfile.mkdtemp(prefix="ah-bench-web-"))
    reg = Registry(home=home, database_url=args.database_url)
    t = time.perf_counter()
    populate(reg, args.adapters)
    if not args.no_hub_repos:
        add_hub_repos_and_lineage(reg, args.adapters)
    if not args.open_hub:  # a closed hub with a token: the anonymous requests below must not see the private repos
        TokenStore(reg.db).create("ns1", "read")
    print(f"populated {args.adapters:,} adapters in {time.perf_counter() - t:.1f} s ({reg.db.dialect}"
          f"{', no hub repos' if args.no_hub_repos else ', a hub repo each, 0.1% private'}"
          f"{'; open hub' if args.open_hub else '; closed hub, pages requested anonymously'})")  # fmt: skip
    client = TestClient(create_app(reg, open_hub=args.open_hub))
    for url in PAGES.values():  # warm up (templates compiled, SQL cached), then freeze the heap as `serve` does
        client.get(url)
    gc.freeze()
    print(
        f"{'page':<30}{'wall p50':>9}{'p95':>8}{'cpu p50':>9}{'p95':>8}{'KB':>6}   search alone (cpu p50/p95): the registry query it runs"
    )
    worst = worst_cpu = 0.0
    for label, url in PAGES.items():
        r = client.get(url)
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
        runs = [_timed(lambda u=url: client.get(u)) for _ in range(args.repeats)]  # type: ignore[misc]
        (w50, w95), (c50, c95) = _p50_p95([w for w, _ in runs]), _p50_p95([c for _, c in runs])
        if "100" in label:
            worst, worst_cpu = max(worst, w95), max(worst_cpu, c95)
        alone = ""
        if url.startswith("/?"):
            query, *_ = parse_search(dict(parse_qsl(url[2:])))
            see = Visibility.all() if args.open_hub else Visibility.public_only()
            searched = [
                _timed(lambda q=query, v=see: reg.search(q, visibility=v, local_paths=False, count_limit=counted(q)))
                for _ in range(args.repeats)
            ]  # type: ignore[misc]
            s50, s95 = _p50_p95([c for _, c in searched])
            alone = f"   {s50:.1f} / {s95:.1f}"
        print(f"{label:<30}{w50:>9.1f}{w95:>8.1f}{c50:>9.1f}{c95:>8.1f}{len(r.content) / 1024:>6.0f}{alone}")
    print(f"worst p95 of the 100-result pages: wall {worst:.1f} ms, cpu {worst_cpu:.1f} ms; target <= 50 ms -> "
          f"{worst / 50:.2f} / {worst_cpu / 50:.2f} of budget (load average now {os.getloadavg()[0]:.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
