"""The workload interface every claim and ``thrifty train`` run builds on.

A workload is a factory ``make(seed, **config) -> Task``. A ``Task`` owns a freshly
initialised model, a deterministic stream of training batches, a loss and a validation
function. ``fit`` trains it with any optimizer and records a ``Curve`` against steps and
against training seconds (``TRAINING_CLOCK``: process CPU time, so that other processes on a shared machine do
not slow one run and not another; evaluation is not timed), and the global l2 and l1
norms of every step's gradient, from which a later run can refine its learning-rate schedule
(``thrifty.schedules.refine_schedule``). Given an adaptive batch-size controller
(``thrifty.batching.AdaptiveBatchSize``), ``fit`` asks the task for batches of the controller's size,
updates it from each step's per-sample gradients and records the batch size of every step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # thrifty.batching's modules may build on the workloads, so fit imports it when it needs it
    from thrifty.batching.adadagrad import AdaptiveBatchSize

__all__ = ["TRAINING_CLOCK", "Curve", "NonFiniteLossError", "Task", "fit"]

# The clock of training time in curves: this process's CPU time over all its threads. Wall clock of runs made one
# after another is meaningless on a shared machine (one run can take ten times another); comparisons of speed
# are made by interleaving (``thrifty.bench.experiment.interleaved_step_seconds``).
TRAINING_CLOCK = time.process_time


class NonFiniteLossError(RuntimeError):
    """A training loss became NaN or infinite; the run stops and is recorded as a failure."""

    def __init__(self, step: int, value: float):
        super().__init__(f"loss became non-finite ({value}) at step {step}; the run was stopped")
        self.step = step
        self.value = value


@dataclass
class Task:
    """A model with its data, loss and validation metrics, ready to be trained.

    ``next_batch()`` returns the next training batch of a stream fixed by the seed (the digits and
    logistic-regression workloads also take ``next_batch(batch_size)``, for adaptive batch sizes);
    ``loss(model, batch)`` returns a scalar tensor; ``evaluate(model)`` returns validation
    metrics, always including ``"val_loss"`` and, for classifiers, ``"val_acc"``.
    """

    name: str
    model: nn.Module
    next_batch: Callable[[], Any]
    loss: Callable[[nn.Module, Any], Tensor]
    evaluate: Callable[[nn.Module], dict[str, float]]
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class Curve:
    """Metrics of one training run: training loss and gradient norms every step, validation every ``eval_every``.

    ``batch_sizes`` holds every step's batch size when an adaptive batch-size controller chose it (else empty).
    """

    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    grad_l1_norms: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)

    def metric(self, name: str) -> list[float]:
        """The validation metric ``name`` at every evaluation."""
        return [e[name] for e in self.evals]

    def final(self, name: str) -> float:
        return self.evals[-1][name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "seconds": self.seconds,
            "train_loss": self.train_loss,
            "eval_steps": self.eval_steps,
            "eval_seconds": self.eval_seconds,
            "evals": self.evals,
            "grad_norms": self.grad_norms,
            "grad_l1_norms": self.grad_l1_norms,
            "batch_sizes": self.batch_sizes,
        }


def _grad_norms(model: nn.Module) -> tuple[Tensor, Tensor]:
    """The global l2 and l1 norms of the model's gradients (one multi-tensor kernel each, no sync)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        zero = torch.zeros(())
        return zero, zero
    l2 = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2)))
    l1 = torch.stack(torch._foreach_norm(grads, 1)).sum()
    return l2, l1


def fit(
    task: Task,
    optimizer: torch.optim.Optimizer,
    steps: int,
    *,
    eval_every: int | None = None,
    scheduler: Any = None,
    on_step: Callable[[int, float], None] | None = None,
    batch_controller: AdaptiveBatchSize | None = None,
) -> Curve:
    """Train ``task.model`` for ``steps`` steps; evaluate at step 0, every ``eval_every``, and at the end.

    With ``batch_controller``, each batch is ``task.next_batch(batch_controller.batch_size)`` and the
    controller is updated from the batch's per-sample gradients (``torch.func.vmap``, timed with the step).
    Raises ``NonFiniteLossError`` as soon as the training loss is NaN or infinite.
    """
    if steps < 1:
        raise ValueError(f"steps must be in [1, inf), got {steps}")
    if batch_controller is not None:
        from thrifty.batching.adadagrad import per_sample_grads
    eval_every = eval_every or max(1, steps // 10)
    curve = Curve()
    model = task.model
    elapsed = 0.0

    def evaluate(step: int) -> None:
        model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in task.evaluate(model).items()}
        model.train()
        curve.eval_steps.append(step)
        curve.eval_seconds.append(elapsed)
        curve.evals.append(metrics)

    evaluate(0)
    model.train()
    for step in range(1, steps + 1):
        batch = task.next_batch() if batch_controller is None else task.next_batch(batch_controller.batch_size)
        start = TRAINING_CLOCK()
        optimizer.zero_grad(set_to_none=True)
        loss = task.loss(model, batch)
        loss.backward()
        l2, l1 = _grad_norms(model)
        rows = None if batch_controller is None else per_sample_grads(model, task.loss, batch)[0]
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        value = float(loss.detach())
        elapsed += TRAINING_CLOCK() - start
        if not math.isfinite(value):
            raise NonFiniteLossError(step, value)
        if batch_controller is not None:
            curve.batch_sizes.append(batch_controller.batch_size)
            batch_controller.update(rows)
        curve.steps.append(step)
        curve.seconds.append(elapsed)
        curve.train_loss.append(value)
        curve.grad_norms.append(float(l2))
        curve.grad_l1_norms.append(float(l1))
        if on_step is not None:
            on_step(step, value)
        if step % eval_every == 0 or step == steps:
            evaluate(step)
    return curve
