"""LLM serving: requests, a paged-KV block manager and scheduling policies (SARATHI, Sarathi-Serve, BatchLLM, ...).

This package import stays light (no torch): the same schedulers drive the real engine and the simulator. The
PyTorch engine's names (``LLM``, ``LLMEngine``, ``AsyncLLMEngine``, ``RequestOutput``, ``SamplingParams``) are
imported on first access.
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

_LAZY = {
    "LLM": "thrifty.serve.engine",
    "AsyncLLMEngine": "thrifty.serve.engine",
    "LLMEngine": "thrifty.serve.engine",
    "RequestOutput": "thrifty.serve.engine",
    "SamplingParams": "thrifty.serve.sampling",
}

__all__ = [
    "LLM",
    "SCHEDULERS",
    "AsyncLLMEngine",
    "LLMEngine",
    "RequestOutput",
    "SamplingParams",
    "BlockManager",
    "Request",
    "RequestStatus",
    "ScheduledChunk",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerOutput",
    "create_scheduler",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
