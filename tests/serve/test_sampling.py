"""SamplingParams validation and the batched sampler: greedy, temperature, top-k, top-p, per-request seeds."""

from __future__ import annotations

import pytest
import torch

from thrifty.serve.sampling import SamplingParams, sample_tokens


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 2.5}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"seed": "1"}, "seed"),
        ({"stop": ("",)}, "stop"),
    ],
)
def test_bad_values_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kw)


def test_stop_string_is_wrapped_and_greedy_flag():
    p = SamplingParams(stop="\n\n", temperature=0)
    assert p.stop == ("\n\n",) and p.greedy and not SamplingParams().greedy


def gens(n, seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def test_greedy_and_degenerate_filters_pick_the_argmax():
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0))
    params = [
        SamplingParams(temperature=0),
        SamplingParams(top_k=1),
        SamplingParams(top_p=1e-6),
        SamplingParams(temperature=1e-4),
        SamplingParams(temperature=0),
        SamplingParams(top_k=1, top_p=0.5, temperature=3.0),
    ]
    assert sample_tokens(logits, params, gens(6)) == logits.argmax(-1).tolist()


def test_empirical_distribution_follows_temperature_top_k_and_top_p():
    probs = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.06, 0.04], dtype=torch.float64)
    logits = probs.log().float()[None].repeat(4, 1)
    n = 2000
    params = [SamplingParams(), SamplingParams(temperature=0.5), SamplingParams(top_k=3), SamplingParams(top_p=0.7)]
    tokens = sample_tokens(logits.repeat_interleave(n, 0), [p for p in params for _ in range(n)], gens(4 * n))
    counts = torch.stack([torch.bincount(torch.tensor(tokens[i * n : (i + 1) * n]), minlength=6) for i in range(4)])
    sharp = probs**2 / (probs**2).sum()
    top3 = torch.where(torch.arange(6) < 3, probs, 0.0)
    nucleus = torch.where(torch.arange(6) < 3, probs, 0.0)  # 0.4 + 0.25 < 0.7 <= 0.4 + 0.25 + 0.15
    for i, expected in enumerate([probs, sharp, top3 / top3.sum(), nucleus / nucleus.sum()]):
        freq = counts[i] / n
        assert torch.allclose(freq.double(), expected, atol=0.04), (i, freq, expected)
    assert counts[2, 3:].sum() == 0 and counts[3, 3:].sum() == 0


def test_a_seeded_row_does_not_depend_on_its_batch():
    logits = torch.randn(5, 40, generator=torch.Generator().manual_seed(1))
    p = SamplingParams(seed=123, temperature=0.9, top_p=0.9)
    alone = [sample_tokens(logits[2:3], [p], [g])[0] for g in [p.make_generator()] for _ in range(3)]
    g = p.make_generator()
    others = [SamplingParams(temperature=0), SamplingParams(seed=5), p, SamplingParams(top_k=3), SamplingParams()]
    batch = [sample_tokens(logits, others, [None, *gens(1), g, *gens(2)])[2] for _ in range(3)]
    assert batch == alone
    with pytest.raises(ValueError, match="N = len"):
        sample_tokens(logits, others[:2], [None, None])
