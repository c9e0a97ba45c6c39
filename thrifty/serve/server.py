"""An OpenAI-compatible HTTP server over :class:`~thrifty.serve.engine.AsyncLLMEngine` (FastAPI + uvicorn).

Endpoints:

- ``POST /v1/completions``: one prompt (a string, or a list of token ids) with ``max_tokens`` (default 16),
  ``temperature``, ``top_p``, ``top_k``, ``seed``, ``stop``, ``stream`` (server-sent events ending with
  ``data: [DONE]``; ``stream_options.include_usage`` adds a final usage chunk), and the extensions ``ignore_eos`` and
  ``stop_token_ids``. Responses have OpenAI's shapes (``text_completion`` objects with ``choices``, ``finish_reason``
  ``"stop"`` or ``"length"``, ``usage``).
- ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus text format: TTFT, time between tokens and
  end-to-end latency histograms, waiting/running queue lengths, KV-cache usage, prefix-cache queries and hits in
  tokens, request counters).

Bad input (malformed JSON, a missing prompt, ``max_tokens <= 0``, a bad temperature, a prompt longer than the
model's context, unsupported options such as ``n > 1``) gets HTTP 400 with an OpenAI-style body
``{"error": {"message", "type", "param", "code"}}``; an unknown model name gets 404. A client that disconnects
(streaming or not) has its request aborted, which frees its KV blocks at the engine's next step.

Latencies in ``/metrics``: TTFT is the engine's (first token time minus arrival); the time between tokens is measured
where the server receives each step's output, i.e. what a streaming client sees minus the network.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.responses import StreamingResponse

from thrifty.serve.engine import AsyncLLMEngine, LLMEngine, RequestOutput
from thrifty.serve.sampling import SamplingParams

__all__ = ["APIError", "ServerMetrics", "build_app", "parse_completion_request", "run_server"]

_UNSUPPORTED = {  # option -> the values that mean "off" (anything else is a 400)
    "n": (None, 1),
    "best_of": (None, 1),
    "echo": (None, False),
    "logprobs": (None,),
    "suffix": (None, ""),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
}
_SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stop_token_ids", "ignore_eos")


class APIError(Exception):
    """An error answered with an OpenAI-style JSON body and ``status`` (400: bad request, 404: unknown model)."""

    def __init__(
        self, message: str, param: str | None = None, status: int = 400, code: str | None = None, kind: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code
        self.kind = kind or ("invalid_request_error" if status < 500 else "internal_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


@dataclass
class CompletionRequest:
    """A validated ``/v1/completions`` body."""

    prompt: str | list[int]
    params: SamplingParams
    stream: bool = False
    include_usage: bool = False


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_completion_request(body: Any, model_name: str) -> CompletionRequest:
    """Validate a decoded JSON body; raises :class:`APIError` naming the offending parameter."""
    if not isinstance(body, dict):
        raise APIError("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and model != model_name:
        raise APIError(
            f"the model {model!r} does not exist; this server serves {model_name!r}", "model", 404, "model_not_found"
        )
    if "prompt" not in body or body["prompt"] is None:
        raise APIError("'prompt' is required", "prompt")
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, list):
        if prompt and all(isinstance(p, str | list) for p in prompt):
            raise APIError("batched prompts are not supported: send one request per prompt", "prompt")
        if not all(_is_int(t) for t in prompt):
            raise APIError("'prompt' must be a string or a list of token ids (integers)", "prompt")
    elif not isinstance(prompt, str):
        raise APIError("'prompt' must be a string or a list of token ids (integers)", "prompt")
    if not prompt:
        raise APIError("'prompt' is empty", "prompt")
    for name, off in _UNSUPPORTED.items():
        if name in body and body[name] not in off:
            raise APIError(f"{name}={body[name]!r} is not supported by this server", name)
    kwargs: dict[str, Any] = {}
    for name in _SAMPLING_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if name in ("temperature", "top_p") and not _is_number(value):
            raise APIError(f"{name} must be a number, got {value!r}", name)
        if name in ("max_tokens", "top_k") and not _is_int(value):
            raise APIError(f"{name} must be an integer, got {value!r}", name)
        if name == "ignore_eos" and not isinstance(value, bool):
            raise APIError(f"ignore_eos must be a boolean, got {value!r}", name)
        if name == "stop":
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise APIError("stop must be a string or a list of strings", name)
        if name == "stop_token_ids" and not (isinstance(value, list) and all(_is_int(t) for t in value)):
            raise APIError("stop_token_ids must be a list of integers", name)
        kwargs[name] = tuple(value) if isinstance(value, list) else value
    if "temperature" in kwargs and not math.isfinite(kwargs["temperature"]):
        raise APIError(f"temperature must be a finite number >= 0, got {kwargs['temperature']!r}", "temperature")
    try:
        params = SamplingParams(**kwargs)
    except ValueError as exc:  # SamplingParams messages start with the field's name
        field = str(exc).split()[0]
        raise APIError(str(exc), field if field in _SAMPLING_FIELDS else None) from None
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise APIError(f"stream must be a boolean, got {stream!r}", "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise APIError("stream_options is only allowed with stream=true", "stream_options")
        if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
            raise APIError("stream_options must be an object with a boolean include_usage", "stream_options")
        include_usage = options.get("include_usage", False)
    return CompletionRequest(prompt, params, stream, include_usage)


# ---------------------------------------------------------------------------------------------------------- metrics

_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    40.0,
    80.0,
)


def _fmt(v: float) -> str:
    return "+Inf" if v == math.inf else repr(float(v))


class _Histogram:
    def __init__(self, name: str, doc: str, buckets: Sequence[float] = _LATENCY_BUCKETS) -> None:
        self.name, self.doc, self.buckets = name, doc, tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1
        self.sum += value
        self.count += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.doc}", f"# TYPE {self.name} histogram"]
        lines += [f'{self.name}_bucket{{le="{_fmt(b)}"}} {c}' for b, c in zip(self.buckets, self.counts, strict=True)]
        lines += [
            f'{self.name}_bucket{{le="+Inf"}} {self.count}',
            f"{self.name}_sum {_fmt(self.sum)}",
            f"{self.name}_count {self.count}",
        ]
        return lines


class ServerMetrics:
    """Request counters and latency histograms of a server, rendered with the engine's gauges as Prometheus text.
    Updated from the event loop thread only."""

    def __init__(self) -> None:
        self.ttft = _Histogram("thrifty_time_to_first_token_seconds", "Time to first token (engine arrival to token).")
        self.tbt = _Histogram("thrifty_time_between_tokens_seconds", "Time between consecutive output tokens.")
        self.e2e = _Histogram("thrifty_e2e_request_latency_seconds", "End-to-end latency of finished requests.")
        self.requests_total = 0
        self.finished: dict[str, int] = {"stop": 0, "length": 0}
        self.aborted_total = 0
        self.errors: dict[int, int] = {}
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0

    def render(self, engine: LLMEngine) -> str:
        s = engine.stats()

        def one(name: str, kind: str, doc: str, value: float, labels: str = "") -> list[str]:
            return [f"# HELP {name} {doc}", f"# TYPE {name} {kind}", f"{name}{labels} {_fmt(value)}"]

        lines = [
            *one("thrifty_num_requests_waiting", "gauge", "Requests waiting to be scheduled.", s["num_waiting"]),
            *one("thrifty_num_requests_running", "gauge", "Requests running (holding KV blocks).", s["num_running"]),
            *one("thrifty_kv_cache_usage_ratio", "gauge", "Fraction of KV blocks in use (0 to 1).", s["kv_usage"]),
            *one("thrifty_kv_cache_blocks_total", "gauge", "KV blocks in the pool.", s["num_kv_blocks"]),
            *one(
                "thrifty_prefix_cache_queries_total",
                "counter",
                "Prompt tokens looked up in the prefix cache.",
                s["prefix_queries"],
            ),
            *one(
                "thrifty_prefix_cache_hits_total",
                "counter",
                "Prompt tokens served from the prefix cache.",
                s["prefix_hits"],
            ),
            *one(
                "thrifty_num_preemptions_total",
                "counter",
                "Requests preempted (recomputed later).",
                s["num_preemptions"],
            ),
            *one("thrifty_engine_steps_total", "counter", "Engine steps run.", s["num_steps"]),
            *one("thrifty_requests_total", "counter", "Completion requests accepted.", self.requests_total),
            "# HELP thrifty_requests_finished_total Requests finished, by finish reason.",
            "# TYPE thrifty_requests_finished_total counter",
            *(f'thrifty_requests_finished_total{{finish_reason="{r}"}} {n}' for r, n in sorted(self.finished.items())),
            *one(
                "thrifty_requests_aborted_total",
                "counter",
                "Requests aborted (client disconnected).",
                self.aborted_total,
            ),
            "# HELP thrifty_request_errors_total Requests answered with an error, by HTTP status.",
            "# TYPE thrifty_request_errors_total counter",
            *(f'thrifty_request_errors_total{{status="{k}"}} {n}' for k, n in sorted(self.errors.items())),
            *one(
                "thrifty_prompt_tokens_total",
                "counter",
                "Prompt tokens of finished requests.",
                self.prompt_tokens_total,
            ),
            *one(
                "thrifty_generation_tokens_total", "counter", "Tokens generated and sent.", self.generation_tokens_total
            ),
            *self.ttft.render(),
            *self.tbt.render(),
            *self.e2e.render(),
        ]
        return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------------------------- app


class _Disconnected(Exception):
    pass


async def _until_disconnect(request: Request, awaitable) -> Any:
    """Await ``awaitable``; if the client disconnects first, cancel it and raise :class:`_Disconnected`."""
    task = asyncio.ensure_future(awaitable)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.done() and not task.cancelled():
        return task.result()
    raise _Disconnected


class _EventStream(StreamingResponse):
    """Server-sent events that stop, and close their source (aborting the request), when the client goes away."""

    async def __call__(self, scope, receive, send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:  # the client went away between our checks
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            await self.body_iterator.aclose()


class _Generation:
    """One request's stream of outputs, with its metrics (TBT where the server receives the tokens)."""

    def __init__(self, gen: AsyncIterator[RequestOutput], metrics: ServerMetrics) -> None:
        self.gen = gen
        self.metrics = metrics
        self.last_time: float | None = None
        self.finished = False
        self.first: RequestOutput | None = None

    def record(self, out: RequestOutput) -> None:
        m, now = self.metrics, time.monotonic()
        n = len(out.new_token_ids)
        if n:
            if self.last_time is None:
                if out.first_token_time is not None:
                    m.ttft.observe(out.first_token_time - out.arrival_time)
            else:
                for _ in range(n):  # (several tokens at once only when this loop fell behind the engine)
                    m.tbt.observe((now - self.last_time) / n)
            self.last_time = now
            m.generation_tokens_total += n
        if out.finished:
            self.finished = True
            if out.finish_reason in m.finished:
                m.finished[out.finish_reason] += 1
                m.prompt_tokens_total += len(out.prompt_token_ids)
                if out.finish_time is not None:
                    m.e2e.observe(out.finish_time - out.arrival_time)

    async def start(self) -> RequestOutput:
        """The first output (raises ``ValueError`` for bad input before anything is queued)."""
        self.first = await self.gen.__anext__()
        self.record(self.first)
        return self.first

    async def rest(self) -> AsyncIterator[RequestOutput]:
        async for out in self.gen:
            self.record(out)
            yield out

    async def close(self) -> None:
        if not self.finished:
            self.metrics.aborted_total += 1
            self.finished = True
        await self.gen.aclose()  # an unfinished request is aborted here


