"""Issue 15's scale benchmarks: big files pushed streamed (this file's `push` row) and pulled through redirects.

    .venv/bin/python benchmarks/bench_scale.py --only push [--mb 1000] [--repeat 2] [--with-base64]

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
from collections.abc import Callable
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


BENCHES: dict[str, Callable[[argparse.Namespace], Any]] = {
    "push": lambda a: bench_push(a.mb, a.repeat, with_base64=a.with_base64),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--only", choices=sorted(BENCHES), action="append", help="run only these rows (repeatable)")
    ap.add_argument("--mb", type=int, default=1000, help="push: file size in MB (2000 for the 2 GB memory check)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each measurement (median reported)")
    ap.add_argument("--with-base64", action="store_true", help="push: also time huggingface_hub's inline base64 commit")
    ap.add_argument("--serve-with-sink", nargs=2, metavar=("HOME", "PORT"), help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.serve_with_sink:
        serve_with_sink(Path(args.serve_with_sink[0]), int(args.serve_with_sink[1]))
        return
    for name in args.only or sorted(BENCHES):
        BENCHES[name](args)


if __name__ == "__main__":
    main()
