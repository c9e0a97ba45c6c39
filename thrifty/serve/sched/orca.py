"""Orca's iteration-level scheduling (Yu et al., OSDI'22), as the baseline in Sarathi-Serve.

Rule (``orca_scheduler.py`` and ``orca_block_space_manager.py`` of microsoft/sarathi-serve): every step, every
running request decodes one token, and waiting requests are admitted FCFS with their WHOLE prompt in the same batch
while fewer than ``max_num_seqs`` run. Admission reserves KV blocks for the request's whole life (Orca reserves the
maximum length; here prompt + ``max_tokens``), so Orca never preempts but wastes memory. Here the mixed batch also
keeps to ``max_num_batched_tokens`` (admission stops at the first prompt that does not fit).
"""

from __future__ import annotations

from thrifty.serve.sched.base import Scheduler, SchedulerOutput
from thrifty.serve.sequence import Request

__all__ = ["OrcaScheduler"]


def _lifetime_tokens(req: Request) -> int:
    """KV slots the request may ever need (its last sampled token never has KV)."""
    return req.num_prompt_tokens + req.max_tokens - 1


class OrcaScheduler(Scheduler):
    """Whole prefills mixed with decodes, memory reserved up front. Reads ``max_num_batched_tokens`` and
    ``max_num_seqs``."""

    name = "orca"
    prefills_whole_prompts = True

    def max_prefill_tokens(self, req: Request) -> int:
        return req.num_prompt_tokens

    def _schedule(self, now: float) -> SchedulerOutput:
        out = SchedulerOutput()
        bm = self.block_manager
        self._sort_running()
        for req in self.running:
            bm.append_slots(req, 1)  # within the reservation: never allocates
            out.chunks.append(self._chunk(req, 1))
        num_batched = len(out.chunks)
        while self.waiting:
            req = self.waiting[0]
            if len(self.running) >= self.config.max_num_seqs:
                break
            if not bm.can_allocate(req, _lifetime_tokens(req)):
                break
            if num_batched + req.num_tokens > self.config.max_num_batched_tokens:
                break
            self._admit(req, _lifetime_tokens(req))
            out.chunks.append(self._chunk(req, req.remaining_prefill))
            num_batched += out.chunks[-1].num_tokens
        return out
