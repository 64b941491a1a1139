"""LoRA against full fine-tuning on SmolLM2-135M-Instruct and the shipped `dates` data; adapterhub tune against the
same job written by hand with PEFT + transformers Trainer.

    flock /tmp/adapterhub-heavy.lock nice -n 10 .venv/bin/python benchmarks/bench_tune.py [--steps 24] [--limits 32,64,128,256]

Every run is its own subprocess (so peak RSS is that run's alone), with the same steps, batch size, data order and
seed; only the learning rate differs (LoRA 2e-3, full 1e-4: each method's usual range). Figures per run: trainable
parameters, peak RSS, seconds per optimizer step (trainer wall time / steps), size on disk of what is saved (the
adapter, or the whole model), and exact match on the 64 held-out examples (greedy, 16 new tokens).
Results go to benchmarks/results/tune.json, tune.md and tune_less_data.png.

Targets (issue 13): trainable <= 1% of full; peak memory <= 0.6x full; step time <= 0.7x full; checkpoint <= 2% of
full; held-out score within 5 points of full. Less data: LoRA and full at 32, 64, 128 and all 256 examples.
adapterhub tune adds <= 5% time over the hand-written job.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "adapterhub" / "data"
RESULTS = ROOT / "benchmarks" / "results"
LR = {"lora": 2e-3, "full": 1e-4, "hand": 2e-3}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def heldout_score(base: Path, refs: list[str], registry: Any) -> float:
    from adapterhub.tuning.evaluate import evaluate

    rep = evaluate(refs, DATA / "dates-heldout.jsonl", base=base, max_tokens=16, batch_size=16, record=False, registry=registry)
    return rep.outcomes[0].score.value


def run_one(kind: str, steps: int, limit: int | None, home: Path, threads: int, targets: str, base_dtype: str) -> dict[str, Any]:
    """One training run in this process; returns its figures."""
    import torch

    torch.set_num_threads(threads)
    from adapterhub.gguf_base import embedded_base
    from adapterhub.store.registry import Registry
    from adapterhub.tuning.train import TuneSettings, train, tune

    base = embedded_base()
    data = DATA / "dates-train.jsonl"
    reg = Registry(home=home)
    settings = TuneSettings(
        rank=8,
        alpha=16,
        targets=targets,
        max_steps=steps,
        lr=LR[kind],
        batch_size=8,
        seed=0,
        save_steps=10**6,
        full=kind == "full",
        base_dtype="float32" if kind == "full" else base_dtype,
    )
    t0 = time.perf_counter()
    if kind == "hand":
        out = hand_written(base, data, steps, home / "hand", targets, base_dtype)
        job = time.perf_counter() - t0
        return {"kind": kind, "job_s": job, **out}
    if kind == "lora":
        card = tune(base, data, name="bench/dates", task="dates", settings=settings, registry=reg, train_limit=limit)
        job = time.perf_counter() - t0
        prov = card.tune_provenance
        assert prov is not None
        size = card.total_size
        score = heldout_score(base, [card.ref], reg)
    else:
        res = train(base, data, settings=settings, home=home, train_limit=limit)
        job = time.perf_counter() - t0
        prov = res.provenance
        assert res.output_dir is not None
        size = folder_bytes(res.output_dir)
        res.tokenizer.save_pretrained(str(res.output_dir))
        score = heldout_score(res.output_dir, [], reg)
    return {"kind": kind, "limit": limit or 256, "steps": prov.steps, "trainable": prov.trainable_params, "total": prov.total_params,
            "peak_rss": prov.peak_rss_bytes, "train_peak_rss": prov.train_peak_rss_bytes, "step_s": prov.wall_time_s / prov.steps, "train_s": prov.wall_time_s, "job_s": job,
            "saved_bytes": size, "score": score, "first_loss": prov.loss_curve[0][1], "last_loss": prov.loss_curve[-1][1]}  # fmt: skip


def hand_written(base: Path, data: Path, steps: int, out: Path, targets: str, base_dtype: str) -> dict[str, Any]:
    """The same job as `adapterhub tune` written directly against PEFT + Trainer: read JSONL, mask the prompt through
    the chat template, train LoRA r=8 on the same target modules, save the adapter. No checks, no provenance, no registry."""
    import torch
    import transformers
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    transformers.set_seed(0)
    tok = AutoTokenizer.from_pretrained(str(base))
    rows = []
    for line in data.read_text().splitlines():
        ex = json.loads(line)
        msgs = [{"role": "user", "content": ex["input_text"]}]
        prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template([*msgs, {"role": "assistant", "content": ex["output_text"]}], tokenize=False)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        a = tok(full[len(prompt) :], add_special_tokens=False)["input_ids"]
        rows.append({"input_ids": p + a, "labels": [-100] * len(p) + a})

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        n = max(len(r["input_ids"]) for r in batch)
        pad = tok.pad_token_id
        return {"input_ids": torch.tensor([r["input_ids"] + [pad] * (n - len(r["input_ids"])) for r in batch]),
                "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * (n - len(r["input_ids"])) for r in batch]),
                "labels": torch.tensor([r["labels"] + [-100] * (n - len(r["labels"])) for r in batch])}  # fmt: skip

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=getattr(torch, base_dtype))
    model = get_peft_model(
        model,
        LoraConfig(
            r=8,
            lora_alpha=16,
            target_modules=targets if targets == "all-linear" else targets.split(","),
            lora_dropout=0.0,
            task_type=TaskType.CAUSAL_LM,
        ),
    )
    args = TrainingArguments(output_dir=str(out / "ckpt"), per_device_train_batch_size=8, learning_rate=LR["hand"], max_steps=steps,
                             seed=0, data_seed=0, logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True,
                             remove_unused_columns=False, use_cpu=True)  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    model.save_pretrained(str(out / "adapter"))
    return {"steps": steps, "train_s": wall, "step_s": wall / steps}


def child(kind: str, steps: int, limit: int | None, threads: int, targets: str, base_dtype: str) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter (its own peak RSS), returning its JSON line."""
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            kind,
            "--steps",
            str(steps),
            "--home",
            tmp,
            "--threads",
            str(threads),
            "--targets",
            targets,
        ]
        cmd += ["--base-dtype", base_dtype]
        cmd += ["--limit", str(limit)] if limit else []
        env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "TRANSFORMERS_VERBOSITY": "error",
        }
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{kind} run failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["process_s"] = time.perf_counter() - t0
        print(
            f"  {kind:<5} limit={result.get('limit', '-'):<4} {json.dumps({k: v for k, v in result.items() if k != 'kind'})}",
            flush=True,
        )
        return result


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)])


