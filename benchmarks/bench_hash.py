"""Benchmark adapterhub's content hash against a raw read and plain hashlib.sha256 over the same safetensors files.

    .venv/bin/python benchmarks/bench_hash.py                 # builds ~1.5 GB of TinyLlama-shaped shards in /tmp
    .venv/bin/python benchmarks/bench_hash.py --path MODEL    # any model folder / file / HF cache entry

"Warm" means the files are in the page cache; "cold" evicts them first with posix_fadvise(DONTNEED), which the
kernel honours for clean pages without root. adapterhub runs "uncached" (digest cache cleared) and "cached".
Peak RSS is the process's high-water mark during each run (reset through /proc/self/clear_refs where allowed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

CHUNK = 8 << 20


def build_model(folder: Path, *, layers: int, hidden: int, intermediate: int, vocab: int, shards: int) -> None:
    """Write a TinyLlama-shaped F16 model (random bytes, streamed: constant memory) as `shards` files plus an index."""
    tensors: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors += [(p + f"self_attn.{n}_proj.weight", (hidden, hidden)) for n in "qkvo"]
        tensors += [(p + "mlp.gate_proj.weight", (intermediate, hidden)), (p + "mlp.up_proj.weight", (intermediate, hidden))]
        tensors += [(p + "mlp.down_proj.weight", (hidden, intermediate))]
        tensors += [(p + "input_layernorm.weight", (hidden,)), (p + "post_attention_layernorm.weight", (hidden,))]
    tensors += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    per = -(-len(tensors) // shards)
    folder.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    for s in range(shards):
        part = tensors[s * per : (s + 1) * per]
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for tname, shape in part:
            n = 2
            for d in shape:
                n *= d
            header[tname] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + n]}
            offset += n
            weight_map[tname] = name
        blob = json.dumps(header).encode()
        blob += b" " * (-len(blob) % 8)
        with open(folder / name, "wb") as fh:
            fh.write(struct.pack("<Q", len(blob)) + blob)
            left = offset
            while left:
                step = min(left, 64 << 20)
                fh.write(os.urandom(step))
                left -= step
            fh.flush()
            os.fsync(fh.fileno())  # clean pages, so the cold runs can evict them
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    for f in folder.iterdir():  # adapterhub does not cache files modified in the last 2 s; these are finished
        st = f.stat()
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns - 60_000_000_000))


def evict(files: list[Path]) -> None:
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def raw_read(files: list[Path]) -> None:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(view):
                pass


def plain_sha256(files: list[Path]) -> None:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb", buffering=0) as fh:
            while n := fh.readinto(view):
                h.update(view[:n])


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(label: str, fn: Callable[[], object], nbytes: int, repeats: int, before: Callable[[], None] | None) -> float:
    """Run `fn` `repeats` times (after `before` each time); print best and median MB/s, CPU seconds per GB (all
    threads; unlike wall time it barely moves when other work shares the cores) and peak RSS; return the best MB/s."""
    rates: list[float] = []
    cpu: list[float] = []
    peak = 0.0
    for _ in range(repeats):
        if before is not None:
            before()
        _reset_peak_rss()
        t, c = time.perf_counter(), time.process_time()
        fn()
        rates.append(nbytes / (time.perf_counter() - t) / 1e6)
        cpu.append((time.process_time() - c) / (nbytes / 1e9))
        peak = max(peak, _peak_rss_mb())
    print(f"  {label:<38} best {max(rates):7.0f} MB/s  median {statistics.median(rates):7.0f} MB/s  "
          f"cpu {statistics.median(cpu):5.2f} s/GB  peak RSS {peak:4.0f} MB")  # fmt: skip
    return max(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", type=Path, help="hash this model instead of building one")
    ap.add_argument("--layers", type=int, default=12, help="layers of the built model (12 ~ 1.3 GB in F16)")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="hashing threads (default: adapterhub's choice)")
    ap.add_argument("--workdir", type=Path, default=None, help="where to build the model (default: a temp dir)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="adapterhub-bench-", dir=args.workdir))
    os.environ["ADAPTERHUB_HOME"] = str(work / "home")  # never touch the user's real digest cache
    from adapterhub.fingerprint import DEFAULT_THREADS, digest_cache_dir, hash_model, resolve_model_files

    try:
        if args.path is None:
            t = time.perf_counter()
            build_model(work / "model", layers=args.layers, hidden=2048, intermediate=5632, vocab=32000, shards=args.shards)
            print(f"built {work / 'model'} in {time.perf_counter() - t:.1f}s")
        model = args.path or work / "model"
        files = resolve_model_files(model)
        nbytes = sum(f.stat().st_size for f in files)
        threads = args.threads or DEFAULT_THREADS
        print(f"{len(files)} file(s), {nbytes / 1e9:.2f} GB; cpus={os.cpu_count()}, adapterhub threads={threads}; "
              f"peak-RSS reset {'works' if _reset_peak_rss() else 'unavailable (numbers are process-wide peaks)'}")  # fmt: skip

        def clear_cache() -> None:
            shutil.rmtree(digest_cache_dir(), ignore_errors=True)

        def cold() -> None:
            clear_cache()
            evict(files)

        def ah(n: int) -> Callable[[], None]:
            def run() -> None:
                hash_model(model, progress=False, threads=n)

            return run

        def page_cache_only() -> None:
            evict(files)

        results: dict[str, float] = {}
        raw_read(files)  # make the page cache warm
        for temp, drop, drop_all in (("warm", None, clear_cache), ("cold", page_cache_only, cold)):
            print(f"page cache {temp}" + (" (evicted before each run):" if temp == "cold" else ":"))
            runs: list[tuple[str, str, Callable[[], None], Callable[[], None] | None]] = [
                ("raw", "raw read (8 MiB readinto)", lambda: raw_read(files), drop),
                ("sha", "hashlib.sha256, 1 thread", lambda: plain_sha256(files), drop),
                ("ah1", "adapterhub content_hash, 1 thread", ah(1), drop_all),
                ("ah", f"adapterhub content_hash, {threads} threads", ah(threads), drop_all),
            ]
            if temp == "warm":
                runs.append(("cached", "adapterhub, digests cached", ah(threads), None))
            for key, label, fn, before in runs:
                results[f"{key} {temp}"] = measure(label, fn, nbytes, args.repeats, before)
        print("ratios (best of runs; digest cache cleared for adapterhub):")
        for temp in ("warm", "cold"):
            mine, raw, sha = results["ah " + temp], results["raw " + temp], results["sha " + temp]
            print(f"  {temp}: adapterhub/raw read = {mine / raw:.2f}x   adapterhub/hashlib.sha256 = {mine / sha:.2f}x   "
                  f"hashlib.sha256/raw read = {sha / raw:.2f}x")  # fmt: skip
        again = hash_model(model, progress=False)
        print(
            f"  cached re-hash vs uncached (warm): {results['cached warm'] / results['ah warm']:.0f}x faster "
            f"(a cached run read {again.bytes_hashed} tensor bytes, {again.cached_files}/{len(files)} files from cache)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
