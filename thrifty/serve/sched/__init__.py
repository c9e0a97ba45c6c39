"""Scheduling policies for LLM serving: sibling classes behind one interface (see :mod:`thrifty.serve.sched.base`).

``create_scheduler(name, block_manager, config)`` builds one by name; ``SCHEDULERS`` maps names to classes.
"""

from __future__ import annotations

from thrifty.serve.kv.block_manager import BlockManager
from thrifty.serve.sched.base import ScheduledChunk, Scheduler, SchedulerConfig, SchedulerOutput
from thrifty.serve.sched.batchllm import BatchLLMScheduler
from thrifty.serve.sched.orca import OrcaScheduler
from thrifty.serve.sched.prefill_first import PrefillFirstScheduler
from thrifty.serve.sched.sarathi import SarathiScheduler
from thrifty.serve.sched.sarathi_serve import SarathiServeScheduler

__all__ = [
    "SCHEDULERS",
    "BatchLLMScheduler",
    "OrcaScheduler",
    "PrefillFirstScheduler",
    "SarathiScheduler",
    "ScheduledChunk",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerOutput",
    "SarathiServeScheduler",
    "create_scheduler",
]

SCHEDULERS: dict[str, type[Scheduler]] = {
    cls.name: cls
    for cls in (PrefillFirstScheduler, OrcaScheduler, SarathiScheduler, SarathiServeScheduler, BatchLLMScheduler)
}


def create_scheduler(name: str, block_manager: BlockManager, config: SchedulerConfig | None = None) -> Scheduler:
    """Build the scheduling policy ``name`` (one of ``SCHEDULERS``) over ``block_manager``."""
    try:
        cls = SCHEDULERS[name]
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}") from None
    return cls(block_manager, config)