def report(runs: dict[str, Any], steps: int, limits: list[int], cmd: str) -> str:
    lora, full, hand = runs["lora"], runs["full"], runs.get("hand")

    def mib(b: float) -> str:
        return f"{b / 2**20:,.1f} MiB"

    main_rows = [
        ["trainable parameters", f"{lora['trainable']:,}", f"{full['trainable']:,}", f"{lora['trainable'] / full['trainable']:.2%}", "<= 1%"],
        ["peak RSS while training", mib(lora["train_peak_rss"]), mib(full["train_peak_rss"]),
         f"{lora['train_peak_rss'] / full['train_peak_rss']:.2f}x", "<= 0.6x"],
        ["peak RSS, whole process (incl. loading)", mib(lora["peak_rss"]), mib(full["peak_rss"]),
         f"{lora['peak_rss'] / full['peak_rss']:.2f}x", ""],
        ["time per step", f"{lora['step_s']:.2f} s", f"{full['step_s']:.2f} s", f"{lora['step_s'] / full['step_s']:.2f}x", "<= 0.7x"],
        ["saved on disk", mib(lora["saved_bytes"]), mib(full["saved_bytes"]), f"{lora['saved_bytes'] / full['saved_bytes']:.2%}", "<= 2%"],
        ["held-out exact match", f"{lora['score']:.3f}", f"{full['score']:.3f}", f"{100 * (lora['score'] - full['score']):+.1f} points", ">= -5 points"],
    ]  # fmt: skip
    out = [f"# bench_tune: LoRA r=8 vs full fine-tuning, SmolLM2-135M-Instruct, dates data, {steps} steps x batch 8, seed 0",
           "", f"command: `{cmd}`", "", table(main_rows, ["", "LoRA r=8", "full", "LoRA / full", "target"]), ""]  # fmt: skip
    less = [
        [str(n), f"{runs[f'lora-{n}']['score']:.3f}", f"{runs[f'full-{n}']['score']:.3f}"]
        for n in limits
        if f"lora-{n}" in runs and f"full-{n}" in runs
    ]
    if less:
        out += ["## Less data (same steps; held-out exact match)", "", table(less, ["train examples", "LoRA r=8", "full"]), ""]
    if hand:
        ratio = lora["train_s"] / hand["train_s"]
        out += ["## adapterhub tune vs hand-written PEFT + Trainer (LoRA, all 256 examples)", "",
                table([["trainer wall time", f"{lora['train_s']:.1f} s", f"{hand['train_s']:.1f} s", f"{ratio:.3f}x"],
                       ["whole job (read, train, save/register)", f"{lora['job_s']:.1f} s", f"{hand['job_s']:.1f} s",
                        f"{lora['job_s'] / hand['job_s']:.3f}x"]],
                      ["", "adapterhub tune", "hand-written", "ratio (target <= 1.05x)"]), ""]  # fmt: skip
    return "\n".join(out)


