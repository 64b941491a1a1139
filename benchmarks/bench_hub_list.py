"""Hub listings and registry search over HTTP with 10,000 repositories, against a real `adapterhub serve` on 127.0.0.1.

    .venv/bin/python benchmarks/bench_hub_list.py [--repos 10000] [--private 0.1] [--database-url URL] [--repeats 60]

Rows (hub repos, their head commits and files, and the registry adapters they registered) are bulk-inserted through
the store's own tables, and every repository gets its own README and card blob, so a listing page reads and parses
real model cards. Then the unmodified `HfApi.list_models` and raw HTTP calls time what a client sees, anonymous
(public only) and with a read token (its namespace's private repos too). Target: p95 <= 50 ms per request kind.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

NAMESPACES = 200
TASKS = [f"task-{i}" for i in range(40)] + ["sentiment", "ner", "summarization", "chat", "code"]


def _blob(reg, data: bytes) -> tuple[str, str, int]:  # type: ignore[no-untyped-def]
    """Store `data` in the blob store without an fsync per file (a benchmark fixture, not a commit)."""
    sha256 = hashlib.sha256(data).hexdigest()
    path = reg.blobs.path(sha256)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return sha256, hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(), len(data)


def populate(reg, n: int, private_share: float, seed: int = 0) -> None:  # type: ignore[no-untyped-def]
    from adapterhub.hub.oids import GITATTRIBUTES
    from adapterhub.store.hub_orm import HubCommitFileRow, HubCommitRow, HubRefRow, HubRepoRow
    from adapterhub.store.orm import AdapterRow, FileRow, RepoRow, TagRow

    rng = random.Random(seed)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    attrs = _blob(reg, GITATTRIBUTES)
    config = _blob(reg, json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}).encode())
    weights = ("0" * 64, "0" * 40, 1_000_000)  # never read by a listing
    batch = 2000
    for start in range(0, n, batch):
        idx = range(start, min(n, start + batch))
        with reg.db.write() as s:
            repos = [{"namespace": f"ns{i % NAMESPACES}", "name": f"adapter-{i}", "repo_type": "model", "private": rng.random() < private_share,
                      "created_at": t0 + timedelta(seconds=i), "last_modified": t0 + timedelta(seconds=i)} for i in idx]  # fmt: skip
            s.execute(sa.insert(HubRepoRow), repos)
            ids = dict(s.execute(sa.select(HubRepoRow.name, HubRepoRow.id).where(HubRepoRow.name.in_([r["name"] for r in repos]))).all())
            commits, files, refs, reg_repos, adapters = [], [], [], [], []
            for r in repos:
                i = int(r["name"].split("-")[1])
                cid = hashlib.sha1(f"commit {i}".encode()).hexdigest()
                task = rng.choice(TASKS)
                readme = _blob(reg, (f"---\nlibrary_name: peft\nbase_model: base/model-{i % 20}\nbase_model_relation: adapter\n"
                                     f"tags:\n- {task}\n- adapterhub\n---\n# {r['name']}\n\nAdapter number {i}.\n").encode())  # fmt: skip
                card = _blob(reg, json.dumps({"task": task, "name": r["name"], "namespace": r["namespace"]}).encode())
                commits.append({"id": cid, "repo_id": ids[r["name"]], "parent_id": None, "summary": "push", "description": "",
                                "adapter_ref": f"{r['namespace']}/{r['name']}@1", "created_at": r["last_modified"]})  # fmt: skip
                for path, (sha, git, size) in ((".gitattributes", attrs), ("README.md", readme), ("adapterhub.json", card),
                                               ("adapter_config.json", config), ("adapter_model.safetensors", weights)):  # fmt: skip
                    files.append({"commit_id": cid, "path": path, "sha256": sha, "git_sha1": git, "size": size, "lfs": size > 10_000_000})
                refs.append({"repo_id": ids[r["name"]], "name": "main", "commit_id": cid})
                reg_repos.append({"namespace": r["namespace"], "name": r["name"], "last_version": 1, "private": False, "created_at": r["created_at"]})
                adapters.append((r["name"], task, r["created_at"]))
            s.execute(sa.insert(HubCommitRow), commits)
            s.execute(sa.insert(HubCommitFileRow), files)
            s.execute(sa.insert(HubRefRow), refs)
            s.execute(sa.insert(RepoRow), reg_repos)
            rids = dict(s.execute(sa.select(RepoRow.name, RepoRow.id).where(RepoRow.name.in_([a[0] for a in adapters]))).all())
            s.execute(sa.insert(AdapterRow), [
                {"repo_id": rids[name], "version": 1, "is_latest": True, "task": task, "method": "lora", "rank": rng.choice([4, 8, 16, 32]),
                 "rank_pattern": {}, "alpha": 16.0, "use_rslora": False, "target_modules": ["q_proj", "v_proj"],
                 "description": f"adapter number {name}", "license": "mit", "search_text": f"{name} {task} adapter number", "created_at": when}
                for name, task, when in adapters
            ])  # fmt: skip
            aids = s.execute(sa.select(AdapterRow.id).where(AdapterRow.repo_id.in_(list(rids.values())))).scalars().all()
            s.execute(sa.insert(FileRow), [{"adapter_id": a, "path": "adapter_model.safetensors", "sha256": "0" * 64, "size": 1} for a in aids])
            s.execute(sa.insert(TagRow), [{"adapter_id": a, "tag": rng.choice(["en", "de", "fr"])} for a in aids])
    with reg.db.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()


def timed(label: str, repeats: int, call: Callable[[int], int], results: dict[str, float]) -> None:
    call(0)  # one untimed warm-up (connection, imports)
    times, count = [], 0
    for i in range(repeats):
        t = time.perf_counter()
        count = call(i + 1)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    p50, p95 = statistics.median(times), times[int(0.95 * (len(times) - 1))]
    results[label] = p95
    print(f"{label:<58}{p50:>9.1f}{p95:>9.1f}{count:>9,}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repos", type=int, default=10_000)
    ap.add_argument("--private", type=float, default=0.1, help="share of private repositories")
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--repeats", type=int, default=60)
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "0"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.pop("HF_TOKEN", None)

    import httpx
    from huggingface_hub import HfApi

    from adapterhub.hub.server.background import start_hub
    from adapterhub.store.registry import Registry
    from adapterhub.store.tokens import TokenStore

    with tempfile.TemporaryDirectory(prefix="bench-hub-list-") as tmp_name:
        home = Path(tmp_name) / "hub"
        os.environ["HF_HOME"] = str(Path(tmp_name) / "hf")
        reg = Registry(home=home, database_url=args.database_url)
        t = time.perf_counter()
        populate(reg, args.repos, args.private)
        token = TokenStore(reg.db).create("ns7", "read")[1]
        reg.db.dispose()
        print(f"populated {args.repos:,} hub repos ({args.private:.0%} private) with registry adapters in {time.perf_counter() - t:.1f} s "
              f"({reg.db.dialect}); python {sys.version.split()[0]}; load average {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")  # fmt: skip
        extra = ["--database-url", args.database_url] if args.database_url else []
        with start_hub(home, args=extra) as hub:
            anon, reader = HfApi(endpoint=hub.url, token=False), HfApi(endpoint=hub.url, token=token)
            rng = random.Random(1)
            results: dict[str, float] = {}
            print(f"{'request (p50/p95 ms over ' + str(args.repeats) + ' runs)':<58}{'p50':>9}{'p95':>9}{'items':>9}")
            with httpx.Client(base_url=hub.url, timeout=60) as c, httpx.Client(base_url=hub.url, timeout=60,
                                                                               headers={"Authorization": f"Bearer {token}"}) as ct:  # fmt: skip
                timed("HfApi.list_models(limit=1)", args.repeats, lambda _: len(list(anon.list_models(limit=1))), results)
                timed("HfApi.list_models(limit=10)", args.repeats, lambda _: len(list(anon.list_models(limit=10))), results)
                timed("HfApi.list_models(limit=100)", args.repeats, lambda _: len(list(anon.list_models(limit=100))), results)
                timed("HfApi.list_models(limit=20), read token", args.repeats, lambda _: len(list(reader.list_models(limit=20))), results)
                timed("HfApi.list_models(author=nsN, limit=20)", args.repeats,
                      lambda i: len(list(anon.list_models(author=f"ns{i % NAMESPACES}", limit=20))), results)  # fmt: skip
                timed("HfApi.list_models(search='adapter-N', limit=20)", args.repeats,
                      lambda i: len(list(anon.list_models(search=f"adapter-{rng.randrange(args.repos)}", limit=20))), results)  # fmt: skip
                timed("HfApi.list_models(filter='task-N', limit=10)", args.repeats,
                      lambda i: len(list(anon.list_models(filter=f"task-{i % 40}", limit=10))), results)  # fmt: skip
                timed("GET /api/models?limit=50&cursor=<random> (cold cards)", args.repeats,
                      lambda _: len(c.get("/api/models", params={"limit": 50, "cursor": rng.randrange(args.repos)}).json()), results)  # fmt: skip
                timed("GET /api/models?limit=1000 (one full page)", max(args.repeats // 4, 5),
                      lambda _: len(c.get("/api/models", params={"limit": 1000}).json()), results)  # fmt: skip
                timed("GET /api/adapterhub/search?task=T (anonymous)", args.repeats,
                      lambda i: c.get("/api/adapterhub/search", params={"task": TASKS[i % len(TASKS)]}).json()["total"], results)  # fmt: skip
                timed("GET /api/adapterhub/search?task=T (read token)", args.repeats,
                      lambda i: ct.get("/api/adapterhub/search", params={"task": TASKS[i % len(TASKS)]}).json()["total"], results)  # fmt: skip
                timed("POST /api/adapterhub/search {text} (anonymous)", args.repeats,
                      lambda i: c.post("/api/adapterhub/search", json={"text": f"adapter-{rng.randrange(args.repos)} "}).json()["total"],
                      results)  # fmt: skip
                timed("GET /api/adapterhub/search (newest, no filter)", args.repeats,
                      lambda _: c.get("/api/adapterhub/search").json()["total"], results)  # fmt: skip
                timed("GET /api/adapterhub/search?tag=en&rank_min=8 (anonymous)", args.repeats,
                      lambda _: c.get("/api/adapterhub/search", params={"tag": "en", "rank_min": 8}).json()["total"], results)  # fmt: skip
            listing = {k: v for k, v in results.items() if "search" not in k.lower() or "list_models" in k}
            search = {k: v for k, v in results.items() if k not in listing}
            print(f"load average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
            for name, group in (("list_models", listing), ("registry search", search)):
                worst = max(group, key=group.__getitem__)
                print(f"worst {name} p95: {group[worst]:.1f} ms ({worst}); target <= 50 ms -> {group[worst] / 50:.2f} of budget")


if __name__ == "__main__":
    main()
