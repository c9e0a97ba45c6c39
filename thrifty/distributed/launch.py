"""Start process groups: ``spawn`` for local processes (tests, claims), ``init_from_env`` under ``torchrun``.

``spawn(fn, world_size, *args)`` starts ``world_size`` fresh interpreters (the ``spawn`` start method, so nothing
inherited from the parent's threads), joins them in one process group over loopback, calls
``fn(rank, world_size, *args)`` in each and returns the ranks' return values in rank order. A failing rank's
traceback is raised in the parent and the other ranks are stopped, so a bug never turns into a hang.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["default_backend", "init_from_env", "spawn"]


def default_backend() -> str:
    """NCCL when CUDA is available, gloo otherwise."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_from_env(backend: str | None = None, timeout_s: float = 300.0) -> tuple[int, int]:
    """Join the process group ``torchrun`` describes in the environment; returns ``(rank, world_size)``."""
    if not dist.is_initialized():
        dist.init_process_group(backend or default_backend(), timeout=timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


def _child(
    rank: int,
    world_size: int,
    init_method: str,
    backend: str,
    threads: int,
    timeout_s: float,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    results: Any,
) -> None:
    torch.set_num_threads(threads)
    try:
        dist.init_process_group(
            backend, init_method=init_method, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s)
        )
        try:
            value = fn(rank, world_size, *args)
        finally:
            dist.destroy_process_group()
        # plain pickle copies tensor storages into the message (the queue's own pickler would pass shared memory
        # that disappears when this process exits before the parent reads it)
        results.put((rank, True, pickle.dumps(value)))
    except BaseException:  # noqa: BLE001 - every failure must reach the parent, not hang it
        results.put((rank, False, traceback.format_exc()))


def spawn(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    backend: str = "gloo",
    threads: int = 1,
    timeout_s: float = 300.0,
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` local processes in one process group.

    ``fn`` must be importable (defined at module level) and its arguments and return value picklable (tensors
    included). The ranks rendezvous through a file store in a fresh temporary folder, so no TCP port is picked
    ahead of time and raced for.
    ``threads`` sets each process's intra-op threads (one by default: several processes share the cores).
    Raises ``RuntimeError`` with the first failing rank's traceback, or when the run exceeds ``timeout_s``.
    """
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    store_dir = tempfile.TemporaryDirectory(prefix="thrifty-spawn-")
    init_method = f"file://{os.path.join(store_dir.name, 'store')}"
    procs = [
        ctx.Process(
            target=_child,
            args=(rank, world_size, init_method, backend, threads, timeout_s, fn, args, results),
            daemon=True,
        )
        for rank in range(world_size)
    ]
    for p in procs:
        p.start()
    values: dict[int, Any] = {}
    failures: dict[int, str] = {}
    try:
        for _ in range(world_size):
            rank, ok, value = _get(results, procs, timeout_s)
            if not ok:
                failures[rank] = value
                break
            values[rank] = value
        if failures:
            # A failing rank makes its peers fail too (connection reset): give their reports a moment to arrive,
            # so that the message shows every rank's error, not only the first to be read.
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and len(values) + len(failures) < world_size:
                if results.empty():
                    time.sleep(0.05)
                    continue
                rank, ok, value = results.get()
                (values if ok else failures)[rank] = value
    finally:
        for p in procs:
            if failures and p.is_alive():
                p.terminate()
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
        store_dir.cleanup()
    if failures:
        detail = "\n".join(f"--- rank {r} ---\n{tb}" for r, tb in sorted(failures.items()))
        raise RuntimeError(f"ranks {sorted(failures)} of {world_size} failed:\n{detail}")
    return [pickle.loads(values[r]) for r in range(world_size)]


def _get(results: Any, procs: list[Any], timeout_s: float) -> tuple[int, bool, Any]:
    """Wait for the next result; a process that died without reporting, or a timeout, is a failure."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not results.empty():
            return results.get()
        dead = [i for i, p in enumerate(procs) if p.exitcode not in (None, 0)]
        if dead:
            return dead[0], False, f"process exited with code {procs[dead[0]].exitcode} before reporting"
        if time.monotonic() > deadline:
            for p in procs:
                p.terminate()
            raise RuntimeError(f"distributed run exceeded {timeout_s:.0f} s")
        time.sleep(0.01)
