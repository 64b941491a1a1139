"""Issue 15's scale benchmarks: big files pushed streamed, pulled through presigned redirects, and concurrent pulls over
replicas. Rows: push, pull-redirect, pull-replicas (all by default; `--only` picks).

    .venv/bin/python benchmarks/bench_scale.py --only push [--mb 1000] [--repeat 2] [--with-base64]
    scripts/with-postgres.sh scripts/with-ceph.sh .venv/bin/python benchmarks/bench_scale.py --only pull-redirect
    ... benchmarks/bench_scale.py --only pull-replicas [--clients 50] [--rounds 4]

push: a model folder (a small `config.json` and a ~1 GB `model.safetensors` holding one U8 tensor of random bytes)
pushed with `adapterhub.hub.models.push_model` (sha256 of every file on the client, Git LFS batch, one raw PUT per
file, commit) against raw HTTP PUTs of the same bytes with plain httpx to the same server process, two anchors:
- "raw PUT (sink)": a route that only reads the body and drops it, added to the hub's app in this benchmark's own
  server process (`serve_with_sink`: the app `adapterhub serve` runs, same uvicorn settings, plus that route);
- "raw PUT (upload route)": the hub's own upload route (`PUT /api/models/{ns}/{name}/uploads/{sha256}`), which also
  hashes sha256 and git's blob id while writing to scratch, then stages the file.
Each push goes to a fresh repository and the file is touched first, so nothing is skipped as already held and
the client hashes it while sending, as on a first push. The server's RSS is sampled every
20 ms (psutil on its pid) and the peak growth over its RSS before the push is printed. Targets: push >= 0.5x the
raw PUT; RSS growth <= 64 MiB (also for `--mb 2000`).
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
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MiB = 1 << 20


def build_model_folder(folder: Path, mb: int) -> tuple[Path, str, int]:
    """A loadable-looking model folder: config.json and model.safetensors with one U8 tensor of `mb` MB of random
    bytes; (weights path, sha256, size)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = mb * 1_000_000
    header = json.dumps({"weight": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}, "__metadata__": {"format": "pt"}})
    header += " " * (-len(header) % 8)
    path = folder / "model.safetensors"
    h = hashlib.sha256()
    with open(path, "wb") as fh:
        head = struct.pack("<Q", len(header)) + header.encode()
        fh.write(head)
        h.update(head)
        left = n
        while left:
            chunk = os.urandom(min(left, 8 * MiB))
            fh.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    (folder / "config.json").write_text(json.dumps({"model_type": "bench", "architectures": ["Bench"]}))
    return path, h.hexdigest(), path.stat().st_size


class PeakRss:
    """Samples a process's RSS on a thread; `growth` is the peak over the RSS when sampling started."""

    def __init__(self, pid: int, every_s: float = 0.02) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.every_s = every_s
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.every_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.start


def raw_put(url: str, path: Path, size: int, headers: dict[str, str]) -> None:
    """PUT the file's bytes with plain httpx, read in 1 MiB pieces (what any HTTP client would do)."""
    import httpx

    def chunks() -> Any:
        with open(path, "rb") as fh:
            while chunk := fh.read(MiB):
                yield chunk

    with httpx.Client(timeout=600) as client:
        r = client.put(url, content=chunks(), headers={**headers, "Content-Length": str(size)})
        r.raise_for_status()


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


SINK_PATH = "/api/models/bench/sink/uploads/{oid}"  # matches the upload route's body limit (--max-upload-bytes)


def serve_with_sink(home: Path, port: int) -> None:
    """Run the hub `adapterhub serve` runs (open, same uvicorn settings) plus a PUT route that drops the body."""
    import uvicorn
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from starlette.routing import Route

    from adapterhub.hub.server.app import ConnectionLimits, create_app
    from adapterhub.hub.server.protocol import MAX_HEAD_BYTES, guarded_protocol
    from adapterhub.sources import default_registry

    app = create_app(default_registry(home), open_hub=True)

    async def sink(request: Request) -> JSONResponse:
        n = 0
        async for chunk in request.stream():
            n += len(chunk)
        return JSONResponse({"received": n})

    app.router.routes.insert(0, Route(SINK_PATH, sink, methods=["PUT"]))  # before the hub's own upload route
    lim = ConnectionLimits()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                http=guarded_protocol(lim.head_timeout, lim.body_timeout), timeout_keep_alive=5,
                limit_concurrency=lim.max_connections, h11_max_incomplete_event_size=MAX_HEAD_BYTES)  # fmt: skip


