"""The serving loop: one worker thread owns the model, and every forward runs all active rows, each row with its
own adapter (`route()`), one token per row per forward.

Continuous batching: a request's choices become rows. When the worker is idle, the first arrival opens a batching
window (`window_s`) in which later arrivals join it, up to `max_batch` rows; the new rows are prefilled together in one
forward and then decoded together with a shared, left-padded KV cache. While rows are decoding, new arrivals are
prefilled between two decode steps and join the running batch; a finished row leaves at once and frees its slot.

Adapters are made resident by the `ServingCache` (an `AdapterCache` under a byte budget, LRU) from the worker only,
so the cache and the model are never touched by two threads. Adapters in use by live rows are never evicted.
Weighted models (`ns/a@1:0.7+ns/b@2:0.3`) are composed in memory when they become resident and count against the
same budget: nothing is written to disk, and an evicted composition is simply composed again when next asked for.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import AdapterHubError, CacheFull, UsageError
from ..lora.attach import attach
from ..lora.cache import AdapterCache, _Entry, resident_nbytes
from ..lora.compose import compose_adapters
from ..lora.routing import route
from ..peft_weights import PeftAdapter, load_adapter
from ..sources import resolve
from . import batching
from .models import composed_parts

log = logging.getLogger("adapterhub.deploy")
MAX_PENDING = 4096  # rows waiting for a slot; more is a 503, not an unbounded queue


class ServerBusy(AdapterHubError, RuntimeError):
    """Too many rows are already waiting."""


class ServingCache(AdapterCache):
    """An AdapterCache that never evicts the adapters live rows are using, and finds the folders of versions the
    resolver already looked up (`known`) without asking the registry again."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.known: dict[str, Path] = {}  # `ns/name@version` -> its folder, filled by the request threads

    def _resolve(self, adapter: str | Path, *, load: bool = True) -> tuple[str, Path]:
        folder = self.known.get(str(adapter))
        if folder is not None:
            return str(adapter), folder
        if composed_parts(str(adapter)) is not None:
            return str(adapter), Path()  # no folder: composed in memory by `ensure`
        return super()._resolve(adapter, load=load)

    def ensure(self, adapter: str | Path) -> str:
        """As AdapterCache.ensure; a composed key is built from its versions in memory, under the same budget."""
        key = str(adapter)
        parts = composed_parts(key)
        if parts is None:
            return super().ensure(adapter)
        if key in self._entries:
            self._entries.move_to_end(key)
            self.hits += 1
            return key
        peft = self._compose(parts)
        self._make_room(peft_nbytes(peft, self._dtype), key)
        attach(self.model, peft, key, activate=False)
        self._entries[key] = _Entry(key, resident_nbytes(self.model, key))
        self.misses += 1
        return key

    def _compose(self, parts: list[tuple[str, float]]) -> PeftAdapter:
        device = next((str(p.device) for p in self.model.parameters()), None)
        loaded = [(load_adapter(self._folder(ref), device=device), w) for ref, w in parts]
        return compose_adapters(loaded, "cat").adapter

    def _folder(self, ref: str) -> Path:
        folder = self.known.get(ref)
        return folder if folder is not None else resolve(ref, self._registry).folder

    def ensure_keeping(self, adapter: str | Path, keep: set[str]) -> str:
        held = [e for n, e in self._entries.items() if n in keep and not e.pinned]
        for e in held:
            e.pinned = True
        try:
            return self.ensure(adapter)
        finally:
            for e in held:
                e.pinned = False


def peft_nbytes(peft: PeftAdapter, dtype: torch.dtype) -> int:
    """An upper bound on the bytes an in-memory adapter holds once attached to a `dtype` model (as `adapter_nbytes`
    bounds a folder's): its tensors plus a copy cast to `dtype`."""
    item = torch.empty((), dtype=dtype).element_size()
    tensors = [t for m in peft.modules.values() for t in (m.lora_A, m.lora_B, m.magnitude, m.lora_B_bias) if t is not None]
    return sum(t.nbytes + t.numel() * item for t in [*tensors, *peft.overrides.values()])


