"""Fifty concurrent pulls of one adapter from one `adapterhub serve` on 127.0.0.1: every pull must succeed and verify;
prints p50 / p95 / max latency and the throughput.

    .venv/bin/python benchmarks/bench_concurrent_pulls.py [--pulls 50] [--mb 8] [--database-url URL]

Each pull is the real client (`adapterhub.hub.client.pull`: model info, then each file streamed, hashed and checked,
then registered) into its own registry, from a thread; the run is bounded: at most `--pulls` pulls, each with the
HTTP client's timeouts, and the whole batch is abandoned after `--timeout` seconds.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.factories


def _adapter(folder: Path, mb: int) -> Path:
    """A synthetic PEFT adapter of about `mb` MiB (tests/factories.py builds it)."""
    from tests.factories import write_large_adapter

    width, rank = 2048, 64
    return write_large_adapter(folder, layers=max(1, mb * (1 << 20) // (2 * width * rank * 4)), width=width, rank=rank)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pulls", type=int, default=50)
    ap.add_argument("--mb", type=int, default=8, help="adapter size in MiB")
    ap.add_argument("--database-url", default=None, help="the hub's database (default: SQLite in its storage folder)")
    ap.add_argument("--timeout", type=float, default=600.0, help="give up on the batch after this many seconds")
    args = ap.parse_args()

    os.environ["HF_HUB_OFFLINE"] = "0"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.pop("HF_TOKEN", None)
    from adapterhub.hub.client import pull, push
    from adapterhub.hub.server.background import start_hub
    from adapterhub.store.registry import Registry

    with tempfile.TemporaryDirectory(prefix="bench-pulls-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["HF_HOME"] = str(tmp / "hf")
        folder = _adapter(tmp / "adapter", args.mb)
        src = Registry(home=tmp / "src")
        card = src.add(folder, "bench/pulled", "bench")
        size = sum(f.size for f in card.files)
        extra = ["--open", *(["--database-url", args.database_url] if args.database_url else [])]
        with start_hub(tmp / "hub", args=extra) as hub:
            push("bench/pulled", remote=hub.url, registry=src)
            want = {f.path: f.sha256 for f in card.files if f.path != "README.md"}

            # Each puller's registry is created (and migrated) first: Alembic's upgrade is not safe from several
            # threads of one process at once, and what is measured here is the hub, not client start-up.
            pullers = [Registry(home=tmp / f"puller-{i}") for i in range(args.pulls)]
            for reg in pullers:
                reg.db.ensure_migrated()

            def one(i: int) -> float:
                reg = pullers[i]
                t0 = time.perf_counter()
                got = pull("bench/pulled", remote=hub.url, registry=reg, progress=False)
                took = time.perf_counter() - t0
                reg.db.dispose()
                if {f.path: f.sha256 for f in got.files if f.path in want} != want:
                    raise RuntimeError(f"pull {i} registered different bytes")
                return took

            pull("bench/pulled", remote=hub.url, registry=Registry(home=tmp / "warm"), progress=False)  # imports, first connection
            t0 = time.perf_counter()
            latencies: list[float] = []
            errors: list[str] = []
            with cf.ThreadPoolExecutor(max_workers=args.pulls) as pool:
                futures = [pool.submit(one, i) for i in range(args.pulls)]
                done, not_done = cf.wait(futures, timeout=args.timeout)
                for f in done:
                    try:
                        latencies.append(f.result())
                    except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                        errors.append(f"{type(exc).__name__}: {exc}")
                errors += ["did not finish within --timeout"] * len(not_done)
                for f in not_done:
                    f.cancel()
            wall = time.perf_counter() - t0
            alive = hub.proc.poll() is None

    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) >= 2 else latencies * 99
    print(f"concurrent pulls: {args.pulls} x {size / 2**20:.1f} MiB adapter, one hub on 127.0.0.1"
          f" ({'PostgreSQL' if args.database_url else 'SQLite'}), {os.cpu_count()} CPUs")  # fmt: skip
    if latencies:
        print(f"  ok {len(latencies)}/{args.pulls}   p50 {q[49]:.2f} s   p95 {q[94]:.2f} s   max {latencies[-1]:.2f} s")
        print(f"  batch wall {wall:.2f} s   {len(latencies) * size / 2**20 / wall:.1f} MiB/s served")
    print(f"  errors {len(errors)}   server alive {alive}")
    for e in errors[:5]:
        print(f"    {e}")
    return 0 if not errors and alive else 1


if __name__ == "__main__":
    sys.exit(main())
