"""Requests as the schedulers see them: token ids, how many of them have their KV cached, and timing.

Pure Python (no torch) so that one scheduler drives both the real engine and the simulator.

Token accounting (as in vLLM v1): a request knows ``num_tokens`` tokens (prompt plus outputs so far), of which the
first ``num_computed_tokens`` have their keys and values in the paged cache. Computing a chunk of tokens
``[num_computed_tokens, num_computed_tokens + n)`` that ends at ``num_tokens`` yields logits for the next token, so
a *decode* is the one-token chunk that ends there and everything before is *prefill*. After a preemption by
recompute the whole known sequence (prompt and outputs) is prefilled again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FINISH_REASONS", "Request", "RequestStatus"]

FINISH_REASONS: tuple[str, ...] = ("length", "stop", "abort")


class RequestStatus(enum.Enum):
    """Where a request is: queued (never admitted or preempted), admitted with blocks, or done."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Request:
    """One generation request.

    ``payload`` is opaque to the schedulers (the engine keeps its sampling parameters and detokenizer state there).
    Timing fields use whatever clock the executor passes as ``now`` to ``schedule`` and ``update``.
    """

    request_id: str
    prompt_token_ids: list[int]
    max_tokens: int
    arrival_time: float = 0.0
    payload: Any = None
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0
    block_table: list[int] = field(default_factory=list)
    status: RequestStatus = RequestStatus.WAITING
    finish_reason: str | None = None
    num_preemptions: int = 0
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    token_times: list[float] = field(default_factory=list)
    finish_time: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.request_id, str) or not self.request_id:
            raise ValueError(f"request_id must be a non-empty string, got {self.request_id!r}")
        self.prompt_token_ids = list(self.prompt_token_ids)
        if not self.prompt_token_ids:
            raise ValueError(f"request {self.request_id!r}: the prompt must hold at least one token")
        if self.max_tokens < 1:
            raise ValueError(f"request {self.request_id!r}: max_tokens must be >= 1, got {self.max_tokens}")

    @property
    def all_token_ids(self) -> list[int]:
        """Prompt followed by the generated tokens."""
        return self.prompt_token_ids + self.output_token_ids

    @property
    def num_tokens(self) -> int:
        """Number of known tokens (prompt plus outputs)."""
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def is_prefilling(self) -> bool:
        """More than one known token still lacks its KV (a fresh prompt, or a recompute after preemption)."""
        return self.num_computed_tokens < self.num_tokens - 1

    @property
    def remaining_prefill(self) -> int:
        """Tokens left to compute before the next token can be sampled (1 for a decode)."""
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is RequestStatus.FINISHED

    def __repr__(self) -> str:
        return (
            f"Request({self.request_id!r}, status={self.status.value}, prompt={self.num_prompt_tokens}, "
            f"outputs={self.num_output_tokens}/{self.max_tokens}, computed={self.num_computed_tokens})"
        )