def build_app(engine: AsyncLLMEngine, model_name: str) -> FastAPI:
    """The FastAPI application serving ``engine`` under ``model_name`` (``app.state.metrics`` holds the metrics)."""
    metrics = ServerMetrics()
    llm = engine.engine
    context = llm.config.max_position_embeddings
    app = FastAPI(title="thrifty serve", docs_url=None, redoc_url=None)
    app.state.metrics = metrics
    app.state.engine = engine
    created = int(time.time())

    def error(exc: APIError) -> JSONResponse:
        metrics.errors[exc.status] = metrics.errors.get(exc.status, 0) + 1
        return exc.response()

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return error(APIError(f"no route {request.method} {request.url.path}", status=404, code="not_found"))

    @app.exception_handler(405)
    async def bad_method(request: Request, exc: Exception) -> JSONResponse:
        return error(APIError(f"method {request.method} is not allowed on {request.url.path}", status=405))

    @app.get("/health")
    async def health() -> JSONResponse:
        if engine.error is not None:
            return JSONResponse({"status": "error"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        card = {
            "id": model_name,
            "object": "model",
            "created": created,
            "owned_by": "thrifty",
            "max_model_len": context,
        }
        return JSONResponse({"object": "list", "data": [card]})

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(llm), media_type="text/plain; version=0.0.4")

    @app.post("/v1/completions")
    async def completions(request: Request):
        try:
            try:
                body = json.loads(await request.body())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise APIError(f"the request body is not valid JSON: {exc}") from None
            req = parse_completion_request(body, model_name)
        except APIError as exc:
            return error(exc)
        rid = f"cmpl-{uuid.uuid4().hex}"
        generation = _Generation(engine.generate(req.prompt, req.params, request_id=rid), metrics)
        try:
            first = await _until_disconnect(request, generation.start())
        except ValueError as exc:  # rejected before it was queued
            generation.finished = True
            await generation.close()
            return error(APIError(str(exc), "prompt" if "prompt" in str(exc) else None))
        except _Disconnected:
            await generation.close()
            return PlainTextResponse("", status_code=499)
        except BaseException:
            await generation.close()
            raise
        metrics.requests_total += 1
        head = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model_name}
        if req.stream:
            return _EventStream(_sse(generation, first, head, req.include_usage), media_type="text/event-stream")
        try:
            final = first
            if not first.finished:
                final = await _until_disconnect(request, _last(generation))
        except _Disconnected:
            return PlainTextResponse("", status_code=499)
        except RuntimeError as exc:  # the engine loop failed
            return error(APIError(f"the engine failed: {exc.__cause__ or exc}", status=500))
        finally:
            await generation.close()
        choice = {"index": 0, "text": final.text, "logprobs": None, "finish_reason": final.finish_reason}
        return JSONResponse({**head, "choices": [choice], "usage": _usage(final)})

    return app


