"""The serving engine: a scheduler policy drives the paged Llama one flat batch per step.

``LLMEngine.step()`` asks the scheduler for a :class:`~thrifty.serve.sched.base.SchedulerOutput`, turns its chunks into
one flat batch (prefill chunks and decodes together, SARATHI arXiv 2308.16369), runs the model once, samples one token
for every chunk that ends at its request's last known token, decides EOS / stop-token / stop-string ends here, and
hands everything to ``scheduler.update``. It returns one :class:`RequestOutput` per request that produced a token or
ended this step, with the newly generated tokens and text (for streaming).

Threads: ``add_request`` and ``abort`` may be called from any thread; they only queue work (abort is O(1)), and the
next ``step`` applies it before scheduling, so a request is never aborted in the middle of a step. ``step`` itself must
be called from one thread at a time. :class:`AsyncLLMEngine` runs the step loop in a background thread and gives each
request an asyncio stream (``async for out in engine.generate(prompt, params)``); leaving the loop early (a client
that disconnects) aborts the request and frees its blocks.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from thrifty.serve.kv.block_manager import BlockManager
from thrifty.serve.kv.paged_cache import AttentionMetadata, SeqChunk
from thrifty.serve.model.llama import LlamaForCausalLM
from thrifty.serve.model.loader import TextTokenizer, load_pretrained
from thrifty.serve.sampling import SamplingParams, sample_tokens
from thrifty.serve.sched import Scheduler, SchedulerConfig, SchedulerOutput, create_scheduler
from thrifty.serve.sequence import Request, RequestStatus

__all__ = ["LLM", "AsyncLLMEngine", "LLMEngine", "RequestOutput"]

_DETOKENIZE_CONTEXT = 4  # prompt tokens decoded before the outputs so that word-boundary spaces come out right


@dataclass
class RequestOutput:
    """A request's state after a step: all its generated tokens/text and what this step added.

    ``text`` excludes the EOS token and everything from a matched stop string on. While a request runs, ``new_text``
    holds back a trailing partial UTF-8 character and the last ``len(longest stop string) - 1`` characters (they may
    still turn out to begin a stop string); the final output releases them.
    """

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    new_token_ids: list[int]
    new_text: str
    finished: bool
    finish_reason: str | None
    num_cached_tokens: int = 0
    arrival_time: float = 0.0
    first_token_time: float | None = None
    finish_time: float | None = None
    num_preemptions: int = 0


@dataclass
class _State:
    """The engine's per-request data (kept in ``Request.payload``)."""

    params: SamplingParams
    generator: torch.Generator | None
    prompt: str | None
    context_ids: list[int]
    context_text: str
    text: str = ""
    emitted_tokens: int = 0
    emitted_chars: int = 0
    pending: list[int] = field(default_factory=list)


def _token_slice(req: Request, start: int, end: int) -> list[int]:
    """``req.all_token_ids[start:end]`` without concatenating prompt and outputs (a decode reads one token)."""
    n = req.num_prompt_tokens
    if start >= n:
        return req.output_token_ids[start - n : end - n]
    if end <= n:
        return req.prompt_token_ids[start:end]
    return req.prompt_token_ids[start:] + req.output_token_ids[: end - n]


