"""Attach, switch, forward, mixed batch and resident memory: adapterhub vs PEFT side by side, in one process.

    flock /tmp/adapterhub-heavy.lock .venv/bin/python benchmarks/bench_attach.py [--models minilm,llama-fp32,llama-bf16]

Models: all-MiniLM-L6-v2 (real weights) and a TinyLlama-shaped Llama (1.1B, random seeded weights; the saved copy in
/tmp/adapterhub-bench/tinyllama-1.1b is reused when present, else it is built in memory). Adapters: r=16 on every
linear layer but the output head (PEFT's all-linear), random seeded factors, PEFT format. Every figure is the
median of --repeats runs; 2 threads. PEFT and adapterhub take turns on the same base object (PEFT's unload()
restores it), so only one copy of the base is ever in memory.

Targets: attach <= 0.3x PeftModel.from_pretrained; switch <= 0.1 ms; forward with one adapter <= 1.05x the bare
base; a batch mixing 4 adapters <= 1.3x the same batch with one adapter.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapterhub.lora.attach import attach, detach, set_active  # noqa: E402
from adapterhub.lora.cache import resident_nbytes  # noqa: E402
from adapterhub.lora.routing import route  # noqa: E402
from adapterhub.peft_format import LayerKind, LoraConfig, lora_scaling  # noqa: E402
from adapterhub.peft_weights import LoraModule, PeftAdapter, save_adapter  # noqa: E402

CACHE = Path("/tmp/adapterhub-bench")
SAVED_LLAMA = CACHE / "tinyllama-1.1b"
RANK = 16
RESIDENT = 50
CLOCK: Callable[[], float] = time.perf_counter  # --clock cpu: process CPU time, steadier on a shared machine


def tinyllama_config() -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
        num_key_value_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False,
    )  # fmt: skip


def load_base(which: str) -> nn.Module:
    """The base model, frozen, in eval mode."""
    from transformers import AutoModel, LlamaForCausalLM

    if which == "minilm":
        from _models import minilm_dir

        model = AutoModel.from_pretrained(str(minilm_dir()))
    else:
        dtype = torch.bfloat16 if which.endswith("bf16") else torch.float32
        cfg_path = SAVED_LLAMA / "config.json"
        if cfg_path.is_file() and json.loads(cfg_path.read_text()).get("hidden_size") == 2048:
            model = LlamaForCausalLM.from_pretrained(str(SAVED_LLAMA), dtype=dtype)
        else:
            torch.manual_seed(0)
            model = LlamaForCausalLM(tinyllama_config()).to(dtype)
    return model.eval().requires_grad_(False)


def write_adapter(model: nn.Module, folder: Path, seed: int) -> Path:
    """An r=16 LoRA on every nn.Linear except the output head, random factors (B nonzero so it acts), PEFT format."""
    if (folder / "adapter_model.safetensors").is_file():
        return folder
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    g = torch.Generator().manual_seed(seed)
    modules: dict[str, LoraModule] = {}
    for path, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and mod is not head:
            out_f, in_f = mod.weight.shape
            a = torch.randn(RANK, in_f, generator=g) / in_f**0.5
            b = torch.randn(out_f, RANK, generator=g) * 0.02
            modules[path] = LoraModule(path, LayerKind.LINEAR, a, b, RANK, 2 * RANK, lora_scaling(2 * RANK, RANK, False))
    leaves = sorted({p.rsplit(".", 1)[-1] for p in modules})
    cfg = LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules=leaves)
    return save_adapter(PeftAdapter(cfg, modules), folder, overwrite=True)


def median_s(fn: Callable[[], Any], repeats: int, *, setup: Callable[[], Any] | None = None, warmup: int = 1) -> float:
    """Median wall seconds of fn() over `repeats` runs (setup, untimed, before each)."""
    times = []
    for i in range(warmup + repeats):
        if setup is not None:
            setup()
        t0 = CLOCK()
        fn()
        if i >= warmup:
            times.append(CLOCK() - t0)
    return statistics.median(times)


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def bench(which: str, repeats: int, fwd_repeats: int, only: str | None = None) -> dict[str, float]:
    from peft import PeftModel

    print(f"\n=== {which} ===", flush=True)
    t0 = time.perf_counter()
    model = load_base(which)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"base: {n_params / 1e6:.0f} M parameters, {next(model.parameters()).dtype}, loaded in {time.perf_counter() - t0:.1f} s"
    )
    folders = [write_adapter(model, CACHE / "attach" / f"{which.split('-')[0]}-r{RANK}-s{i}", seed=i) for i in range(4)]
    adapter_mb = sum(f.stat().st_size for f in folders[0].iterdir()) / 2**20
    print(f"adapter: r={RANK} on {len(json.loads((folders[0] / 'adapter_config.json').read_text())['target_modules'])} "
          f"module names, {adapter_mb:.1f} MiB on disk")  # fmt: skip
    vocab = min(int(model.config.vocab_size), 30000)
    g = torch.Generator().manual_seed(0)
    inputs = {"input_ids": torch.randint(5, vocab, (4, 128), generator=g), "attention_mask": torch.ones(4, 128, dtype=torch.long)}
    if which != "minilm":
        inputs["logits_to_keep"] = 1  # type: ignore[assignment]  # the full-vocab head on 512 tokens is not what is compared
    names = [f"a{i}" for i in range(4)]
    r: dict[str, float] = {}
    if only == "memory":
        r.update(memory(model, folders))
        report_memory(r)
        return r

    # --- attach and switch ------------------------------------------------------------------------------------
    holder: dict[str, Any] = {}

    def peft_unload() -> None:
        if "pm" in holder:
            holder.pop("pm").unload()

    def peft_attach() -> None:
        holder["pm"] = PeftModel.from_pretrained(model, str(folders[0]), adapter_name="a0")

    r["attach_peft"] = median_s(peft_attach, repeats, setup=peft_unload)
    pm = holder.pop("pm").eval()
    pm.load_adapter(str(folders[1]), adapter_name="a1")
    flip = iter(range(10**9))
    r["switch_peft"] = median_s(lambda: pm.set_adapter(names[next(flip) % 2]), 50, warmup=2)
    pm.unload()
    pm = None  # released before the next measurement
    r["attach_ours"] = median_s(lambda: attach(model, folders[0], "a0"), repeats, setup=lambda: detach(model))
    attach(model, folders[1], "a1", activate=False)
    flip = iter(range(10**9))
    r["switch_ours"] = median_s(lambda: set_active(model, names[next(flip) % 2]), 2000, warmup=10)
    detach(model)

    # --- forward: rounds interleave bare / PEFT / adapterhub, so load drift on a shared machine hits all alike ----
    times: dict[str, list[float]] = {k: [] for k in ("bare", "peft", "peft_mixed", "ours", "ours_mixed", "ours_routed_one")}
    outs: dict[str, torch.Tensor] = {}

    def timed(key: str, fn: Callable[[], Any]) -> None:
        t0 = CLOCK()
        with torch.inference_mode():
            out = fn()
        times[key].append(CLOCK() - t0)
        outs[key] = out[0]

    for rnd in range(fwd_repeats + 1):  # round 0 warms up
        timed("bare", lambda: model(**inputs))
        pm = PeftModel.from_pretrained(model, str(folders[0]), adapter_name="a0").eval()
        for n, f in zip(names[1:], folders[1:]):
            pm.load_adapter(str(f), adapter_name=n)
        pm.set_adapter("a0")
        timed("peft", lambda: pm(**inputs))  # noqa: B023  (called at once)
        timed("peft_mixed", lambda: pm(**inputs, adapter_names=names))  # noqa: B023
        pm.unload()
        pm = None  # released before the next measurement
        for n, f in zip(names, folders):
            attach(model, f, n, activate=(n == "a0"))
        timed("ours", lambda: model(**inputs))

        def mixed(labels: list[str]) -> Any:
            with route(model, labels):
                return model(**inputs)

        timed("ours_mixed", lambda: mixed(names))  # noqa: B023
        timed("ours_routed_one", lambda: mixed(["a0"] * 4))  # noqa: B023
        detach(model)
        timed("bare", lambda: model(**inputs))  # bare again at the end: no position in the round is favoured
        if rnd == 0:
            times = {k: [] for k in times}
    for k, v in times.items():
        r[f"fwd_{k}"] = statistics.median(v)
    r["max_abs_diff_vs_peft"] = float((outs["ours"].float() - outs["peft"].float()).abs().max())
    r["mixed_max_abs_diff_vs_peft"] = float((outs["ours_mixed"].float() - outs["peft_mixed"].float()).abs().max())
    r["adapter_effect"] = float((outs["ours"].float() - outs["bare"].float()).abs().max())

    r.update(memory(model, folders))
    report(which, r)
    return r


def memory(model: nn.Module, folders: list[Path]) -> dict[str, float]:
    """Bytes of RESIDENT adapters held by PEFT (its lora_ parameters) and by adapterhub (`resident_nbytes`)."""
    from peft import PeftModel

    r: dict[str, float] = {}
    before = rss()
    pm = PeftModel.from_pretrained(model, str(folders[0]), adapter_name="a0")
    for i in range(1, RESIDENT):
        pm.load_adapter(str(folders[i % 4]), adapter_name=f"a{i}")
    r["mem50_peft_rss_mb"] = (rss() - before) / 2**20
    r["mem50_peft_param_mb"] = sum(p.numel() * p.element_size() for n, p in pm.named_parameters() if "lora_" in n) / 2**20
    pm.unload()
    pm = None  # released before the next measurement
    before = rss()
    for i in range(RESIDENT):
        attach(model, folders[i % 4], f"a{i}", activate=False)
    r["mem50_ours_rss_mb"] = (rss() - before) / 2**20
    r["mem50_ours_param_mb"] = sum(resident_nbytes(model, f"a{i}") for i in range(RESIDENT)) / 2**20
    detach(model)
    return r


def report_memory(r: dict[str, float]) -> None:
    print(f"{'':34}{'adapterhub':>14}{'PEFT':>14}{'ratio':>9}   target")
    print(f"{f'{RESIDENT} resident adapters, params':34}{r['mem50_ours_param_mb']:11.1f} MiB{r['mem50_peft_param_mb']:10.1f} MiB"
          f"{r['mem50_ours_param_mb'] / r['mem50_peft_param_mb']:8.3f}x   <= 1.0x PEFT")  # fmt: skip
    print(f"{f'{RESIDENT} resident adapters, RSS growth':34}{r['mem50_ours_rss_mb']:11.1f} MiB{r['mem50_peft_rss_mb']:10.1f} MiB",
          flush=True)  # fmt: skip


def report(which: str, r: dict[str, float]) -> None:
    def ms(x: float) -> str:
        return f"{x * 1e3:9.3f} ms"

    print(f"{'':34}{'adapterhub':>14}{'PEFT':>14}{'ratio':>9}   target")
    print(
        f"{'attach one adapter (loaded base)':34}{ms(r['attach_ours']):>14}{ms(r['attach_peft']):>14}"
        f"{r['attach_ours'] / r['attach_peft']:8.3f}x   <= 0.3x PEFT"
    )
    print(
        f"{'switch adapter':34}{ms(r['switch_ours']):>14}{ms(r['switch_peft']):>14}"
        f"{r['switch_ours'] / r['switch_peft']:8.4f}x   <= 0.1 ms"
    )
    print(f"{'forward 4x128, bare base':34}{ms(r['fwd_bare']):>14}")
    print(
        f"{'forward, one adapter':34}{ms(r['fwd_ours']):>14}{ms(r['fwd_peft']):>14}"
        f"{'':9}   ours {r['fwd_ours'] / r['fwd_bare']:.3f}x bare (<= 1.05x), PEFT {r['fwd_peft'] / r['fwd_bare']:.3f}x"
    )
    print(f"{'forward, 4 adapters mixed':34}{ms(r['fwd_ours_mixed']):>14}{ms(r['fwd_peft_mixed']):>14}"
          f"{r['fwd_ours_mixed'] / r['fwd_peft_mixed']:8.3f}x   ours {r['fwd_ours_mixed'] / r['fwd_ours']:.3f}x one adapter (<= 1.3x),"
          f" PEFT {r['fwd_peft_mixed'] / r['fwd_peft']:.3f}x")  # fmt: skip
    print(f"{'forward, routed, all rows one':34}{ms(r['fwd_ours_routed_one']):>14}")
    print(f"{f'{RESIDENT} resident adapters, params':34}{r['mem50_ours_param_mb']:11.1f} MiB{r['mem50_peft_param_mb']:10.1f} MiB"
          f"{r['mem50_ours_param_mb'] / r['mem50_peft_param_mb']:8.3f}x")  # fmt: skip
    print(f"{f'{RESIDENT} resident adapters, RSS growth':34}{r['mem50_ours_rss_mb']:11.1f} MiB{r['mem50_peft_rss_mb']:10.1f} MiB")
    print(
        f"max |ours - PEFT| output: one adapter {r['max_abs_diff_vs_peft']:.2e}, mixed batch "
        f"{r['mixed_max_abs_diff_vs_peft']:.2e} (the adapter moves it by {r['adapter_effect']:.2e})",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="minilm,llama-fp32,llama-bf16")
    ap.add_argument("--repeats", type=int, default=5, help="runs per attach measurement")
    ap.add_argument("--fwd-repeats", type=int, default=5, help="runs per forward measurement")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: process CPU seconds (shared machines)")
    ap.add_argument("--only", choices=["memory"], default=None, help="memory: only the resident-adapter figures")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"clock: {args.clock}; torch {torch.__version__}, {torch.get_num_threads()} -> 2 threads")
    torch.set_num_threads(2)
    CACHE.mkdir(parents=True, exist_ok=True)
    out = {m: bench(m, args.repeats, args.fwd_repeats, args.only) for m in args.models.split(",")}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
