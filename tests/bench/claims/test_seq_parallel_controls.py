"""Negative controls for the sequence-parallelism claim: a layer that saves memory by computing the wrong attention is
not held, and tensor parallelism itself run as the "sequence-parallel" layer is never held.

The claim's processes build the layer it passes them (``SEQUENCE_PARALLEL_LAYER``), so the controls swap that and
define their layers here, at module level, where the spawned processes can import them.
"""

import pytest
import torch

from thrifty.bench.claim import HELD, NOT_HELD
from thrifty.bench.claims import get_claim
from thrifty.bench.claims.distributed import seq_parallel as claim_module
from thrifty.bench.runner import run_claims
from thrifty.distributed.seq_parallel import RingSelfAttention, gather_sequence, reference_attention, shard_sequence
from thrifty.distributed.tensor_parallel import TensorParallelSelfAttention


class LocalOnlyAttention(RingSelfAttention):
    """Each process attends within its own chunk only: less memory than the ring, and wrong."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, e = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, e // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.out(reference_attention(q, k, v, self.causal).transpose(1, 2).reshape(b, n, e))


class GatheredTensorParallel(RingSelfAttention):
    """The baseline under the method's name: gather the sequence, run tensor-parallel attention, keep this chunk."""

    def __init__(self, embed_dim: int, num_heads: int, group=None, algorithm: str = "online") -> None:
        super().__init__(embed_dim, num_heads, group=group, algorithm=algorithm)
        self.tp = TensorParallelSelfAttention(embed_dim, num_heads, group=group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.tp.to(x.dtype).load_full(self.qkv.weight, self.qkv.bias, self.out.weight, self.out.bias)
        return shard_sequence(self.tp(gather_sequence(x, 1, self.group)), 1, self.group)


def _verdict(monkeypatch, layer: type) -> str:
    monkeypatch.setattr(claim_module, "SEQUENCE_PARALLEL_LAYER", layer)
    (result,) = run_claims([get_claim("seq_parallel")], scale="smoke", seeds=3).results
    assert result.error is None, result.error
    return result.verdict


@pytest.mark.slow
def test_attention_that_is_wrong_is_not_held(monkeypatch):
    assert _verdict(monkeypatch, LocalOnlyAttention) == NOT_HELD


@pytest.mark.slow
def test_the_baseline_under_the_method_name_is_never_held(monkeypatch):
    assert _verdict(monkeypatch, GatheredTensorParallel) != HELD
