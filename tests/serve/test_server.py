"""The OpenAI-compatible server end to end on loopback: the official ``openai`` client (streaming and not) against a
uvicorn server in a thread serving a tiny random Llama; 400s with OpenAI error bodies; disconnect aborts and frees
blocks; /metrics parses as Prometheus text; ``thrifty serve`` builds its engine from a local checkpoint."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import openai
import pytest
import torch

from thrifty.cli import main
from thrifty.serve import SchedulerConfig
from thrifty.serve.engine import AsyncLLMEngine, LLMEngine
from thrifty.serve.model.loader import save_pretrained
from thrifty.serve.model.testing import byte_tokenizer
from thrifty.serve.server import build_app, serve_in_thread

CONTEXT = 256
NAME = "tiny-test"


@pytest.fixture(scope="module")
def served(tiny_llama):
    tok = byte_tokenizer()
    model = tiny_llama(tok.vocab_size, eos=0, context=CONTEXT, dtype=torch.float32)
    config = SchedulerConfig(max_num_batched_tokens=64, max_num_seqs=16)
    engine = AsyncLLMEngine(LLMEngine(model, tok, "sarathi_serve", config, num_blocks=96))
    server, url = serve_in_thread(engine, NAME)
    yield engine, url, model, tok
    server.should_exit = True
    server.thread.join(10)
    engine.shutdown()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[1] + "/v1", api_key="x", max_retries=0, timeout=30)


def greedy_text(model, tok, prompt: str, n: int) -> tuple[str, int]:
    ids = tok.encode(prompt)
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model.forward_dense(torch.tensor([ids + out]))[0, -1].argmax())
            out.append(nxt)
    return tok.decode(out), len(ids)


def test_models_and_health(served, client):
    assert [m.id for m in client.models.list().data] == [NAME]
    r = httpx.get(served[1] + "/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    for r in (httpx.get(served[1] + "/v1/nope"), httpx.get(served[1] + "/v1/completions")):
        assert r.status_code in (404, 405) and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_completion_matches_the_greedy_reference(served, client):
    _, _, model, tok = served
    prompt = "def f(x):\n"
    want, num_prompt = greedy_text(model, tok, prompt, 12)
    r = client.completions.create(
        model=NAME, prompt=prompt, max_tokens=12, temperature=0, extra_body={"ignore_eos": True}
    )
    assert r.object == "text_completion" and r.model == NAME and r.id.startswith("cmpl-")
    assert len(r.choices) == 1 and r.choices[0].text == want and r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (num_prompt, 12, num_prompt + 12)


def test_streaming_equals_non_streaming_and_reports_usage(served, client):
    kwargs = dict(model=NAME, prompt="import os\n", max_tokens=10, temperature=0.8, seed=7, top_p=0.9)
    kwargs["extra_body"] = {"ignore_eos": True, "top_k": 50}
    whole = client.completions.create(**kwargs)
    chunks = list(client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    texts = [c.choices[0].text for c in chunks if c.choices]
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert "".join(texts) == whole.choices[0].text
    assert reasons[-1] == "length" and all(r is None for r in reasons[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    again = client.completions.create(**kwargs)  # the seed makes sampling reproducible
    assert again.choices[0].text == whole.choices[0].text


def test_token_prompt_and_stop_string(served, client):
    _, _, model, tok = served
    prompt = "print(os"
    full, _ = greedy_text(model, tok, prompt, 16)
    ids = tok.encode(prompt)
    by_ids = client.completions.create(
        model=NAME, prompt=ids, max_tokens=16, temperature=0, extra_body={"ignore_eos": True}
    )
    assert by_ids.choices[0].text == full
    stop = full[5:8]
    cut = full.find(stop)
    r = client.completions.create(model=NAME, prompt=prompt, max_tokens=16, temperature=0, stop=[stop])
    assert r.choices[0].text == full[:cut] and r.choices[0].finish_reason == "stop"


def test_concurrent_streams_all_complete(served):
    _, url, model, tok = served
    prompts = [f"def f{i}(x):\n" for i in range(8)]

    async def one(aclient, prompt):
        stream = await aclient.completions.create(
            model=NAME, prompt=prompt, max_tokens=8, temperature=0, stream=True, extra_body={"ignore_eos": True}
        )
        return "".join([c.choices[0].text async for c in stream])

    async def everything():
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as aclient:
            return await asyncio.gather(*(one(aclient, p) for p in prompts))

    texts = asyncio.run(everything())
    assert texts == [greedy_text(model, tok, p, 8)[0] for p in prompts]


@pytest.mark.parametrize(
    ("body", "param", "status"),
    [
        (b'{"prompt": "x", "max_tokens": ', None, 400),
        ({"max_tokens": 4}, "prompt", 400),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens", 400),
        ({"prompt": "x", "max_tokens": -3}, "max_tokens", 400),
        ({"prompt": "x", "temperature": -1}, "temperature", 400),
        ({"prompt": "x", "temperature": "hot"}, "temperature", 400),
        ({"prompt": "x", "top_p": 0}, "top_p", 400),
        ({"prompt": "x", "n": 2}, "n", 400),
        ({"prompt": ["a", "b"]}, "prompt", 400),
        ({"prompt": [1, "b"]}, "prompt", 400),
        ({"prompt": [999999]}, "prompt", 400),
        ({"prompt": "x " * 200, "max_tokens": 100}, "prompt", 400),
        ({"prompt": "x", "model": "gpt-4"}, "model", 404),
        ([1, 2], None, 400),
    ],
)
def test_bad_input_gets_an_openai_error_and_the_server_keeps_serving(served, client, body, param, status):
    url = served[1] + "/v1/completions"
    r = httpx.post(url, content=body) if isinstance(body, bytes) else httpx.post(url, json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and err["param"] == param
    assert err["type"] == "invalid_request_error"
    ok = client.completions.create(model=NAME, prompt="x", max_tokens=2, temperature=0)
    assert ok.usage.completion_tokens >= 1


def test_openai_client_raises_bad_request(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=NAME, prompt="x", max_tokens=0)
    assert info.value.status_code == 400 and "max_tokens" in info.value.message


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def scrape(url: str) -> dict[str, float]:
    """Parse Prometheus text: every line is a comment or ``name{labels} value``; returns samples by full name."""
    text = httpx.get(url + "/metrics").text
    samples = {}
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_]+="[^"]*"(,[a-zA-Z_]+="[^"]*")*\})? (\S+)$')
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        m = sample.match(line)
        assert m, f"not Prometheus text: {line!r}"
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(4))
    return samples


@pytest.fixture
def slow_steps(served):
    """Each model forward sleeps 5 ms so that a long request is surely still running when its client leaves."""
    handle = served[0].engine.model.register_forward_pre_hook(lambda *_: time.sleep(0.005))
    yield
    handle.remove()


def test_disconnect_mid_stream_aborts_and_frees_blocks(served, slow_steps):
    engine, url = served[0], served[1]
    bm = engine.engine.scheduler.block_manager
    assert wait_for(lambda: not engine.engine.has_unfinished())
    baseline, aborted = bm.num_used_blocks, scrape(url)["thrifty_requests_aborted_total"]
    body = {"model": NAME, "prompt": "def g():\n", "max_tokens": 200, "temperature": 0, "stream": True}
    body["ignore_eos"] = True
    with httpx.Client(timeout=30) as http, http.stream("POST", url + "/v1/completions", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        events = [next(line for line in lines if line.startswith("data: ")) for _ in range(3)]
        assert all(json.loads(e[6:])["choices"][0]["finish_reason"] is None for e in events)
        assert bm.num_used_blocks > baseline
    assert wait_for(lambda: bm.num_used_blocks == baseline and not engine.engine.scheduler.requests)
    assert wait_for(lambda: scrape(url)["thrifty_requests_aborted_total"] == aborted + 1)
    bm.check_invariants()


def test_metrics_are_prometheus_text_with_the_serving_figures(served, client):
    url = served[1]
    before = scrape(url)
    client.completions.create(
        model=NAME, prompt="x = 1\n", max_tokens=5, temperature=0, extra_body={"ignore_eos": True}
    )
    client.completions.create(
        model=NAME, prompt="x = 1\n", max_tokens=5, temperature=0, extra_body={"ignore_eos": True}
    )
    after = scrape(url)
    done = 'thrifty_requests_finished_total{finish_reason="length"}'
    assert after[done] == before[done] + 2
    assert after["thrifty_requests_total"] == before["thrifty_requests_total"] + 2
    assert after["thrifty_time_to_first_token_seconds_count"] == before["thrifty_time_to_first_token_seconds_count"] + 2
    assert after["thrifty_time_between_tokens_seconds_count"] == before["thrifty_time_between_tokens_seconds_count"] + 8
    assert after["thrifty_generation_tokens_total"] == before["thrifty_generation_tokens_total"] + 10
    assert after["thrifty_prefix_cache_queries_total"] > before["thrifty_prefix_cache_queries_total"]
    for name in ("thrifty_num_requests_waiting", "thrifty_num_requests_running", "thrifty_kv_cache_usage_ratio"):
        assert after[name] >= 0
    assert after["thrifty_kv_cache_blocks_total"] == 96
    buckets = [v for k, v in after.items() if k.startswith("thrifty_time_to_first_token_seconds_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == after["thrifty_time_to_first_token_seconds_count"]
    errors = 'thrifty_request_errors_total{status="400"}'
    httpx.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 0})
    assert scrape(url)[errors] == before.get(errors, 0) + 1


def test_thrifty_serve_builds_its_engine_from_a_local_checkpoint(tmp_path, tiny_llama):
    from thrifty.serve.builder import build_engine, served_model_name

    tok = byte_tokenizer()
    model = tiny_llama(tok.vocab_size, eos=0, context=CONTEXT, dtype=torch.float32)
    save_pretrained(model, tok, tmp_path)
    engine = build_engine(tmp_path, "prefill_first", budget=32, max_num_seqs=8, num_blocks=40)
    assert served_model_name(tmp_path) == tmp_path.name and engine.scheduler.name == "prefill_first"
    assert engine.scheduler.config.max_num_batched_tokens == CONTEXT  # whole-prompt policies get the context
    assert engine.scheduler.block_manager.num_blocks == 40
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert main(["serve", "--model", str(tmp_path), "--scheduler", "nope"]) == 2
    assert main(["serve", "--model", str(tmp_path), "--budget", "0"]) == 2


def test_disconnect_while_waiting_for_a_non_streaming_answer_aborts(served, slow_steps):
    engine, url = served[0], served[1]
    bm = engine.engine.scheduler.block_manager
    assert wait_for(lambda: not engine.engine.has_unfinished())
    baseline, aborted = bm.num_used_blocks, scrape(url)["thrifty_requests_aborted_total"]
    body = {"model": NAME, "prompt": "def h():\n", "max_tokens": 200, "temperature": 0, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/completions", json=body, timeout=httpx.Timeout(5, read=0.3))
    assert wait_for(lambda: bm.num_used_blocks == baseline and not engine.engine.scheduler.requests)
    assert wait_for(lambda: scrape(url)["thrifty_requests_aborted_total"] == aborted + 1)


def test_health_is_503_once_the_engine_loop_failed(tiny_llama):
    from fastapi.testclient import TestClient

    tok = byte_tokenizer()
    llm = LLMEngine(tiny_llama(tok.vocab_size, eos=0, context=CONTEXT, dtype=torch.float32), tok, num_blocks=16)

    def broken_step():
        raise RuntimeError("the model failed")

    llm.step = broken_step
    engine = AsyncLLMEngine(llm)
    try:
        client = TestClient(build_app(engine, NAME))
        assert client.get("/health").status_code == 200 and engine.error is None
        llm.add_request([1, 2, 3])
        assert wait_for(lambda: engine.error is not None)
        r = client.get("/health")
        assert r.status_code == 503 and r.json() == {"status": "error"}
    finally:
        engine.shutdown()
