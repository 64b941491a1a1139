"""Merge one r=16 all-linear adapter into a ~1.1B-parameter Llama (TinyLlama's shape, random bf16 weights):
adapterhub's streaming merge vs PEFT's load + merge_and_unload + save_pretrained, each a whole process measured
by `/usr/bin/time -v` (wall time, peak RSS), run under the shared heavy-work lock.

    .venv/bin/python benchmarks/bench_merge.py [--cache /tmp/adapterhub-bench] [--runs 1]

The model and adapter are built once into the cache folder (tensor by tensor, never the whole model in memory)
and reused. Prints both figures, the ratios (targets: time <= 0.3x, RSS <= 0.25x), and checks that the two merged
models agree within bf16 rounding on sampled tensors.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapterhub.lora.stream import StreamWriter, TensorSpec, plan_shards, shard_names, write_index  # noqa: E402

LOCK = "/tmp/adapterhub-heavy.lock"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

PEFT_SCRIPT = """
import sys, torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
base, adapter, out = sys.argv[1:4]
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
merged.save_pretrained(out, max_shard_size="2GB")
"""


def tinyllama_config():  # type: ignore[no-untyped-def]
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
        num_key_value_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False, dtype="bfloat16",
        architectures=["LlamaForCausalLM"],
    )  # fmt: skip


def build_model(folder: Path) -> None:
    """Random seeded bf16 weights with the real names/shapes (from a meta-device model), written in 2GB shards."""
    from transformers import LlamaForCausalLM

    cfg = tinyllama_config()
    with torch.device("meta"):
        meta = LlamaForCausalLM(cfg)
    specs = [TensorSpec(k, "BF16", tuple(v.shape)) for k, v in meta.state_dict().items()]
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=folder.parent))
    g = torch.Generator().manual_seed(0)
    shards = plan_shards(specs, 2 * 10**9)
    names = shard_names(len(shards))
    for fname, shard in zip(names, shards):
        with open(tmp / fname, "wb") as fh:
            w = StreamWriter(fh, shard)
            for s in shard:
                t = torch.ones(s.shape) if s.name.endswith("norm.weight") else torch.randn(s.shape, generator=g) * 0.02
                w.write(s.name, t.to(torch.bfloat16))
            w.close()
    if len(shards) > 1:
        write_index(tmp, list(zip(names, shards)))
    cfg.save_pretrained(tmp)
    os.replace(tmp, folder)


def build_adapter(folder: Path, r: int = 16, seed: int = 1) -> None:
    """A PEFT-format r=16 adapter on every linear layer (PEFT's all-linear for Llama), random bf16 factors."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    cfg = tinyllama_config()
    dims = {"q_proj": (2048, 2048), "k_proj": (256, 2048), "v_proj": (256, 2048), "o_proj": (2048, 2048),
            "gate_proj": (5632, 2048), "up_proj": (5632, 2048), "down_proj": (2048, 5632)}  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(cfg.num_hidden_layers):
        for name, (out_f, in_f) in dims.items():
            part = "self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            key = f"base_model.model.model.layers.{i}.{part}.{name}"
            sd[f"{key}.lora_A.weight"] = (torch.randn(r, in_f, generator=g) / in_f**0.5).to(torch.bfloat16)
            sd[f"{key}.lora_B.weight"] = (torch.randn(out_f, r, generator=g) * 0.01).to(torch.bfloat16)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=folder.parent))
    save_file(sd, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    LoraConfig(r=r, lora_alpha=2 * r, target_modules=TARGETS, task_type="CAUSAL_LM").save_pretrained(str(tmp))
    os.replace(tmp, folder)


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """Run `cmd` under the heavy lock and /usr/bin/time -v: (wall seconds, peak RSS MiB, CPU seconds user+sys).

    CPU time is printed too because the machine is shared: wall time moves with other people's load."""
    full = ["flock", LOCK, "/usr/bin/time", "-v", *cmd]
    proc = subprocess.run(
        full, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    )
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    assert wall and rss, proc.stderr[-2000:]
    seconds = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    cpu = sum(float(m) for m in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", proc.stderr))
    return seconds, int(rss.group(1)) / 1024, cpu


def warm(folder: Path) -> None:
    """Read the base once so both sides start from the same page cache."""
    for f in sorted(folder.glob("*.safetensors")):
        with open(f, "rb") as fh:
            while fh.read(64 * 1024 * 1024):
                pass


def compare(ours: Path, peft: Path) -> float:
    """Largest |ours - peft| in bf16 ulps of the reference, over sampled merged tensors."""
    from adapterhub.lora.stream import model_tensors, read_tensor

    a, b = model_tensors(ours), model_tensors(peft)
    worst = 0.0
    for name in [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.21.mlp.down_proj.weight",
        "model.layers.10.self_attn.k_proj.weight",
    ]:
        x, y = read_tensor(a[name]).float(), read_tensor(b[name]).float()
        ulp = y.abs().clamp(min=1e-30) * 2.0**-7
        worst = max(worst, float(((x - y).abs() / ulp).max()))
    assert set(a) >= set(b) - {"lm_head.weight"}, "tensor sets differ"
    return worst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=Path("/tmp/adapterhub-bench"))
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the merged outputs")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    base, adapter = args.cache / "tinyllama-1.1b", args.cache / "tinyllama-lora-r16"
    if not base.is_dir():
        print(f"building {base} (once) ...", flush=True)
        t0 = time.perf_counter()
        build_model(base)
        print(f"  built in {time.perf_counter() - t0:.0f} s", flush=True)
    if not adapter.is_dir():
        build_adapter(adapter)
    n_params = json.loads((base / "model.safetensors.index.json").read_text())["metadata"]["total_size"] // 2
    print(
        f"base: {base} ({n_params / 1e9:.2f}B params, bf16, {len(list(base.glob('*.safetensors')))} shards); adapter: r=16 on {len(TARGETS)} module types x 22 layers"
    )

    py = sys.executable
    ah = str(Path(py).with_name("adapterhub"))
    results: dict[str, list[tuple[float, float, float]]] = {"peft": [], "adapterhub": []}
    for run in range(args.runs):
        for side in ("peft", "adapterhub"):
            out = args.cache / f"out-{side}"
            shutil.rmtree(out, ignore_errors=True)
            warm(base)
            if side == "peft":
                cmd = [py, "-c", PEFT_SCRIPT, str(base), str(adapter), str(out)]
            else:
                cmd = [ah, "merge", "--base", str(base), "--adapter", str(adapter), "--out", str(out), "--no-register"]
            wall, rss, cpu = timed(cmd)
            results[side].append((wall, rss, cpu))
            print(
                f"run {run + 1} {side:>10}: wall {wall:7.1f} s   CPU {cpu:7.1f} s   peak RSS {rss:8.0f} MiB   (load avg {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    ulps = compare(args.cache / "out-adapterhub", args.cache / "out-peft")
    pw, pr, pc = (min(x[i] for x in results["peft"]) for i in range(3))
    aw, ar, ac = (min(x[i] for x in results["adapterhub"]) for i in range(3))
    print(
        f"\nbest of {args.runs}:  PEFT {pw:.1f} s wall, {pc:.1f} s CPU, {pr:.0f} MiB   adapterhub {aw:.1f} s wall, {ac:.1f} s CPU, {ar:.0f} MiB"
    )
    print(f"ratio wall time  adapterhub/PEFT = {aw / pw:.3f}  (target <= 0.30)")
    print(f"ratio CPU time   adapterhub/PEFT = {ac / pc:.3f}")
    print(f"ratio peak RSS   adapterhub/PEFT = {ar / pr:.3f}  (target <= 0.25)")
    print(f"max difference on sampled merged tensors: {ulps:.2f} bf16 ulps")
    if not args.keep:
        for side in ("peft", "adapterhub"):
            shutil.rmtree(args.cache / f"out-{side}", ignore_errors=True)


if __name__ == "__main__":
    main()
