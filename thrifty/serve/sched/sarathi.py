"""SARATHI's decode-maximal batching with chunked prefills (Agrawal et al., arXiv 2308.16369).

Rule (paper, Sec. 4): each batch holds EXACTLY ONE prefill chunk of at most C tokens and as many decodes as fit
(decode-maximal), so the decodes piggyback on the chunk's compute-bound matmuls. Here: every running request past
its prefill decodes (preempting the lowest-priority running request by recompute when no slot can be appended, as
vLLM); then the earliest running request with an unfinished prefill, or else the head of the waiting queue when it
can be admitted (all prompt blocks up front, watermark kept free, fewer than ``max_num_seqs`` running), gets a chunk
of ``min(remaining, C, budget left)`` tokens. C is ``chunk_size`` (default: whatever the budget
``max_num_batched_tokens`` leaves after the decodes). Other partial prefills wait for their turn. With a budget of at
least C + ``max_num_seqs`` - 1 every chunk but a prompt's last has exactly C tokens, as in the paper (C = 256 or
512 there; the best prefill:decode token ratio is about C / (B - 1) for B = ``max_num_seqs``).
"""

from __future__ import annotations

from thrifty.serve.sched.base import Scheduler, SchedulerOutput

__all__ = ["SarathiScheduler"]


class SarathiScheduler(Scheduler):
    """One prefill chunk plus decodes per batch. Reads ``chunk_size``, ``max_num_batched_tokens``,
    ``max_num_seqs``."""

    name = "sarathi"

    def _schedule(self, now: float) -> SchedulerOutput:
        out = SchedulerOutput()
        bm = self.block_manager
        cfg = self.config
        self._decode_running(out)
        room = cfg.max_num_batched_tokens - out.num_batched_tokens
        if cfg.chunk_size is not None:
            room = min(room, cfg.chunk_size)
        if room <= 0:
            return out
        req = next((r for r in self.running if r.is_prefilling), None)
        if req is None and self.waiting:
            head = self.waiting[0]
            if len(self.running) < cfg.max_num_seqs and bm.can_allocate(head):
                self._admit(head)
                req = head
        if req is not None:
            out.chunks.append(self._chunk(req, min(req.remaining_prefill, room)))
        return out
