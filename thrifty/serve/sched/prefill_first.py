"""vLLM v0's prefill-first scheduler (Kwon et al., SOSP'23), the baseline of SARATHI and Sarathi-Serve.

Rule (``vllm_scheduler.py`` of microsoft/sarathi-serve, vLLM v0 without chunked prefill): if waiting requests can be
admitted, the step is a prefill-only batch of WHOLE prompts, admitted FCFS while their tokens fit the budget
``max_num_batched_tokens``, their blocks fit (watermark kept free) and fewer than ``max_num_seqs`` run. Otherwise
every running request decodes one token; when a slot cannot be appended, the lowest-priority running request is
preempted by recompute. Prefills therefore stall every running decode: the generation stalls Sarathi-Serve removes.
"""

from __future__ import annotations

from thrifty.serve.sched.base import Scheduler, SchedulerOutput
from thrifty.serve.sequence import Request

__all__ = ["PrefillFirstScheduler"]


class PrefillFirstScheduler(Scheduler):
    """Prefill-prioritising batching of whole prompts. Reads ``max_num_batched_tokens`` and ``max_num_seqs``."""

    name = "prefill_first"
    prefills_whole_prompts = True

    def max_prefill_tokens(self, req: Request) -> int:
        # a request preempted after its last-but-one token recomputes prompt and outputs in one prefill
        return req.num_prompt_tokens + req.max_tokens - 1

    def _schedule(self, now: float) -> SchedulerOutput:
        out = SchedulerOutput()
        bm = self.block_manager
        budget = self.config.max_num_batched_tokens
        num_batched = 0
        while self.waiting:
            req = self.waiting[0]
            if not bm.can_allocate(req) or len(self.running) >= self.config.max_num_seqs:
                break
            if num_batched + req.num_tokens > budget:
                break
            self._admit(req)
            out.chunks.append(self._chunk(req, req.remaining_prefill))
            num_batched += req.remaining_prefill
        if out.chunks:
            return out
        self._decode_running(out)
        return out
