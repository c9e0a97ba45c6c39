"""The measured-on-CPU serving claims reach a verdict at smoke scale (labelled measured); their helpers: the byte
tokenizer round-trips text and a saved random checkpoint loads back with the same logits."""

from __future__ import annotations

import math

import pytest
import torch

from thrifty.bench.claim import VERDICTS, ClaimContext
from thrifty.bench.claims import get_claim
from thrifty.bench.claims.serve_measured import (
    SMOKE_MODEL,
    _run_interleaved,
    _StepClock,
    byte_tokenizer,
    random_llama,
    save_checkpoint,
)
from thrifty.serve import SchedulerConfig
from thrifty.serve.engine import LLMEngine
from thrifty.serve.model.loader import load_pretrained
from thrifty.serve.sim.cost_model import DEFAULT_DATA_DIR

HAVE_TRACES = (DEFAULT_DATA_DIR / "llm-traces").is_dir()


def test_byte_tokenizer_round_trips_and_checkpoint_reloads(tmp_path):
    tok = byte_tokenizer()
    text = "def f(x):\n    return 'héllo' + x  # ∑\n"
    ids = tok.encode(text)
    assert ids == [b + 1 for b in text.encode()] and tok.decode(ids) == text and tok.vocab_size == 257
    model = random_llama(seed=3, **{**SMOKE_MODEL, "vocab_size": tok.vocab_size})
    loaded, loaded_tok = load_pretrained(save_checkpoint(model, tok, tmp_path / "ckpt"))
    x = torch.tensor([ids[:20]])
    assert torch.equal(loaded.forward_dense(x), model.forward_dense(x))
    assert loaded_tok.encode(text) == ids and loaded.config.eos_token_ids == (0,)


def test_interleaved_engines_each_run_on_their_own_step_clock():
    model = random_llama(seed=1, **SMOKE_MODEL)
    requests = [([1 + i] * (5 + 7 * i), 3 + i, 0.5 * i) for i in range(4)]  # (prompt, max_tokens, arrival s)
    engines = {
        name: LLMEngine(model, None, policy, SchedulerConfig(budget, 8), num_blocks=32, clock=_StepClock())
        for name, policy, budget in (("a", "sarathi_serve", 8), ("b", "prefill_first", 64))
    }
    runs = _run_interleaved(engines, requests)
    for run in runs.values():
        for i, (_, max_tokens, arrival) in enumerate(requests):
            ts = run["times"][f"r{i}"]
            assert len(ts) == max_tokens and run["arrivals"][f"r{i}"] == arrival
            assert arrival < ts[0] and ts == sorted(ts)  # tokens come after the arrival, in order
        # requests arrive 0.5 s apart and the tiny model is faster: the clock jumped over idle time
        assert run["makespan"] > requests[-1][2] and run["progress"][-1][2] == sum(r[1] for r in requests)
    assert runs["a"]["steps"] > runs["b"]["steps"]  # chunks of 8 tokens take more steps than whole prefills


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(
            "sarathi_serve_cpu", marks=pytest.mark.skipif(not HAVE_TRACES, reason="../shared/data/llm-traces is absent")
        ),
        "batchllm_cpu",
    ],
)
def test_measured_claim_reaches_a_verdict_at_smoke_scale(key):
    claim = get_claim(key)
    assert claim.field == "serve" and not claim.default
    outcome = claim.run(ClaimContext("smoke", [0]))
    assert outcome.verdict in VERDICTS and not outcome.failures
    assert outcome.summary.startswith("[measured, CPU") and outcome.details["label"].startswith("measured, CPU")
    ratio = outcome.metrics["throughput_ratio"]
    assert math.isfinite(ratio) and ratio > 0
    if key == "batchllm_cpu":  # each prefix computed once per group: at least what the LRU cache saves
        saving = outcome.metrics["batchllm_token_saving_ratio"]
        assert 0 < saving <= outcome.metrics["batchllm_planned_token_saving_ratio"] + 1e-9
        assert saving >= outcome.metrics["sarathi_serve_token_saving_ratio"]
    else:
        assert 0 < outcome.metrics["tbt_p99_ratio"] < math.inf
