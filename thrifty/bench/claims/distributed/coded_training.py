"""The workload of the SGC claim: coded data-parallel training of digits models on real gloo processes.

Each rank is a worker of a sequential gradient coding scheme (``thrifty.distributed.sgc``): every round it computes
its mini-tasks' coded partial gradients of softmax-regression models on scikit-learn's digits (real backward passes),
waits out an injected delay (its round time under a straggler trace), and the master decodes the due job's exact
gradient from the responders of the rounds so far. Both GC and M-SGC decode exact gradients, so they train the same
models; what differs is the samples each worker computes and the rounds' wall clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from thrifty.data.digits import load_digits_split
from thrifty.distributed import spawn
from thrifty.distributed.sgc import Coder, Task, chunk_slices, make_coder

__all__ = ["CodedTrainingSpec", "coded_training", "job_batch", "run_coded_training"]


@dataclass
class CodedTrainingSpec:
    """A coded data-parallel training run on digits: ``num_models`` softmax-regression models trained round-robin
    (job ``t`` is a step of model ``t mod num_models``, so ``num_models > T`` keeps each model's jobs sequential).

    ``delays``: each worker's round time in seconds (injected), ``(num_jobs + T, n)``; ``mu``: the wait rule's slack;
    ``strict``: refuse (``ValueError`` before any process starts) delays whose stragglers the scheme cannot tolerate.
    """

    scheme: str
    params: tuple[int, ...]
    num_jobs: int
    delays: np.ndarray
    batch_size: int = 120
    num_models: int = 1
    lr: float = 0.5
    mu: float = 0.5
    seed: int = 0
    strict: bool = False


def _planned_stragglers(spec: CodedTrainingSpec, coder: Coder) -> None:
    coder.reset(spec.num_jobs)
    for t in spec.delays:
        stragglers = t > t.min() * (1 + spec.mu)
        if spec.strict:
            coder.check_pattern(stragglers)
        coder.finish_round(stragglers)


def _validate(spec: CodedTrainingSpec, world_size: int) -> Coder:
    coder = make_coder(spec.scheme, world_size, spec.params, spec.seed)
    rounds = spec.num_jobs + coder.delay
    if spec.delays.shape != (rounds, world_size):
        raise ValueError(
            f"delays must have shape (num_jobs + T, n) = ({rounds}, {world_size}), got {spec.delays.shape}"
        )
    if spec.num_models <= coder.delay:
        raise ValueError(f"num_models must exceed the delay T = {coder.delay} so each model's jobs stay sequential")
    if spec.batch_size < sum(u for _, u in coder.chunk_units()):
        raise ValueError(f"batch_size must be at least {sum(u for _, u in coder.chunk_units())} for {coder!r}")
    _planned_stragglers(spec, coder)
    coder.reset(spec.num_jobs)
    return coder


def job_batch(spec: CodedTrainingSpec, job: int, size: int) -> Tensor:
    """The sample indices of job ``job``'s batch (the same on every rank, from the spec's seed)."""
    gen = torch.Generator().manual_seed(spec.seed * 1_000_003 + job)
    return torch.randperm(size, generator=gen)[: spec.batch_size]


def coded_training(rank: int, world_size: int, spec: CodedTrainingSpec) -> dict:
    """One rank of a coded training run (call after the process group is up: ``spawn`` or ``torchrun``).

    Every round each rank computes its mini-tasks' coded partial gradients (real backward passes) and reports its
    finish time by all_gather: the injected delay is the worker's round time, the real computation runs inside it
    (finish = max(delay, compute seconds)). All ranks apply the wait rule to the same numbers: stragglers
    stop waiting at the round's deadline (sleep cut short), the results are all_gathered with the straggler rows
    masked, rank 0 (the master) decodes the due job from the responders and broadcasts the update, and every rank
    steps that model. Returns the final models' parameters, per-round wall-clock seconds and the number of samples
    each worker processed.
    """
    coder = _validate(spec, world_size)
    coder.reset(spec.num_jobs)
    x, y, _, _ = load_digits_split()
    models = [nn.Linear(x.shape[1], 10) for _ in range(spec.num_models)]
    for m in models:
        nn.init.zeros_(m.weight)
        nn.init.zeros_(m.bias)
    numel = sum(p.numel() for p in models[0].parameters())
    slices = chunk_slices(coder, spec.batch_size)
    results: dict[tuple[int, Task], Tensor] = {}
    round_seconds, samples = [], 0
    for r in range(spec.num_jobs + coder.delay):
        t0 = time.perf_counter()
        plan = coder.assignment()
        mine = torch.zeros(coder.slots, numel)
        for k, task in enumerate(plan[rank]):
            model = models[task.job % spec.num_models]
            idx = job_batch(spec, task.job, len(x))
            weights = torch.zeros(spec.batch_size)
            for chunk, coefficient in coder.task_chunks(rank, task):
                weights[slices[chunk]] = coefficient
            used = weights != 0
            samples += int(used.sum())
            model.zero_grad()
            loss = (F.cross_entropy(model(x[idx][used]), y[idx][used], reduction="none") * weights[used]).sum()
            loss.backward()
            mine[k] = torch.cat([p.grad.flatten() for p in model.parameters()])
        finish = torch.tensor([max(time.perf_counter() - t0, float(spec.delays[r, rank]))], dtype=torch.float64)
        gathered = [torch.empty_like(finish) for _ in range(world_size)]
        dist.all_gather(gathered, finish)
        finishes = torch.cat(gathered).numpy()
        deadline = finishes.min() * (1 + spec.mu)
        responders = coder.finish_round(finishes > deadline)
        stop = deadline if not responders.all() else finishes.max()
        time.sleep(max(0.0, min(float(finish), float(stop)) - (time.perf_counter() - t0)))
        if not responders[rank]:
            mine.zero_()  # a straggler's work is lost
        rows = [torch.empty_like(mine) for _ in range(world_size)]
        dist.all_gather(rows, mine)
        for i in np.flatnonzero(responders):
            for k, task in enumerate(plan[i]):
                results[(int(i), task)] = rows[i][k]
        job = coder.decodable_job(r)
        if job is not None:
            grad = coder.decode(job, results) / spec.batch_size
            # rank 0 plays the master: LAPACK's least-squares decoding vector may differ in the last bits between
            # processes (alignment-dependent kernels), so every rank applies rank 0's decoded update
            dist.broadcast(grad, src=0)
            model = models[job % spec.num_models]
            with torch.no_grad():
                offset = 0
                for p in model.parameters():
                    p.sub_(spec.lr * grad[offset : offset + p.numel()].view_as(p))
                    offset += p.numel()
            results = {key: v for key, v in results.items() if key[1].job != job}
        round_seconds.append(time.perf_counter() - t0)
    params = [torch.cat([p.detach().flatten() for p in m.parameters()]).tolist() for m in models]
    return {"params": params, "round_seconds": round_seconds, "samples": samples, "load": coder.load}


def run_coded_training(spec: CodedTrainingSpec, n: int, timeout_s: float = 600.0) -> list[dict]:
    """Validate ``spec`` for ``n`` workers (errors raised here, before any process starts) and run it on ``n``
    local gloo processes; returns each rank's :func:`coded_training` result."""
    _validate(spec, n)
    return spawn(coded_training, n, spec, timeout_s=timeout_s)
