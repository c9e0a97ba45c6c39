"""Ring attention (``thrifty.distributed.seq_parallel``) under ``torchrun``: time one forward + backward on a random
sequence sharded over the ranks and check it against single-process attention on each rank's chunk of queries.

Every rank draws the same float64 sequence (so keep ``--seq-len`` to a few thousand tokens) and keeps its chunk.

    torchrun --nproc-per-node 4 benchmarks/seq_parallel_demo.py --seq-len 8192
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.distributed as dist

from thrifty.distributed.launch import init_from_env
from thrifty.distributed.seq_parallel import reference_attention, ring_attention, shard_sequence


def run(seq_len: int, heads: int = 4, head_dim: int = 64, causal: bool = True, seed: int = 0) -> dict[str, float]:
    """This rank's seconds for ring attention forward + backward, and the largest difference from single-process
    attention on the rank's chunk of queries (float64)."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(3, 1, heads, seq_len, head_dim, generator=g, dtype=torch.float64)
    local = [shard_sequence(t, dim=2).clone().requires_grad_() for t in (q, k, v)]
    start = time.perf_counter()
    out = ring_attention(*local, causal=causal)
    out.sum().backward()
    seconds = time.perf_counter() - start
    ref = shard_sequence(reference_attention(q, k, v, causal), dim=2)
    return {"seconds": seconds, "max_abs_diff": (out - ref).abs().max().item()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--non-causal", action="store_true")
    args = parser.parse_args(argv)
    rank, world = init_from_env()
    try:
        result = run(args.seq_len, args.heads, args.head_dim, not args.non_causal)
        print(
            f"rank {rank}/{world}: {args.seq_len // world} of {args.seq_len} tokens, {result['seconds']:.2f} s, "
            f"max |ring - single-process| = {result['max_abs_diff']:.1e}"
        )
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
