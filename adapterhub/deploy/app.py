"""The OpenAI-compatible HTTP API over one deployed base: models, chat and text completions (streamed or not),
embeddings for encoder bases, health and Prometheus metrics.

Every error leaves in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the status the `openai`
client maps to its exceptions (404 NotFoundError, 400 BadRequestError, 401 AuthenticationError, ...).
Bodies are read with a byte limit before parsing; the schemas bound everything else.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ..errors import AdapterHubError, CacheFull, IncompatibleAdapter, NotFound, PayloadTooLarge, Unauthenticated, UsageError
from .engine import EmbedJob, Engine, Event, Job, ServerBusy
from .metrics import CONTENT_TYPE, Metrics
from .models import ModelResolver
from .schemas import (
    MAX_EMBED_INPUTS,
    MAX_PROMPTS,
    MAX_ROWS,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    error_body,  # fmt: skip
    usage,
)

log = logging.getLogger("adapterhub.deploy")
DEFAULT_MAX_BODY = 1 << 20
COMPLETION_DEFAULT_TOKENS = 16  # OpenAI's default for /v1/completions
CHAT_DEFAULT_TOKENS = 512


@dataclass
class DeployState:
    """What every route needs: the base, its tokenizer, the engine that owns the model, and the name resolver."""

    base_name: str
    kind: str  # "causal-lm" or "encoder"
    tokenizer: Any
    engine: Engine
    resolver: ModelResolver
    metrics: Metrics
    context: int  # the longest prompt + completion the base takes, in tokens
    api_key: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    created: int = field(default_factory=lambda: int(time.time()))


class ContextTooLong(UsageError):
    """A prompt (plus the tokens asked for) beyond the base's context."""


class WrongEndpoint(UsageError):
    """Generation asked of an encoder, or embeddings of a decoder."""


# Exception class -> (status, OpenAI type, code); the first match wins.
_ERRORS: list[tuple[type[BaseException], int, str, str | None]] = [
    (Unauthenticated, 401, "invalid_request_error", "invalid_api_key"),
    (NotFound, 404, "invalid_request_error", "model_not_found"),
    (IncompatibleAdapter, 400, "invalid_request_error", "incompatible_adapter"),
    (ContextTooLong, 400, "invalid_request_error", "context_length_exceeded"),
    (PayloadTooLarge, 413, "invalid_request_error", "request_too_large"),
    (UsageError, 400, "invalid_request_error", None),
    (ServerBusy, 503, "server_error", "server_busy"),
    (CacheFull, 503, "server_error", "adapter_cache_full"),
]


def error_response(exc: AdapterHubError) -> JSONResponse:
    status, type_, code = next(((s, t, c) for cls, s, t, c in _ERRORS if isinstance(exc, cls)), (500, "server_error", None))
    return JSONResponse(error_body(str(exc), type_, code), status_code=status)


