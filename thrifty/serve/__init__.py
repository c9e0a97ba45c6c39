"""LLM serving: requests, a paged-KV block manager and scheduling policies (SARATHI, Sarathi-Serve, BatchLLM, ...).

This package import stays light (no torch): the same schedulers drive the real engine and the simulator.
"""

from thrifty.serve.kv.block_manager import BlockManager
from thrifty.serve.sched import (
    SCHEDULERS,
    ScheduledChunk,
    Scheduler,
    SchedulerConfig,
    SchedulerOutput,
    create_scheduler,
)
from thrifty.serve.sequence import Request, RequestStatus

__all__ = [
    "SCHEDULERS",
    "BlockManager",
    "Request",
    "RequestStatus",
    "ScheduledChunk",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerOutput",
    "create_scheduler",
]
