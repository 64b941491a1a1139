"""Compose 4 adapters: adapterhub's compose vs PEFT's add_weighted_adapter, on all-MiniLM-L6-v2 (real weights).

    .venv/bin/python benchmarks/bench_compose.py [--repeat 3]

Each side does the whole job a user would: read the 4 adapter folders, combine, write the result folder.
PEFT also has to load the base model (it cannot compose without one); that is part of its cost and is shown
separately. Also prints the difference between the two results' deltas (same method semantics) and, for scale,
adapterhub's time on four r=16 all-linear adapters of TinyLlama's shape (1.1B base, no PEFT run there).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import _models as factories  # noqa: E402  (benchmarks/_models.py)

from adapterhub.lora.compose import compose  # noqa: E402

# (adapterhub method, kwargs, PEFT combination_type)
CASES = [
    ("cat", {}, "cat"),
    ("linear", {}, "linear"),
    ("svd", {"rank": 16}, "svd"),
    ("ties", {"rank": 16, "density": 0.5}, "ties_svd"),
]
WEIGHTS = [0.4, 0.3, 0.2, 0.1]


def make_adapters(base: Path, work: Path) -> list[Path]:
    return [
        factories.make_peft_adapter(
            base, work / f"a{i}", r=16, lora_alpha=32, target_modules=["query", "key", "value", "dense"], seed=i
        )
        for i in range(4)
    ]


def peft_compose(
    base: Path, adapters: list[Path], method: str, kw: dict, out: Path
) -> tuple[float, float, dict[str, torch.Tensor]]:
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    t0 = time.perf_counter()
    model = factories.load_model(base)
    t_base = time.perf_counter() - t0
    pm = PeftModel.from_pretrained(model, str(adapters[0]), adapter_name="a0")
    for i, a in enumerate(adapters[1:], 1):
        pm.load_adapter(str(a), adapter_name=f"a{i}")
    extra = {"svd_rank": kw["rank"]} if "rank" in kw else {}
    if "density" in kw:
        extra["density"] = kw["density"]
    pm.add_weighted_adapter([f"a{i}" for i in range(4)], WEIGHTS, "mix", combination_type=method, **extra)
    pm.save_pretrained(str(out), selected_adapters=["mix"])
    total = time.perf_counter() - t0
    deltas = {
        p: m.get_delta_weight("mix").detach() for p, m in pm.named_modules() if isinstance(m, LoraLayer) and "mix" in m.lora_A
    }
    return total, t_base, deltas


def ours_deltas(base: Path, folder: Path) -> dict[str, torch.Tensor]:
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    pm = PeftModel.from_pretrained(factories.load_model(base), str(folder), adapter_name="ours")
    return {
        p: m.get_delta_weight("ours").detach() for p, m in pm.named_modules() if isinstance(m, LoraLayer) and "ours" in m.lora_A
    }


def tinyllama_scale(work: Path) -> None:
    """Four r=16 all-linear adapters of TinyLlama's shape (written directly in PEFT format), composed by adapterhub."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_merge import build_adapter

    folders = []
    for i in range(4):
        f = work / f"tl{i}"
        build_adapter(f, seed=100 + i)
        folders.append(f)
    for method, kw, _ in CASES[:3]:
        t0 = time.perf_counter()
        compose([(f, w) for f, w in zip(folders, WEIGHTS)], method, out=work / f"tl-{method}", register=False, **kw)
        print(f"  TinyLlama-shape 4 x r=16 all-linear (154 modules) {method:>6}: adapterhub {time.perf_counter() - t0:6.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-tinyllama", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    base = factories.minilm_dir()
    work = Path(tempfile.mkdtemp(prefix="bench-compose-"))
    try:
        adapters = make_adapters(base, work)
        print("4 PEFT adapters r=16 on query/key/value/dense of all-MiniLM-L6-v2 (36 modules each); best of", args.repeat)
        for method, kw, peft_method in CASES:
            ours_t = []
            peft_t = []
            base_t = []
            for rep in range(args.repeat):
                out = work / f"ours-{method}-{rep}"
                t0 = time.perf_counter()
                compose([(a, w) for a, w in zip(adapters, WEIGHTS)], method, out=out, register=False, **kw)
                ours_t.append(time.perf_counter() - t0)
                total, tb, ref = peft_compose(base, adapters, peft_method, kw, work / f"peft-{method}-{rep}")
                peft_t.append(total)
                base_t.append(tb)
            ours = ours_deltas(base, work / f"ours-{method}-0")
            err = max(float((ours[k] - ref[k]).abs().max() / ref[k].abs().max()) for k in ref)
            o, p, b = min(ours_t), min(peft_t), min(base_t)
            print(
                f"  {method:>6} (PEFT {peft_method:>8}): adapterhub {o:6.3f} s   PEFT {p:6.3f} s (of which base load {b:5.3f} s)"
                f"   ratio {o / p:5.3f}   ratio excl. base load {o / max(p - b, 1e-9):5.3f}   max rel. delta diff {err:.1e}"
            )
        if not args.skip_tinyllama:
            tinyllama_scale(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
