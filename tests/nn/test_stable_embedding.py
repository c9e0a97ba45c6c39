"""StableEmbedding: Xavier init, LayerNorm after the lookup, and 32-bit optimizer state for its weight."""

from __future__ import annotations

import math

import pytest
import torch

from thrifty.nn import StableEmbedding
from thrifty.optim import AdamW8bit, SGD8bit


def test_xavier_init_and_padding():
    torch.manual_seed(0)
    emb = StableEmbedding(1000, 64, padding_idx=3)
    bound = math.sqrt(6.0 / (1000 + 64))
    assert emb.weight.abs().max() <= bound
    assert emb.weight.abs().max() > 0.9 * bound
    assert torch.all(emb.weight[3] == 0)


def test_layernorm_after_lookup():
    torch.manual_seed(1)
    emb = StableEmbedding(50, 32)
    out = emb(torch.tensor([[1, 2, 3], [4, 5, 6]]))
    assert out.shape == (2, 3, 32)
    assert torch.allclose(out.mean(-1), torch.zeros(2, 3), atol=1e-5)
    ref = torch.nn.functional.layer_norm(emb.weight[torch.tensor([1, 2])], (32,))
    assert torch.allclose(out[0, :2], ref, atol=1e-6)


@pytest.mark.parametrize("make", [lambda ps: AdamW8bit(ps), lambda ps: SGD8bit(ps, lr=0.1, momentum=0.9)])
def test_weight_keeps_32bit_state(make):
    emb = StableEmbedding(1000, 64)  # 64,000 elements: 8-bit if not marked
    plain = torch.nn.Embedding(1000, 64)
    opt = make([*emb.parameters(), *plain.parameters()])
    loss = emb(torch.arange(10)).square().sum() + plain(torch.arange(10)).square().sum()
    loss.backward()
    opt.step()
    assert opt.state[emb.weight]["state1"].dtype == torch.float32
    assert opt.state[plain.weight]["state1"].dtype == torch.uint8


def test_sparse_refused():
    with pytest.raises(ValueError, match="dense"):
        StableEmbedding(10, 4, sparse=True)