@dataclass
class Event:
    """What a row reports: new text, the token ids behind it, and the finish reason on its last event."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    error: AdapterHubError | None = None


@dataclass
class Job:
    """One choice to generate: a prompt's token ids, the adapter (cache key; None: the base) and how to sample."""

    index: int
    prompt_ids: list[int]
    adapter: str | None
    max_tokens: int
    emit: Callable[[Event], None]
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stops: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    cancelled: bool = False


@dataclass
class EmbedJob:
    inputs: list[list[int]]
    adapter: str | None
    done: Callable[[torch.Tensor | None, AdapterHubError | None], None]


@dataclass
class _Row:
    job: Job
    name: str | None  # the attached adapter's name, None for the base
    generator: torch.Generator | None
    pos: int  # position id of the next token fed
    last: int = 0
    generated: list[int] = field(default_factory=list)
    sent: int = 0  # characters of the decoded text already emitted
    unsent_ids: list[int] = field(default_factory=list)
    done: bool = False


class Engine:
    """Owns the model in one worker thread; `submit` and `embed` are safe to call from any thread."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, cache: ServingCache, *, max_batch: int = 16,
                 window_s: float = 0.01, metrics: Any = None) -> None:  # fmt: skip
        self.model = model
        self.tok = tokenizer
        self.cache = cache
        self.max_batch = max(1, int(max_batch))
        self.window_s = max(0.0, float(window_s))
        self.metrics = metrics
        # token ids, masks and positions are built on the CPU and moved here per forward; logits come back to sample
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        gen = getattr(model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) if gen is not None else None
        if eos is None:
            eos = getattr(tokenizer, "eos_token_id", None)
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad if pad is not None else next(iter(self.eos_ids), 0))
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"  # transformers >= 5.2x renamed it
        self._last_only = "logits_to_keep" in params  # prefill needs the last position's logits only
        self._pending: deque[Job | EmbedJob | _Call] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._rows: list[_Row] = []
        self._kv: Any = None
        self._mask: torch.Tensor | None = None
        self._thread = threading.Thread(target=self._run, name="adapterhub-deploy-engine", daemon=True)
        self._thread.start()

    # --- the API the routes use --------------------------------------------------------------------------------

    def submit(self, jobs: list[Job]) -> None:
        with self._cv:
            if len(self._pending) + len(jobs) > MAX_PENDING:
                raise ServerBusy(f"{len(self._pending)} rows are waiting", hint="retry shortly")
            self._pending.extend(jobs)
            self._cv.notify()

    def embed(self, job: EmbedJob) -> None:
        with self._cv:
            if len(self._pending) >= MAX_PENDING:
                raise ServerBusy(f"{len(self._pending)} requests are waiting", hint="retry shortly")
            self._pending.append(job)
            self._cv.notify()

    def call(self, fn: Callable[[], Any], timeout: float = 600.0) -> Any:
        """Run `fn` on the worker thread (between forwards) and return its result: for work on the model or cache."""
        box: dict[str, Any] = {}
        ready = threading.Event()

        def done(value: Any, error: BaseException | None) -> None:
            box["value"], box["error"] = value, error
            ready.set()

        with self._cv:
            self._pending.appendleft(_Call(fn, done))
            self._cv.notify()
        if not ready.wait(timeout):
            raise ServerBusy("the engine did not answer in time")
        if box["error"] is not None:
            raise box["error"]
        return box["value"]

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=30)

    @property
    def active_rows(self) -> int:
        return len(self._rows)

    # --- the worker --------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            try:
                with torch.inference_mode():
                    self._admit(taken)
                    if self._rows:
                        self._step()
            except Exception as exc:  # a bug or an out-of-memory: fail the live rows, keep serving the next ones
                log.exception("engine step failed")
                err = AdapterHubError(f"generation failed: {type(exc).__name__}: {exc}")
                for r in self._rows:
                    if not r.done:
                        r.job.emit(Event(r.job.index, error=err))
                self._rows, self._kv, self._mask = [], None, None

    def _take(self) -> list[Job | EmbedJob | _Call] | None:
        """Wait for work; open the batching window when idle; return what fits in the free slots (None: closed)."""
        with self._cv:
            while not self._pending and not self._rows and not self._closed:
                self._cv.wait()
            if self._closed:
                return None
            if not self._rows and self.window_s > 0:
                deadline = time.monotonic() + self.window_s
                while len(self._pending) < self.max_batch and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cv.wait(left)
            taken: list[Job | EmbedJob | _Call] = []
            free = self.max_batch - len(self._rows)
            keep: deque[Job | EmbedJob | _Call] = deque()
            while self._pending:
                item = self._pending.popleft()
                if isinstance(item, Job):
                    if free <= 0:
                        keep.append(item)
                        continue
                    free -= 1
                taken.append(item)
            self._pending = keep
            return taken

    def _requeue(self, jobs: list[Job]) -> None:
        with self._cv:
            self._pending.extendleft(reversed(jobs))

    def _admit(self, taken: list[Job | EmbedJob | _Call]) -> None:
        new: list[_Row] = []
        waiting: list[Job] = []
        for item in taken:
            if isinstance(item, _Call):
                item.run()
                continue
            if isinstance(item, EmbedJob):
                self._embed(item)
                continue
            if item.cancelled:
                continue
            if waiting:
                waiting.append(item)  # keep arrival order behind a job that is waiting for cache room
                continue
            try:
                name = self._ensure_for(item.adapter, new)
            except CacheFull as exc:
                if self._rows or new:
                    waiting.append(item)  # room comes back when live rows finish
                    continue
                item.emit(Event(item.index, error=exc))
                continue
            except AdapterHubError as exc:
                item.emit(Event(item.index, error=exc))
                continue
            gen = torch.Generator().manual_seed(item.seed % (2**63)) if item.seed is not None else None
            new.append(_Row(item, name, gen, pos=len(item.prompt_ids)))
        if waiting:
            self._requeue(waiting)
        if new:
            self._prefill(new)

    def _ensure_for(self, adapter: str | None, new: list[_Row]) -> str | None:
        if adapter is None:
            return None
        busy = {r.name for r in [*self._rows, *new] if r.name is not None}
        name = self.cache.ensure_keeping(adapter, busy)
        if self.metrics is not None:
            self.metrics.cache(self.cache)
        return name

    def _forward(self, names: list[str | None], kv: Any, **inputs: Any) -> Any:
        """One forward of every row, each with its adapter; `kv` (a DynamicCache) is extended in place."""
        if self.metrics is not None:
            self.metrics.batch(len(names))
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs[self._cache_arg] = kv
        if self._last_only:
            inputs["logits_to_keep"] = 1
        with route(self.model, names):
            return self.model(**inputs, use_cache=True)

    def _prefill(self, rows: list[_Row]) -> None:
        ids, mask = batching.left_pad([r.job.prompt_ids for r in rows], self.pad_id)
        kv = batching.new_cache(self.model)
        out = self._forward([r.name for r in rows], kv, input_ids=ids, attention_mask=mask, position_ids=batching.positions(mask))
        batching.check_cache(kv)
        if self._rows:
            assert self._mask is not None
            self._mask = batching.merge(self._kv, self._mask, kv, mask)
        else:
            self._kv, self._mask = kv, mask
        self._rows.extend(rows)
        logits = out.logits[:, -1, :].cpu()
        for i, r in enumerate(rows):
            self._push(r, batching.sample(logits[i], r.job.temperature, r.job.top_p, r.generator))
        self._drop_finished()

    def _step(self) -> None:
        rows = self._rows
        assert self._mask is not None
        ids = torch.tensor([[r.last] for r in rows], dtype=torch.long)
        self._mask = torch.cat([self._mask, torch.ones((len(rows), 1), dtype=self._mask.dtype)], dim=1)
        pos = torch.tensor([[r.pos] for r in rows], dtype=torch.long)
        out = self._forward([r.name for r in rows], self._kv, input_ids=ids, attention_mask=self._mask, position_ids=pos)
        logits = out.logits[:, -1, :].cpu()
        for i, r in enumerate(rows):
            r.pos += 1
            if not r.done:
                self._push(r, batching.sample(logits[i], r.job.temperature, r.job.top_p, r.generator))
        self._drop_finished()

    def _drop_finished(self) -> None:
        keep = [i for i, r in enumerate(self._rows) if not r.done and not r.job.cancelled]
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._rows, self._kv, self._mask = [], None, None
            return
        assert self._mask is not None
        self._mask = batching.keep_rows(self._kv, self._mask, keep)
        self._rows = [self._rows[i] for i in keep]

    # --- one row's token -----------------------------------------------------------------------------------

    def _push(self, r: _Row, token: int) -> None:
        """Record a sampled token: finish on EOS, a stop string or the token limit; else emit the safe new text."""
        job = r.job
        if token in self.eos_ids and not job.ignore_eos:
            self._finish(r, "stop", self._text(r))
            return
        r.generated.append(token)
        r.unsent_ids.append(token)
        r.last = token
        if self.metrics is not None:
            self.metrics.tokens("completion", 1)
        text = self._text(r)
        if job.stops:
            cut = _find_stop(text, job.stops, max(0, r.sent - max(len(s) for s in job.stops)))
            if cut is not None:
                self._finish(r, "stop", text[:cut])
                return
        if len(r.generated) >= job.max_tokens:
            self._finish(r, "length", text)
            return
        hold = max((len(s) for s in job.stops), default=1) - 1
        safe = len(text) - hold
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for its next token
            safe = min(safe, len(text) - 1)
        if safe > r.sent or r.unsent_ids:
            job.emit(Event(job.index, text[r.sent : max(safe, r.sent)], r.unsent_ids))
            r.sent, r.unsent_ids = max(safe, r.sent), []

    def _text(self, r: _Row) -> str:
        return str(self.tok.decode(r.generated, skip_special_tokens=True))

    def _finish(self, r: _Row, reason: str, text: str) -> None:
        r.done = True
        r.job.emit(Event(r.job.index, text[r.sent :] if len(text) > r.sent else "", r.unsent_ids, reason))
        r.sent, r.unsent_ids = len(text), []

    # --- embeddings (encoder bases) --------------------------------------------------------------------------

    def _embed(self, job: EmbedJob) -> None:
        if not job.inputs:
            return
        try:
            name = self._ensure_for(job.adapter, [])
            width = max(len(x) for x in job.inputs)
            ids = torch.zeros((len(job.inputs), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, x in enumerate(job.inputs):  # right padded, as BERT-style encoders expect
                ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
                mask[i, : len(x)] = 1
            if self.metrics is not None:
                self.metrics.batch(len(job.inputs))
            with route(self.model, [name] * len(job.inputs)):
                out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
            job.done(mean_pool(out, mask.to(self.device)).cpu(), None)
        except AdapterHubError as exc:
            job.done(None, exc)
        except Exception as exc:  # pragma: no cover - a bug: one line for the caller, the trace in the log
            log.exception("embedding failed")
            job.done(None, AdapterHubError(f"embedding failed: {type(exc).__name__}: {exc}"))


@dataclass
class _Call:
    fn: Callable[[], Any]
    done: Callable[[Any, BaseException | None], None]

    def run(self) -> None:
        try:
            self.done(self.fn(), None)
        except BaseException as exc:  # handed to the calling thread
            self.done(None, exc)


def mean_pool(out: Any, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings as sentence-transformers' all-MiniLM-L6-v2 makes them: mean over real tokens, L2 normed."""
    hidden = out.last_hidden_state if getattr(out, "last_hidden_state", None) is not None else out[0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)


def _find_stop(text: str, stops: list[str], start: int) -> int | None:
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else None


def check_not_empty(ids: list[int], what: str) -> None:
    if not ids:
        raise UsageError(f"{what} is empty after tokenization", hint="send at least one token")