def create_app(state: DeployState) -> FastAPI:
    app = FastAPI(title="adapterhub deploy", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.deploy = state

    @app.middleware("http")
    async def _guard(request: Request, call_next: Any) -> Response:
        path = request.url.path
        if state.api_key is not None and path != "/health":
            got = request.headers.get("authorization", "")
            token = got[7:] if got.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), state.api_key.encode()):
                state.metrics.request(path if path.startswith("/v1/") else "other", 401)
                return error_response(Unauthenticated("a valid API key is needed (Authorization: Bearer KEY)"))
        try:
            response: Response = await call_next(request)
        except AdapterHubError as exc:  # pragma: no cover - the handlers below catch these first
            response = error_response(exc)
        state.metrics.request(path if path in _ENDPOINTS else "other", response.status_code)
        return response

    @app.exception_handler(AdapterHubError)
    async def _on_error(request: Request, exc: AdapterHubError) -> JSONResponse:
        return error_response(exc)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": state.base_name, "active_rows": state.engine.active_rows}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = await run_in_threadpool(state.resolver.list_models, state.created)
        return {"object": "list", "data": data}

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Response:
        req = _parse(CompletionRequest, await read_json(request, state.max_body))
        _need(state, "causal-lm")
        if req.echo:
            raise UsageError("echo is not supported", hint="send echo: false")
        prompts = req.prompts()
        if not prompts or len(prompts) > MAX_PROMPTS:
            raise UsageError(f"send 1 to {MAX_PROMPTS} prompts")
        ids = [_encode(state, p) for p in prompts]
        return await _generate(state, req, ids, chat=False)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Response:
        req = _parse(ChatRequest, await read_json(request, state.max_body))
        _need(state, "causal-lm")
        return await _generate(state, req, [_chat_ids(state, req)], chat=True)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        req = _parse(EmbeddingRequest, await read_json(request, state.max_body))
        _need(state, "encoder")
        inputs = req.inputs()
        if not inputs or len(inputs) > MAX_EMBED_INPUTS:
            raise UsageError(f"send 1 to {MAX_EMBED_INPUTS} inputs")
        ids = [_encode(state, x, special=True) for x in inputs]
        resolved = await _resolve(state, req.model)
        vectors = await _embed(state, ids, resolved.key)
        if req.dimensions is not None and req.dimensions != vectors.shape[1]:
            raise UsageError(f"this base gives {vectors.shape[1]} dimensions, not {req.dimensions}")
        data = []
        for i, v in enumerate(vectors):
            emb: Any = (
                base64.b64encode(v.numpy().astype("<f4").tobytes()).decode() if req.encoding_format == "base64" else v.tolist()
            )
            data.append({"object": "embedding", "index": i, "embedding": emb})
        n = sum(len(x) for x in ids)
        state.metrics.tokens("prompt", n)
        return {"object": "list", "data": data, "model": req.model, "usage": {"prompt_tokens": n, "total_tokens": n}}

    return app


_ENDPOINTS = {"/v1/models", "/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/health", "/metrics"}


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, refused with 413 as soon as it passes `limit` bytes (chunked bodies too)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes")
    try:
        return json.loads(bytes(body))
    except (ValueError, RecursionError):
        raise UsageError("the request body is not valid JSON", hint="send one JSON object") from None