def plot(runs: dict[str, Any], limits: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for kind in ("lora", "full"):
        xs = [n for n in limits if f"{kind}-{n}" in runs]
        ax.plot(
            xs, [runs[f"{kind}-{n}"]["score"] for n in xs], marker="o", label="LoRA r=8" if kind == "lora" else "full fine-tuning"
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(limits, [str(n) for n in limits])
    ax.set_xlabel("training examples")
    ax.set_ylabel("held-out exact match")
    ax.set_ylim(0, 1)
    ax.set_title("SmolLM2-135M, dates -> ISO 8601")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--limits", default="32,64,128,256", help="training-set sizes for the less-data table")
    ap.add_argument(
        "--skip", default="", help="comma list of parts to skip: main,hand,less (or main-lora, main-full, less-lora, less-full)"
    )
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads per run (1: no spinning OpenMP barriers on a busy machine)"
    )
    ap.add_argument(
        "--targets",
        default="q_proj,v_proj",
        help="LoRA target modules: q_proj,v_proj (the LoRA paper's and PEFT's default for Llama models) or all-linear "
        "(adapterhub tune's default)",
    )
    ap.add_argument(
        "--base-dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="the frozen base's dtype in the LoRA runs (full fine-tuning always trains float32 weights)",
    )
    ap.add_argument("--reuse", action="store_true", help="keep the runs already in the --json file")
    ap.add_argument("--json", type=Path, default=RESULTS / "tune.json", help="where runs are saved (after each one)")
    ap.add_argument(
        "--merge", type=Path, nargs="*", default=[], help="more run files (e.g. from a parallel --skip main,hand run)"
    )
    ap.add_argument("--one", choices=["lora", "full", "hand"], help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--home", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.steps, args.limit, args.home, args.threads, args.targets, args.base_dtype)))
        return
    limits = [int(x) for x in args.limits.split(",") if x]
    skip = set(args.skip.split(","))
    RESULTS.mkdir(parents=True, exist_ok=True)
    saved = args.json
    # --reuse keeps the runs already in tune.json (same --steps): a long benchmark can be stopped and continued
    runs: dict[str, Any] = json.loads(saved.read_text()) if args.reuse and saved.is_file() else {}
    if runs.get("steps") not in (None, args.steps):
        raise SystemExit(f"{saved} holds runs of {runs['steps']} steps; drop --reuse or use --steps {runs['steps']}")
    for extra in args.merge:
        more = json.loads(extra.read_text())
        if more.get("steps") != args.steps:
            raise SystemExit(f"{extra} holds runs of {more.get('steps')} steps, not {args.steps}")
        runs = {**more, **runs}
    runs["steps"] = args.steps
    cmd = "nice -n 10 python benchmarks/bench_tune.py " + " ".join(sys.argv[1:])
    plan = [(k, k, None) for k in ("lora", "full") if "main" not in skip and f"main-{k}" not in skip]
    plan += [("hand", "hand", None)] if "hand" not in skip else []
    if "less" not in skip:
        kinds = [k for k in ("lora", "full") if f"less-{k}" not in skip]
        plan += [(f"{kind}-{n}", kind, n) for n in limits if n < 256 for kind in kinds]
    for key, kind, limit in plan:
        if key not in runs:
            runs[key] = {
                **child(kind, args.steps, limit, args.threads, args.targets, args.base_dtype),
                "threads": args.threads,
                "targets": args.targets,
                "base_dtype": args.base_dtype if kind != "full" else "float32",
            }
            saved.write_text(json.dumps(runs, indent=2))  # after every run: nothing is lost if the rest is stopped
    for kind in ("lora", "full"):
        if 256 in limits and kind in runs:
            runs[f"{kind}-256"] = runs[kind]
    saved.write_text(json.dumps(runs, indent=2))
    if "lora" not in runs or "full" not in runs:
        return  # a partial run (e.g. --skip main): the report comes from a later --reuse/--merge run
    text = report(runs, args.steps, limits, cmd)
    (RESULTS / "tune.md").write_text(text + "\n")
    if "less" not in skip:
        plot(runs, limits, RESULTS / "tune_less_data.png")
    print(text)


if __name__ == "__main__":
    main()
