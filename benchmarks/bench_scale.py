"""Issue 15's scale benchmarks: big files pulled through presigned redirects, and concurrent pulls over replicas.

    scripts/with-postgres.sh scripts/with-ceph.sh .venv/bin/python benchmarks/bench_scale.py --only pull-redirect
    ... benchmarks/bench_scale.py --only pull-replicas [--clients 50] [--rounds 4]

pull-redirect: one LFS file (`--pull-mb`, default 200 MB of random bytes) downloaded the way `adapterhub pull` and
`hf_hub_download` do (httpx GET of /resolve/, redirects followed, every byte read and sha256-hashed), from a hub
whose blobs are on S3 (a 302 to a presigned URL: the bytes come from the Ceph gateway) against the same file from a
hub serving it directly from its local blob folder. Target: redirect >= 0.9x direct.
pull-replicas: `--clients` concurrent pullers (threads), each pull = the repo's info (GET /api/models/{repo}) and its
two files (config.json directly, a 4 MiB model.safetensors through the redirect, both hashed), `--rounds` each, against one replica and against
two replicas on one PostgreSQL database and one bucket (pullers alternate). p50/p95 latency and errors printed.
Targets: errors = 0 (p95 printed). Needs ADAPTERHUB_TEST_S3_URL + AWS_* (with-ceph.sh) and, for pull-replicas,
ADAPTERHUB_TEST_POSTGRES_URL (with-postgres.sh); `--blobs` and `--database-url` name others.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MiB = 1 << 20


def _blobs_url(args: argparse.Namespace) -> str:
    base = args.blobs or os.environ.get("ADAPTERHUB_TEST_S3_URL")
    if not base:
        sys.exit("bench_scale: pull rows need --blobs s3://bucket/prefix or ADAPTERHUB_TEST_S3_URL (scripts/with-ceph.sh)")
    return f"{base.rstrip('/')}/bench-{uuid.uuid4().hex[:8]}"


@contextmanager
def _fresh_database(base: str | None) -> Iterator[str]:
    """A new database on the PostgreSQL server `base` names (dropped after)."""
    import sqlalchemy as sa

    if not base:
        sys.exit("bench_scale: pull-replicas needs --database-url or ADAPTERHUB_TEST_POSTGRES_URL (scripts/with-postgres.sh)")
    name = f"ah_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _upload(url: str, repo: str, files: dict[str, Path | bytes]) -> None:
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=url, token=False)
    api.create_repo(repo, exist_ok=True)
    ops = [CommitOperationAdd(path, str(src) if isinstance(src, Path) else src) for path, src in files.items()]
    api.create_commit(repo, ops, commit_message="bench")


def _download(client: Any, url: str) -> tuple[int, str]:
    """GET with redirects followed (the Authorization-free hop to a presigned URL), every byte read and hashed."""
    h = hashlib.sha256()
    n = 0
    with client.stream("GET", url, follow_redirects=True) as r:
        r.raise_for_status()
        for chunk in r.iter_bytes(4 * MiB):
            h.update(chunk)
            n += len(chunk)
    return n, h.hexdigest()


def _random_file(path: Path, mb: int) -> str:
    """A valid safetensors file (one U8 tensor of `mb` MiB of random bytes: the hub checks headers); its sha256."""
    n = mb * MiB
    header = json.dumps({"weight": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}})
    header += " " * (-len(header) % 8)
    h = hashlib.sha256()
    with open(path, "wb") as fh:
        head = struct.pack("<Q", len(header)) + header.encode()
        fh.write(head)
        h.update(head)
        for _ in range(mb):
            chunk = os.urandom(MiB)
            fh.write(chunk)
            h.update(chunk)
    return h.hexdigest()


def bench_pull_redirect(args: argparse.Namespace) -> dict[str, float]:
    """MB/s of one big file through the S3 redirect against the same file served directly by a local-blob hub."""
    import httpx

    from adapterhub.hub.server.background import start_hub

    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        src = work / "weights.safetensors"
        sha = _random_file(src, args.pull_mb)
        size = src.stat().st_size
        out: dict[str, list[float]] = {"direct": [], "redirect": []}
        with ExitStack() as stack:
            hubs = {
                "direct": start_hub(work / "local", args=["--open"]),
                "redirect": start_hub(work / "s3", args=["--open"], blobs=_blobs_url(args)),
            }
            for hub in hubs.values():
                stack.callback(hub.stop)
                _upload(hub.url, "bench/big", {"weights.safetensors": src})
            with httpx.Client(timeout=600) as client:
                for kind, hub in hubs.items():  # warm-up (page cache, connections), then the measured runs
                    url = f"{hub.url}/bench/big/resolve/main/weights.safetensors"
                    head = client.head(url)
                    assert head.status_code == (302 if kind == "redirect" else 200), (kind, head.status_code)
                    assert _download(client, url) == (size, sha)
                for _ in range(args.repeat):
                    for kind, hub in hubs.items():
                        t0 = time.perf_counter()
                        got = _download(client, f"{hub.url}/bench/big/resolve/main/weights.safetensors")
                        out[kind].append(size / MiB / (time.perf_counter() - t0))
                        assert got == (size, sha)
        direct, redirect = statistics.median(out["direct"]), statistics.median(out["redirect"])
        print(f"pull {size / 1e6:.0f} MB, sha256 checked, median of {args.repeat}:")
        print(f"  direct from the replica (local blobs):   {direct:8.1f} MiB/s  {[round(x) for x in out['direct']]}")
        print(f"  302 -> presigned URL (Ceph radosgw):      {redirect:8.1f} MiB/s  {[round(x) for x in out['redirect']]}")
        print(f"  ratio redirect/direct: {redirect / direct:.2f}x (target >= 0.9x)")
        return {"direct_mib_s": direct, "redirect_mib_s": redirect, "ratio": redirect / direct}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _pull_once(client: Any, base: str, repo: str, want: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = client.get(f"{base}/api/models/{repo}")
    r.raise_for_status()
    for path, sha in want.items():
        _, got = _download(client, f"{base}/{repo}/resolve/main/{path}")
        if got != sha:
            raise ValueError(f"{path}: sha256 {got} != {sha}")
    return time.perf_counter() - t0


def bench_pull_replicas(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """p50/p95 latency and errors of `--clients` concurrent pulls against one replica and two, on PostgreSQL + S3."""
    import httpx

    from adapterhub.hub.server.background import start_hub

    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    results: dict[str, dict[str, float]] = {}
    try:
        weights = work / "model.safetensors"
        config = b'{"model_type": "bench", "architectures": ["Bench"]}'
        want = {"config.json": hashlib.sha256(config).hexdigest(), "model.safetensors": _random_file(weights, args.replica_mb)}
        db_base = args.database_url or os.environ.get("ADAPTERHUB_TEST_POSTGRES_URL")
        with _fresh_database(db_base) as db_url, ExitStack() as stack:
            blobs = _blobs_url(args)
            hubs = []
            for i in range(2):
                hub = start_hub(work / f"replica{i}", args=["--open", "--database-url", db_url], blobs=blobs)
                stack.callback(hub.stop)
                hubs.append(hub)
            repos = [f"bench/a{i}" for i in range(10)]
            for i, repo in enumerate(repos):
                _upload(hubs[i % 2].url, repo, {"config.json": config, "model.safetensors": weights})
            limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
            for label, bases in (("1 replica", [hubs[0].url]), ("2 replicas", [h.url for h in hubs])):
                latencies: list[float] = []
                errors: list[str] = []

                def puller(k: int, bases: list[str] = bases, errors: list[str] = errors) -> list[float]:
                    took = []
                    with httpx.Client(timeout=120, limits=limits) as client:
                        for r in range(args.rounds):
                            try:
                                took.append(_pull_once(client, bases[k % len(bases)], repos[(k + r) % len(repos)], want))
                            except Exception as exc:  # counted, the run goes on
                                errors.append(f"{type(exc).__name__}: {exc}")
                    return took

                t0 = time.perf_counter()
                with ThreadPoolExecutor(args.clients) as pool:
                    for took in pool.map(puller, range(args.clients)):
                        latencies.extend(took)
                wall = time.perf_counter() - t0
                q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else latencies * 99
                results[label] = {
                    "p50_ms": q[49] * 1000,
                    "p95_ms": q[94] * 1000,
                    "errors": len(errors),
                    "pulls_s": len(latencies) / wall,
                }
                print(f"{args.clients} concurrent pulls x {args.rounds} rounds, {label}: p50 {q[49] * 1000:7.1f} ms  "
                      f"p95 {q[94] * 1000:7.1f} ms  {len(latencies) / wall:6.1f} pulls/s  errors {len(errors)}"
                      + (f"  first: {errors[0]}" if errors else ""))  # fmt: skip
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


BENCHES: dict[str, Callable[[argparse.Namespace], Any]] = {
    "pull-redirect": bench_pull_redirect,
    "pull-replicas": bench_pull_replicas,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--only", choices=sorted(BENCHES), action="append", help="run only these rows (repeatable)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measurement (median reported)")
    ap.add_argument("--pull-mb", type=int, default=200, help="pull-redirect: file size in MiB")
    ap.add_argument("--replica-mb", type=int, default=4, help="pull-replicas: the weights file's size in MiB")
    ap.add_argument("--clients", type=int, default=50, help="pull-replicas: concurrent pullers")
    ap.add_argument("--rounds", type=int, default=4, help="pull-replicas: pulls per puller")
    ap.add_argument("--blobs", default=None, help="s3://bucket/prefix (default: ADAPTERHUB_TEST_S3_URL)")
    ap.add_argument("--database-url", default=None, help="PostgreSQL server URL (default: ADAPTERHUB_TEST_POSTGRES_URL)")
    args = ap.parse_args()
    for name in args.only or sorted(BENCHES):
        BENCHES[name](args)


if __name__ == "__main__":
    main()