def _parse(cls: Any, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise UsageError("the request body must be a JSON object")
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise UsageError(f"bad request: {where}: {first.get('msg', 'invalid')}") from None


def _need(state: DeployState, kind: str) -> None:
    if state.kind != kind:
        other = "/v1/embeddings" if state.kind == "encoder" else "/v1/completions or /v1/chat/completions"
        raise WrongEndpoint(f"the deployed base {state.base_name} is a {state.kind} model", hint=f"use {other}")


def _encode(state: DeployState, prompt: str | list[int], *, special: bool = True) -> list[int]:
    if isinstance(prompt, list):
        vocab = len(state.tokenizer)
        if any(not 0 <= t < vocab for t in prompt):
            raise UsageError(f"a prompt token id is outside the vocabulary (0..{vocab - 1})")
        ids = list(prompt)
    else:
        if len(prompt) > state.max_body:
            raise PayloadTooLarge("prompt too long")
        ids = list(state.tokenizer(prompt, add_special_tokens=special)["input_ids"])
    if not ids:
        raise UsageError("a prompt is empty", hint="send at least one token")
    if len(ids) > state.context:
        raise ContextTooLong(f"this model's maximum context length is {state.context} tokens; the prompt has {len(ids)}")
    return ids


def _chat_ids(state: DeployState, req: ChatRequest) -> list[int]:
    tok = state.tokenizer
    if not getattr(tok, "chat_template", None):
        raise UsageError(f"the deployed base {state.base_name} has no chat template", hint="use /v1/completions")
    try:
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return _encode(state, str(text), special=False)


def _token_budget(state: DeployState, req: Any, prompt_len: int, chat: bool) -> int:
    room = state.context - prompt_len
    asked = req.token_limit()
    if asked is None:
        return max(1, min(room, CHAT_DEFAULT_TOKENS if chat else COMPLETION_DEFAULT_TOKENS))
    if asked > room:
        raise ContextTooLong(f"this model's maximum context length is {state.context} tokens; you asked for "
                             f"{prompt_len + asked} ({prompt_len} in the prompt, {asked} to generate)")  # fmt: skip
    return int(asked)


async def _generate(state: DeployState, req: Any, prompts: list[list[int]], *, chat: bool) -> Response:
    if len(prompts) * req.n > MAX_ROWS:
        raise UsageError(f"prompts x n is {len(prompts) * req.n}; at most {MAX_ROWS}")
    budgets = [_token_budget(state, req, len(p), chat) for p in prompts]
    resolved = await _resolve(state, req.model)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue()

    def emit(ev: Event) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ev)

    jobs = [
        Job(index=pi * req.n + j, prompt_ids=p, adapter=resolved.key, max_tokens=budgets[pi], emit=emit,
            temperature=req.temperature, top_p=req.top_p, seed=None if req.seed is None else req.seed + j, stops=req.stop_list(),
            ignore_eos=req.ignore_eos)
        for pi, p in enumerate(prompts) for j in range(req.n)
    ]  # fmt: skip
    prompt_tokens = sum(len(p) for p in prompts)
    state.metrics.tokens("prompt", prompt_tokens)
    state.engine.submit(jobs)
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(12)}"
    if req.stream:
        return StreamingResponse(_sse(state, req, jobs, queue, rid, chat, prompt_tokens), media_type="text/event-stream")
    try:
        texts, ids, reasons = await _collect(jobs, queue)
    finally:
        for j in jobs:
            j.cancelled = True  # no-op for finished rows; stops the rest when the client went away
    completion = sum(len(x) for x in ids)
    choices = []
    for i in range(len(jobs)):
        c: dict[str, Any] = {"index": i, "finish_reason": reasons[i], "logprobs": None}
        if chat:
            c["message"] = {"role": "assistant", "content": texts[i]}
        else:
            c["text"] = texts[i]
        if req.return_token_ids:
            c["token_ids"] = ids[i]
        choices.append(c)
    body = {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": req.model, "choices": choices, "usage": usage(prompt_tokens, completion)}  # fmt: skip
    return JSONResponse(body)


async def _resolve(state: DeployState, model: str) -> Any:
    """The adapter `model` names, found and checked in a worker thread; its versions' folders go to the engine's cache."""
    resolved = await run_in_threadpool(state.resolver.resolve, model)
    state.engine.cache.known.update(resolved.known())
    return resolved


async def _collect(jobs: list[Job], queue: asyncio.Queue[Event]) -> tuple[list[str], list[list[int]], list[str]]:
    texts: list[list[str]] = [[] for _ in jobs]
    ids: list[list[int]] = [[] for _ in jobs]
    reasons: list[str | None] = [None] * len(jobs)
    left = len(jobs)
    while left:
        ev = await queue.get()
        if ev.error is not None:
            raise ev.error
        texts[ev.index].append(ev.text)
        ids[ev.index].extend(ev.token_ids)
        if ev.finish_reason is not None:
            reasons[ev.index] = ev.finish_reason
            left -= 1
    return ["".join(t) for t in texts], ids, [r or "stop" for r in reasons]


async def _sse(state: DeployState, req: Any, jobs: list[Job], queue: asyncio.Queue[Event], rid: str, chat: bool,
               prompt_tokens: int) -> AsyncIterator[bytes]:  # fmt: skip
    created = int(time.time())
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {"id": rid, "object": obj, "created": created, "model": req.model, "choices": choices, **extra}
        return f"data: {json.dumps(body)}\n\n".encode()

    completion, left = 0, len(jobs)
    try:
        if chat:
            yield chunk([{"index": j.index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None} for j in jobs])
        while left:
            ev = await queue.get()
            if ev.error is not None:
                _status, type_, code = next(((s, t, c) for cls, s, t, c in _ERRORS if isinstance(ev.error, cls)),
                                           (500, "server_error", None))  # fmt: skip
                yield f"data: {json.dumps(error_body(str(ev.error), type_, code))}\n\n".encode()
                break
            completion += len(ev.token_ids)
            if not ev.text and ev.finish_reason is None and not (req.return_token_ids and ev.token_ids):
                continue
            c: dict[str, Any] = {"index": ev.index, "finish_reason": ev.finish_reason, "logprobs": None}
            if chat:
                c["delta"] = {"content": ev.text} if ev.text else {}
            else:
                c["text"] = ev.text
            if req.return_token_ids:
                c["token_ids"] = ev.token_ids
            yield chunk([c])
            if ev.finish_reason is not None:
                left -= 1
        if req.include_usage():
            yield chunk([], usage=usage(prompt_tokens, completion))
        yield b"data: [DONE]\n\n"
    finally:
        for j in jobs:
            j.cancelled = True


async def _embed(state: DeployState, ids: list[list[int]], key: str | None) -> Any:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def done(value: Any, error: AdapterHubError | None) -> None:
        def settle() -> None:
            if not fut.done():
                fut.set_exception(error) if error is not None else fut.set_result(value)

        loop.call_soon_threadsafe(settle)

    state.engine.embed(EmbedJob(ids, key, done))
    return await fut


# --- building and running a server ---------------------------------------------------------------------------


def build_state(base: Path, *, registry: Any = None, name: str | None = None, remote: str | None = None,
                token: str | None = None, adapters: tuple[str, ...] = (), cache_bytes: int = 1 << 30, max_batch: int = 16,
                window_ms: float = 10.0, api_key: str | None = None, dtype: str | None = None, device: str | None = None,
                max_body: int = DEFAULT_MAX_BODY) -> DeployState:  # fmt: skip
    """Load `base` once (frozen), its tokenizer, the adapter cache and the engine; pin `adapters` (checked first)."""
    from ..errors import BaseModelNotFound
    from ..loading import _tokenizer, load_base, model_class
    from ..store.registry import Registry
    from .engine import ServingCache

    base = Path(base)
    if not (base / "config.json").is_file():
        raise BaseModelNotFound(str(base))
    registry = registry or Registry()
    cls = model_class(base)
    kind = "causal-lm" if str(getattr(cls, "__name__", "")).endswith(("ForCausalLM", "LMHeadModel")) else "encoder"
    model = load_base(base, dtype=dtype, device=_device(device) if device is not None else None)
    tok = _tokenizer(base)
    resolver = ModelResolver(base, name or base.name, registry, remote=remote, token=token)
    pinned = [resolver.resolve(a) for a in adapters]  # checked before the server starts
    metrics = Metrics()
    cache = ServingCache(model, cache_bytes, registry)
    engine = Engine(model, tok, cache, max_batch=max_batch, window_s=window_ms / 1000.0, metrics=metrics)
    for p in pinned:
        if p.key is not None:
            cache.known.update(p.known())
            engine.call(functools.partial(cache.pin, p.key))
    engine.call(lambda: metrics.cache(cache))
    cfg = model.config
    ctx = int(getattr(cfg, "max_position_embeddings", 0) or getattr(cfg, "n_positions", 0) or 2048)
    return DeployState(resolver.base_name, kind, tok, engine, resolver, metrics, ctx, api_key=api_key, max_body=max_body)


def _device(name: str) -> str:
    """A torch device this machine has (`cpu`, `cuda`, `cuda:1`); a clear UsageError otherwise."""
    import torch

    from ..errors import UsageError

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"unknown device {name!r}", hint="cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise UsageError(f"no CUDA device {name!r} on this machine", hint="leave --device out to run on the CPU")
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"device {name!r} is not supported", hint="cpu, cuda or cuda:N")
    return str(dev)


def serve(state: DeployState, *, host: str = "127.0.0.1", port: int = 8080, log_level: str = "warning",
          on_ready: Any = None) -> None:  # fmt: skip
    """Run the API with uvicorn until interrupted."""
    import uvicorn

    app = create_app(state)
    if on_ready is not None:
        on_ready(f"http://{host}:{port}")
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, timeout_keep_alive=5,
                    limit_concurrency=1024, h11_max_incomplete_event_size=64 * 1024)  # fmt: skip
    finally:
        state.engine.close()
