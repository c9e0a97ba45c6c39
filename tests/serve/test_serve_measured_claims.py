"""The measured-on-CPU serving claims reach a verdict at smoke scale (labelled measured); their helpers: the byte
tokenizer round-trips text and a saved random checkpoint loads back with the same logits."""

from __future__ import annotations

import math

import pytest
import torch

from thrifty.bench.claim import VERDICTS, ClaimContext
from thrifty.bench.claims import get_claim
from thrifty.bench.claims.serve_measured import SMOKE_MODEL, byte_tokenizer, random_llama, save_checkpoint
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