class LLMEngine:
    """Continuous-batching engine over a paged KV cache.

    Args:
        model: a :class:`LlamaForCausalLM` (its dtype and device are used for the cache).
        tokenizer: text <-> ids; ``None`` accepts token-id prompts only and produces no text.
        scheduler: a policy name of ``thrifty.serve.SCHEDULERS`` or a ready :class:`Scheduler`.
        scheduler_config: the policy's knobs (token budget, batch cap, ...).
        num_blocks: KV blocks of ``block_size`` tokens; ``None`` sizes the pool to ``kv_cache_bytes``.
        enable_prefix_caching: reuse cached full blocks across requests.
        clock: the time source of arrival and token times.
    """

    def __init__(
        self,
        model: LlamaForCausalLM,
        tokenizer: TextTokenizer | None = None,
        scheduler: str | Scheduler = "sarathi_serve",
        scheduler_config: SchedulerConfig | None = None,
        num_blocks: int | None = None,
        block_size: int = 16,
        enable_prefix_caching: bool = True,
        kv_cache_bytes: int = 256 * 2**20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model.eval()
        self.config = model.config
        self.tokenizer = tokenizer
        self.clock = clock
        if isinstance(scheduler, Scheduler):
            if scheduler_config is not None or num_blocks is not None:
                raise ValueError("pass scheduler_config and num_blocks only with a scheduler name")
            self.scheduler = scheduler
        else:
            c = self.config
            if num_blocks is None:
                block_bytes = block_size * c.kv_bytes_per_token(model.dtype)
                num_blocks = max(kv_cache_bytes // block_bytes, -(-c.max_position_embeddings // block_size) + 1)
            bm = BlockManager(num_blocks, block_size, enable_prefix_caching=enable_prefix_caching)
            self.scheduler = create_scheduler(scheduler, bm, scheduler_config)
        bm = self.scheduler.block_manager
        self.block_size = bm.block_size
        self.cache = model.make_cache(bm.num_blocks, bm.block_size)
        self.eos_token_ids = frozenset(tokenizer.eos_token_ids if tokenizer else self.config.eos_token_ids)
        self._pending: deque[tuple[str, Request | str]] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._live: set[str] = set()
        self.num_steps = 0
        self.num_generated_tokens = 0

    # ------------------------------------------------------------------ requests (any thread)
    def add_request(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams | None = None,
        request_id: str | None = None,
        arrival_time: float | None = None,
    ) -> str:
        """Queue a request (text, or token ids) and return its id; bad input raises ``ValueError`` at once."""
        params = params or SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("this engine has no tokenizer: pass the prompt as token ids")
            text: str | None = prompt
            ids = self.tokenizer.encode(prompt)
        else:
            text, ids = None, [int(t) for t in prompt]
            bad = [t for t in ids if not 0 <= t < self.config.vocab_size]
            if bad:
                raise ValueError(f"prompt token ids {bad[:5]} are outside the vocabulary [0, {self.config.vocab_size})")
        if not ids:
            raise ValueError("the prompt is empty (it must hold at least one token)")
        if params.stop and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer; use stop_token_ids")
        context = self.config.max_position_embeddings
        if len(ids) + params.max_tokens > context:
            raise ValueError(
                f"the prompt has {len(ids)} tokens and max_tokens is {params.max_tokens}: together they exceed the "
                f"model's context of {context} tokens"
            )
        rid = request_id if request_id is not None else f"req-{next(self._ids)}-{uuid.uuid4().hex[:8]}"
        tail = ids[-_DETOKENIZE_CONTEXT:]
        state = _State(
            params=params,
            generator=None if params.greedy else params.make_generator(),
            prompt=text,
            context_ids=tail,
            context_text=self._decode(tail),
        )
        req = Request(
            rid, ids, params.max_tokens, self.clock() if arrival_time is None else arrival_time, payload=state
        )
        self.scheduler.check_fits(req)
        with self._lock:
            if rid in self._live:
                raise ValueError(f"request id {rid!r} is already in use")
            self._live.add(rid)
            self._pending.append(("add", req))
        return rid

    def abort(self, request_id: str) -> None:
        """Abort a request at the start of the next step (cheap, thread-safe; unknown or finished ids are ignored).
        The step that applies it returns a final output with ``finish_reason == "abort"``."""
        with self._lock:
            self._pending.append(("abort", request_id))

    def has_unfinished(self) -> bool:
        return bool(self._pending) or self.scheduler.has_unfinished()

    @property
    def num_unfinished(self) -> int:
        return len(self._live)

    # ------------------------------------------------------------------ stepping (one thread)
    def step(self) -> list[RequestOutput]:
        """Run one scheduler step; outputs of every request that got a token, ended, or was aborted."""
        outputs = self._apply_pending()
        sched = self.scheduler
        sched_out = sched.schedule(self.clock())
        if not sched_out.chunks:
            if sched.has_unfinished():  # the interface promises a chunk whenever work is left
                raise RuntimeError(f"{sched.name} scheduled nothing with {sched.num_unfinished} requests unfinished")
            return outputs
        sampled, stopped = self._execute(sched_out)
        sched.update(sched_out, sampled, stopped, now=self.clock())
        self.num_steps += 1
        self.num_generated_tokens += len(sampled)
        for c in sched_out.chunks:
            if c.sample and c.request_id in sampled:
                outputs.append(self._output(c.request))
        return outputs

    def _apply_pending(self) -> list[RequestOutput]:
        outputs = []
        with self._lock:
            ops = list(self._pending)
            self._pending.clear()
        for kind, item in ops:
            if kind == "add":
                self.scheduler.add_request(item)
            else:
                req = self.scheduler.abort(item, now=self.clock())
                if req is not None:
                    outputs.append(self._output(req))
        return outputs

    @torch.inference_mode()
    def _execute(self, out: SchedulerOutput) -> tuple[dict[str, int], set[str]]:
        chunks = out.chunks
        seqs = []
        for c in chunks:
            seqs.append(SeqChunk(_token_slice(c.request, c.start, c.end), c.start, c.request.block_table))
        meta = AttentionMetadata.build(seqs, self.block_size, device=self.model.device)
        rows = [i for i, c in enumerate(chunks) if c.sample]
        if len(rows) < len(chunks):
            meta.logits_indices = meta.logits_indices[torch.tensor(rows, dtype=torch.long)]
        logits = self.model(meta, self.cache)
        if not rows:
            return {}, set()
        reqs = [chunks[i].request for i in rows]
        states: list[_State] = [r.payload for r in reqs]
        tokens = sample_tokens(logits, [s.params for s in states], [s.generator for s in states])
        sampled, stopped = {}, set()
        for req, state, tok in zip(reqs, states, tokens, strict=True):
            sampled[req.request_id] = tok
            p = state.params
            if (tok in self.eos_token_ids and not p.ignore_eos) or tok in p.stop_token_ids:
                stopped.add(req.request_id)
                continue
            if self.tokenizer is not None:
                state.text = self._detokenize(state, [*req.output_token_ids, tok])
                if p.stop and self._match_stop(state):
                    stopped.add(req.request_id)
        return sampled, stopped

    # ------------------------------------------------------------------ text
    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids) if self.tokenizer is not None else ""

    def _detokenize(self, state: _State, output_ids: list[int]) -> str:
        full = self._decode(state.context_ids + output_ids)
        if full.startswith(state.context_text):
            return full[len(state.context_text) :]
        return self._decode(output_ids)

    @staticmethod
    def _match_stop(state: _State) -> bool:
        """Cut ``state.text`` before the first stop string; True when one occurs."""
        cut = min((i for s in state.params.stop if (i := state.text.find(s)) >= 0), default=-1)
        if cut < 0:
            return False
        state.text = state.text[:cut]
        return True

    def _output(self, req: Request) -> RequestOutput:
        state: _State = req.payload
        finished = req.status is RequestStatus.FINISHED
        text = state.text
        visible = len(text)
        if not finished:
            visible = len(text.rstrip("\ufffd"))  # an incomplete UTF-8 character may still complete
            if state.params.stop:
                visible -= max(len(s) for s in state.params.stop) - 1
            visible = max(visible, state.emitted_chars)
        new_text = text[state.emitted_chars : visible]
        state.emitted_chars = visible
        new_tokens = req.output_token_ids[state.emitted_tokens :]
        state.emitted_tokens = req.num_output_tokens
        if finished:
            with self._lock:
                self._live.discard(req.request_id)
        return RequestOutput(
            request_id=req.request_id,
            prompt=state.prompt,
            prompt_token_ids=req.prompt_token_ids,
            token_ids=list(req.output_token_ids),
            text=text,
            new_token_ids=list(new_tokens),
            new_text=new_text,
            finished=finished,
            finish_reason=req.finish_reason,
            num_cached_tokens=req.num_cached_tokens,
            arrival_time=req.arrival_time,
            first_token_time=req.first_token_time,
            finish_time=req.finish_time,
            num_preemptions=req.num_preemptions,
        )

    # ------------------------------------------------------------------ metrics
    def stats(self) -> dict[str, float]:
        """Queue lengths, KV usage, prefix-cache counters (tokens) and totals, for a metrics endpoint."""
        bm = self.scheduler.block_manager
        return {
            "num_waiting": len(self.scheduler.waiting),
            "num_running": len(self.scheduler.running),
            "kv_usage": bm.usage,
            "num_kv_blocks": bm.num_blocks,
            "prefix_queries": bm.prefix_queries,
            "prefix_hits": bm.prefix_hits,
            "num_preemptions": self.scheduler.num_preemptions,
            "num_steps": self.num_steps,
            "num_generated_tokens": self.num_generated_tokens,
        }


class LLM:
    """Offline generation: ``LLM(model_dir).generate(prompts, SamplingParams(...))``.

    ``model`` is a local Hugging Face Llama directory, a loaded :class:`LlamaForCausalLM`, or ``None`` for the embedded
    default model (a small Llama trained on the Python standard library). Other keywords go to :class:`LLMEngine`.
    """

    def __init__(
        self,
        model: str | Path | LlamaForCausalLM | None = None,
        tokenizer: TextTokenizer | None = None,
        dtype: torch.dtype = torch.float32,
        **engine_kwargs,
    ) -> None:
        if isinstance(model, LlamaForCausalLM):
            net = model
        else:
            net, loaded = load_pretrained(model, dtype=dtype)
            tokenizer = tokenizer or loaded
        self.engine = LLMEngine(net, tokenizer, **engine_kwargs)

    def generate(
        self,
        prompts: str | Sequence[int] | Sequence[str | Sequence[int]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        progress: bool = True,
    ) -> list[RequestOutput]:
        """Final outputs of ``prompts`` (texts or token-id lists), in order, under one or per-prompt params."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        params = sampling_params or SamplingParams()
        params = list(params) if not isinstance(params, SamplingParams) else [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"{len(params)} sampling params for {len(prompts)} prompts")
        engine = self.engine
        ids: list[str] = []
        try:
            for p, sp in zip(prompts, params, strict=True):
                ids.append(engine.add_request(p, sp))
        except Exception:
            for rid in ids:  # a bad prompt rejects the whole call: drop the ones already queued
                engine.abort(rid)
            raise
        wanted = set(ids)
        results: dict[str, RequestOutput] = {}
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (
            TextColumn("[bold]generate"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[tps]:.0f} tok/s"),
            TimeElapsedColumn(),
        )
        start, tokens = time.perf_counter(), 0
        with Progress(*columns, disable=not progress, transient=True) as bar:
            task = bar.add_task("generate", total=len(ids), tps=0.0)
            while engine.has_unfinished():
                for out in engine.step():
                    if out.request_id not in wanted:
                        continue
                    tokens += len(out.new_token_ids)
                    if out.finished:
                        results[out.request_id] = out
                        bar.advance(task)
                bar.update(task, tps=tokens / max(time.perf_counter() - start, 1e-9))
        return [results[i] for i in ids]


class AsyncLLMEngine:
    """An :class:`LLMEngine` stepped by a background thread, with one asyncio stream per request.

    ``async for out in engine.generate(prompt, params): ...`` yields a :class:`RequestOutput` per step that produced
    tokens, the last one with ``finished``. Bad input raises ``ValueError`` from ``generate`` before anything is
    queued. Breaking out of the loop (or cancelling the task, e.g. when an HTTP client disconnects) aborts the request.
    Call :meth:`shutdown` to stop the thread.
    """

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._wake = threading.Event()
        self._stop = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="thrifty-engine", daemon=True)
        self._thread.start()

    @property
    def error(self) -> BaseException | None:
        """The exception that stopped the step loop, or ``None`` while it runs (health checks read it)."""
        return self._error

    async def generate(
        self, prompt: str | Sequence[int], params: SamplingParams | None = None, request_id: str | None = None
    ) -> AsyncIterator[RequestOutput]:
        if self._error is not None:
            raise RuntimeError("the engine loop has failed") from self._error
        rid = request_id if request_id is not None else f"areq-{uuid.uuid4().hex}"
        queue: asyncio.Queue = asyncio.Queue()
        self._streams[rid] = (asyncio.get_running_loop(), queue)
        try:
            self.engine.add_request(prompt, params, request_id=rid)
        except BaseException:
            self._streams.pop(rid, None)
            raise
        self._wake.set()
        finished = False
        try:
            while not finished:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise RuntimeError("the engine loop failed") from item
                finished = item.finished
                yield item
        finally:
            self._streams.pop(rid, None)
            if not finished:
                self.engine.abort(rid)
                self._wake.set()

    def _loop(self) -> None:
        engine = self.engine
        while not self._stop:
            if not engine.has_unfinished():
                self._wake.wait(0.1)
                self._wake.clear()
                continue
            try:
                outputs = engine.step()
            except BaseException as e:  # hand the failure to every waiting stream
                self._error = e
                for loop, queue in list(self._streams.values()):
                    loop.call_soon_threadsafe(queue.put_nowait, e)
                return
            for out in outputs:
                stream = self._streams.get(out.request_id)
                if stream is not None:
                    loop, queue = stream
                    loop.call_soon_threadsafe(queue.put_nowait, out)

    def shutdown(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join()