def start_sink_hub(home: Path) -> Any:
    """This file's `serve_with_sink` in a child process (a ServerProcess: stopped on exit)."""
    import subprocess

    from adapterhub.hub.server.background import ServerProcess, free_port

    home.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), home / "server.log"
    env = {**os.environ, "ADAPTERHUB_HOME": str(home), "HF_HUB_OFFLINE": "0"}
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, __file__, "--serve-with-sink", str(home), str(port)], stdout=fh,
                                stderr=subprocess.STDOUT, env=env)  # fmt: skip
    server = ServerProcess(f"http://127.0.0.1:{port}", proc, log)
    server.wait_ready("/api/models", timeout=120, what="hub with a sink", params={"limit": 1})
    return server


def bench_push(mb: int = 1000, repeat: int = 2, *, with_base64: bool = False) -> dict[str, float]:
    """Streamed push of a `mb` MB model file vs raw PUTs of the same bytes to the same hub process; prints and returns
    throughputs (MB/s), the ratios and the server's peak RSS growth (MiB) during the pushes. `with_base64` also
    times the unmodified huggingface_hub client's upload of the file (inline base64 in one commit, as push did)."""
    os.environ["HF_HUB_OFFLINE"] = "0"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from huggingface_hub import HfApi

    from adapterhub.hub.models import push_model

    work = Path(tempfile.mkdtemp(prefix="bench-push-"))
    os.environ["ADAPTERHUB_HOME"] = str(work / "client")  # the client's caches: not the user's
    try:
        weights, sha256, size = build_model_folder(work / "model", mb)
        print(f"push: model.safetensors {size / 1e6:.1f} MB")
        with start_sink_hub(work / "hub") as hub:
            api = HfApi(endpoint=hub.url)
            sink_times, put_times, push_times, growth = [], [], [], 0
            for i in range(repeat):  # interleaved, so a busy neighbour slows all three alike
                sink_times.append(_timed(lambda: raw_put(hub.url + SINK_PATH.format(oid=sha256), weights, size, {})))
                api.create_repo(f"bench/raw-{i}")
                url = f"{hub.url}/api/models/bench/raw-{i}/uploads/{sha256}"
                put_times.append(_timed(lambda url=url: raw_put(url, weights, size, {})))
                os.utime(weights)  # a new version to the client's sha256 cache: hashed while sent, as a first push is
                with PeakRss(hub.proc.pid) as rss:
                    push_times.append(_timed(lambda i=i: push_model(work / "model", repo=f"bench/push-{i}", remote=hub.url)))
                growth = max(growth, rss.growth)
            b64_times = []
            for i in range(repeat if with_base64 else 0):
                api.create_repo(f"bench/b64-{i}")
                b64_times.append(_timed(lambda i=i: api.upload_file(path_or_fileobj=str(weights), path_in_repo="model.safetensors",
                                                                    repo_id=f"bench/b64-{i}")))  # fmt: skip
        mbs = {k: size / statistics.median(t) / 1e6 for k, t in (("sink", sink_times), ("put", put_times), ("push", push_times))}
        rows = [("raw PUT (sink)", sink_times), ("raw PUT (upload)", put_times), ("push (streamed)", push_times)]
        rows += [("base64 commit", b64_times)] if b64_times else []
        for label, times in rows:
            med = statistics.median(times)
            print(
                f"  {label:<17} median {med:6.2f} s  {size / med / 1e6:7.1f} MB/s   runs {', '.join(f'{t:.2f}' for t in times)}"
            )
        ratio, ratio_route = mbs["push"] / mbs["sink"], mbs["push"] / mbs["put"]
        print(f"  push / raw PUT (sink): {ratio:.2f}x (target >= 0.5x: {'OK' if ratio >= 0.5 else 'BELOW TARGET'}); "
              f"push / raw PUT (upload route): {ratio_route:.2f}x")  # fmt: skip
        print(f"  server peak RSS growth during push: {growth / MiB:.1f} MiB (target <= 64 MiB: "
              f"{'OK' if growth <= 64 * MiB else 'OVER'})")  # fmt: skip
        return {"sink_mb_s": mbs["sink"], "put_mb_s": mbs["put"], "push_mb_s": mbs["push"], "ratio": ratio,
                "ratio_upload_route": ratio_route, "rss_growth_mib": growth / MiB}  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


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
    """MB/s of one big file through the S3 redirect against the same file served directly by the replica: from its
    local blob folder (the ceiling: page cache, no network hop) and from the same bucket through the hub itself
    (`serve --no-redirect`, what the replica would do without redirects)."""
    import httpx

    from adapterhub.hub.server.background import start_hub

    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        src = work / "weights.safetensors"
        sha = _random_file(src, args.pull_mb)
        size = src.stat().st_size
        out: dict[str, list[float]] = {"direct": [], "proxied": [], "redirect": []}
        with ExitStack() as stack:
            hubs = {
                "direct": start_hub(work / "local", args=["--open"]),
                "proxied": start_hub(work / "s3-proxied", args=["--open", "--no-redirect"], blobs=_blobs_url(args)),
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
        proxied = statistics.median(out["proxied"])
        print(f"pull {size / 1e6:.0f} MB, sha256 checked, median of {args.repeat}:")
        print(f"  direct from the replica (local blobs):   {direct:8.1f} MiB/s  {[round(x) for x in out['direct']]}")
        print(f"  direct from the replica (S3, --no-redirect): {proxied:5.1f} MiB/s  {[round(x) for x in out['proxied']]}")
        print(f"  302 -> presigned URL (Ceph radosgw):      {redirect:8.1f} MiB/s  {[round(x) for x in out['redirect']]}")
        print(
            f"  ratio redirect/direct: {redirect / direct:.2f}x vs local blobs, {redirect / proxied:.2f}x vs the same bucket "
            "through the replica (target >= 0.9x)"
        )
        return {
            "direct_mib_s": direct,
            "proxied_mib_s": proxied,
            "redirect_mib_s": redirect,
            "ratio": redirect / direct,
            "ratio_same_bucket": redirect / proxied,
        }
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
    "push": lambda a: bench_push(a.mb, a.repeat, with_base64=a.with_base64),
    "pull-redirect": bench_pull_redirect,
    "pull-replicas": bench_pull_replicas,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--only", choices=sorted(BENCHES), action="append", help="run only these rows (repeatable)")
    ap.add_argument("--repeat", type=int, default=None, help="runs of each measurement, median reported (push 2, pulls 3)")
    ap.add_argument("--mb", type=int, default=1000, help="push: file size in MB (2000 for the 2 GB memory check)")
    ap.add_argument("--with-base64", action="store_true", help="push: also time huggingface_hub's inline base64 commit")
    ap.add_argument("--pull-mb", type=int, default=200, help="pull-redirect: file size in MiB")
    ap.add_argument("--replica-mb", type=int, default=4, help="pull-replicas: the weights file's size in MiB")
    ap.add_argument("--clients", type=int, default=50, help="pull-replicas: concurrent pullers")
    ap.add_argument("--rounds", type=int, default=4, help="pull-replicas: pulls per puller")
    ap.add_argument("--blobs", default=None, help="s3://bucket/prefix (default: ADAPTERHUB_TEST_S3_URL)")
    ap.add_argument("--database-url", default=None, help="PostgreSQL server URL (default: ADAPTERHUB_TEST_POSTGRES_URL)")
    ap.add_argument("--serve-with-sink", nargs=2, metavar=("HOME", "PORT"), help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.serve_with_sink:
        serve_with_sink(Path(args.serve_with_sink[0]), int(args.serve_with_sink[1]))
        return
    for name in args.only or ["push", "pull-redirect", "pull-replicas"]:
        repeat = args.repeat
        if repeat is None:
            repeat = 2 if name == "push" else 3
        BENCHES[name](argparse.Namespace(**{**vars(args), "repeat": repeat}))


if __name__ == "__main__":
    main()
