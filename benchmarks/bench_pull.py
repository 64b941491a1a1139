"""Pull throughput of a ~200 MB adapter against a raw HTTP GET of the same bytes from the same hub, and push time.

    .venv/bin/python benchmarks/bench_pull.py [--mb 200] [--repeat 3]

A hub (`adapterhub serve`, SQLite + blob store in a temp folder) runs in a child process on 127.0.0.1. The adapter
is a real PEFT LoRA file (rank 64 on 4096x4096 projections, float32 random values) registered in a source
registry. "raw GET" streams /resolve/main/adapter_model.safetensors with httpx and discards the bytes; "pull" is
`adapterhub.hub.client.pull` into a fresh registry: listing, card, streaming into the blob store with sha256
checks, the adapter checks (header, NaN/Inf scan) and the registering transaction. Target: pull >= 0.5x raw GET.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_adapter(folder: Path, mb: int, *, rank: int = 64, dim: int = 4096) -> int:
    """A PEFT LoRA folder of about `mb` megabytes: modules of A [rank, dim] and B [dim, rank] in float32."""
    import torch
    from safetensors.torch import save_file

    per_module = 2 * rank * dim * 4
    modules = max(1, (mb * 1_000_000) // per_module)
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for i in range(modules):
        p = f"base_model.model.model.layers.{i}.self_attn.q_proj"
        tensors[f"{p}.lora_A.weight"] = torch.randn(rank, dim, generator=g) * 0.01
        tensors[f"{p}.lora_B.weight"] = torch.randn(dim, rank, generator=g) * 0.01
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": ["q_proj"], "task_type": "CAUSAL_LM",
              "base_model_name_or_path": "bench/base-4096"}  # fmt: skip
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return (folder / "adapter_model.safetensors").stat().st_size


def raw_get(url: str, dest: Path | None = None) -> int:
    """GET the bytes with plain httpx: discarded (the strict baseline), or written to `dest` as `curl -o` would."""
    import httpx

    n = 0
    with httpx.Client(timeout=120) as client, client.stream("GET", url) as r, open(dest or os.devnull, "wb") as out:
        r.raise_for_status()
        for chunk in r.iter_raw(1 << 20):
            n += len(chunk)
            if dest is not None:
                out.write(chunk)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200, help="adapter size in MB")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measurement (median reported)")
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "0"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from adapterhub.hub.client import pull, push
    from adapterhub.hub.server.background import start_hub
    from adapterhub.store.registry import Registry

    work = Path(tempfile.mkdtemp(prefix="bench-pull-"))
    try:
        size = build_adapter(work / "adapter", args.mb)
        source = Registry(home=work / "source")
        source.add(work / "adapter", "bench/big", "text-generation")
        print(f"adapter: {size / 1e6:.1f} MB ({size} bytes)")
        with start_hub(work / "hub", args=["--open"]) as hub:
            push_times = []
            for i in range(args.repeat):
                t0 = time.perf_counter()
                push("bench/big", remote=hub.url, repo=f"bench/big-{i}", registry=source)
                push_times.append(time.perf_counter() - t0)
            url = f"{hub.url}/bench/big-0/resolve/main/adapter_model.safetensors"
            get_times, file_times, pull_times = [], [], []
            for i in range(args.repeat):  # interleaved, so a busy neighbour slows all three alike
                t0 = time.perf_counter()
                assert raw_get(url) == size
                get_times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                assert raw_get(url, work / "raw-get.bin") == size
                file_times.append(time.perf_counter() - t0)
                os.unlink(work / "raw-get.bin")
                target = Registry(home=work / f"target-{i}")
                t0 = time.perf_counter()
                card = pull("bench/big-0", remote=hub.url, registry=target, progress=False)
                pull_times.append(time.perf_counter() - t0)
                assert card.total_size == size + (work / "adapter" / "adapter_config.json").stat().st_size
                shutil.rmtree(target.home)
        rows = [("raw GET (discard)", get_times), ("raw GET (to file)", file_times), ("pull", pull_times), ("push", push_times)]
        for label, times in rows:
            med = statistics.median(times)
            print(f"{label:<18} median {med:6.2f} s  {size / med / 1e6:7.1f} MB/s   runs {', '.join(f'{t:.2f}' for t in times)}")
        ratio = statistics.median(get_times) / statistics.median(pull_times)
        ratio_file = statistics.median(file_times) / statistics.median(pull_times)
        print(f"pull throughput / raw GET (discard): {ratio:.2f}x (target >= 0.5x: {'OK' if ratio >= 0.5 else 'BELOW TARGET'}); "
              f"/ raw GET to file: {ratio_file:.2f}x")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