async def _last(generation: _Generation) -> RequestOutput:
    last = generation.first
    async for out in generation.rest():
        last = out
    return last


def _usage(out: RequestOutput) -> dict[str, int]:
    p, c = len(out.prompt_token_ids), len(out.token_ids)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


async def _sse(
    generation: _Generation, first: RequestOutput, head: dict[str, Any], include_usage: bool
) -> AsyncIterator[str]:
    def event(out: RequestOutput) -> str:
        choice = {
            "index": 0,
            "text": out.new_text,
            "logprobs": None,
            "finish_reason": out.finish_reason if out.finished else None,
        }
        chunk = {**head, "choices": [choice]}
        if include_usage:
            chunk["usage"] = None
        return f"data: {json.dumps(chunk)}\n\n"

    try:
        out = first
        yield event(first)
        if not first.finished:
            try:
                async for out in generation.rest():
                    yield event(out)
            except RuntimeError as exc:  # the engine loop failed
                err = APIError(f"the engine failed: {exc.__cause__ or exc}", status=500)
                yield f"data: {json.dumps(err.body())}\n\n"
                return
        if include_usage:
            yield f"data: {json.dumps({**head, 'choices': [], 'usage': _usage(out)})}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        await generation.close()


def run_server(
    engine: LLMEngine, model_name: str, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"
) -> None:
    """Serve ``engine`` until interrupted (blocking); the engine's step loop runs in a background thread."""
    import uvicorn

    async_engine = AsyncLLMEngine(engine)
    try:
        uvicorn.run(build_app(async_engine, model_name), host=host, port=port, log_level=log_level)
    finally:
        async_engine.shutdown()


def serve_in_thread(engine: AsyncLLMEngine, model_name: str, host: str = "127.0.0.1") -> tuple[Any, str]:
    """Start a uvicorn server on a free loopback port in a daemon thread; returns ``(server, base_url)``.
    Stop it with ``server.should_exit = True`` (used by the tests and the benchmarks)."""
    import socket

    import uvicorn

    sock = socket.socket()
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(build_app(engine, model_name), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    server.thread = thread
    return server, f"http://{host}:{port}"
