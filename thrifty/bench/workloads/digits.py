"""Classifiers on the 8x8 digits: an MLP and a small CNN, trained on mini-batches of a fixed split.

Both models read flat 64-pixel rows, so they share one batch stream per seed. The seed fixes the
initial weights and the batch order through two local ``torch.Generator`` objects (the batch
generator is seeded by the first draw of the init one, so changing the model's width leaves the
batch order unchanged); the global RNG is never used. Weights and batch indices are drawn on the
CPU whatever the ``device``, so a seed gives the same run on any device; the model and the data
then live on ``device``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thrifty.bench.workloads.base import Task
from thrifty.data.digits import NUM_CLASSES, NUM_FEATURES, load_digits_split

__all__ = ["DigitsBatches", "build_seeded", "classification_task", "make_cnn", "make_mlp"]


def build_seeded(factory: Callable[[], nn.Module], generator: torch.Generator) -> nn.Module:
    """``factory()`` with PyTorch's default Linear/Conv init drawn from ``generator``.

    The module is built on the meta device first so its constructor consumes no global randomness;
    every weight and bias is then drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the distribution of
    ``nn.Linear``/``nn.Conv2d.reset_parameters``. Batch norm layers take their deterministic defaults
    (weight 1, bias 0, running mean 0 and variance 1).
    """
    with torch.device("meta"):
        model = factory()
    model.to_empty(device="cpu")
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            bound = 1.0 / math.sqrt(module.weight[0].numel())
            nn.init.uniform_(module.weight, -bound, bound, generator=generator)
            if module.bias is not None:
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
        elif isinstance(module, nn.modules.batchnorm._NormBase):
            module.reset_parameters()
        elif any(True for _ in module.parameters(recurse=False)):
            raise TypeError(f"build_seeded has no init rule for {type(module).__name__}")
    return model


class DigitsBatches:
    """Mini-batches of the digits training split in reshuffled epochs; the incomplete tail is dropped.

    The order is drawn on the CPU from ``generator``; each batch's indices then move to the data's device.
    A call may ask for another size (``batch_size``, as an adaptive batch-size controller does); without
    it the stream is the fixed-size one.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, generator: torch.Generator):
        if not 1 <= batch_size <= len(x):
            raise ValueError(f"batch_size must be in [1, {len(x)}], got {batch_size}")
        self.x, self.y, self.batch_size, self.generator = x, y, batch_size, generator
        self._order = torch.empty(0, dtype=torch.int64)

    def __call__(self, batch_size: int | None = None) -> tuple[Tensor, Tensor]:
        size = self.batch_size if batch_size is None else batch_size
        if not 1 <= size <= len(self.x):
            raise ValueError(f"batch_size must be in [1, {len(self.x)}], got {size}")
        if len(self._order) < size:
            self._order = torch.randperm(len(self.x), generator=self.generator)
        idx, self._order = self._order[:size], self._order[size:]
        idx = idx.to(self.x.device, non_blocking=True)
        return self.x[idx], self.y[idx]


def _cross_entropy(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def classification_task(
    name: str,
    factory: Callable[[], nn.Module],
    seed: int,
    batch_size: int,
    config: dict[str, object],
    loss: Callable[[nn.Module, tuple[Tensor, Tensor]], Tensor] = _cross_entropy,
    device: str | torch.device = "cpu",
) -> Task:
    """A digits ``Task``: seeded init and batches, metrics ``val_loss`` (cross-entropy) and ``val_acc``.

    The weights are drawn on the CPU, then the model and both splits move to ``device``.
    """
    device = torch.device(device)
    x_train, y_train, x_val, y_val = (t.to(device) for t in load_digits_split())
    generator = torch.Generator().manual_seed(seed)
    data_generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
    model = build_seeded(factory, generator).to(device)

    @torch.no_grad()
    def evaluate(m: nn.Module) -> dict[str, float]:
        logits = m(x_val)
        return {
            "val_loss": float(F.cross_entropy(logits, y_val)),
            "val_acc": float((logits.argmax(dim=1) == y_val).float().mean()),
        }

    return Task(
        name=name,
        model=model,
        next_batch=DigitsBatches(x_train, y_train, batch_size, data_generator),
        loss=loss,
        evaluate=evaluate,
        config={"seed": seed, "batch_size": batch_size, **config, "device": str(device)},
    )


def make_mlp(seed: int = 0, *, hidden: int = 128, batch_size: int = 64, device: str | torch.device = "cpu") -> Task:
    """``digits_mlp``: 64 -> ``hidden`` -> 10 with ReLU, cross-entropy on batches of ``batch_size``."""

    def factory() -> nn.Module:
        return nn.Sequential(nn.Linear(NUM_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, NUM_CLASSES))

    return classification_task("digits_mlp", factory, seed, batch_size, {"hidden": hidden}, device=device)


def make_cnn(
    seed: int = 0, *, width: int = 16, batch_size: int = 64, bn: bool = False, device: str | torch.device = "cpu"
) -> Task:
    """``digits_cnn``: conv(1->w) ReLU conv(w->2w) ReLU maxpool2 linear(2w*16 -> 10), 3x3 convs, pad 1.

    ``bn=True`` puts a ``BatchNorm2d`` after each convolution (before its ReLU); the config then records it.
    """

    def norm(channels: int) -> list[nn.Module]:
        return [nn.BatchNorm2d(channels)] if bn else []

    def factory() -> nn.Module:
        return nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, width, 3, padding=1),
            *norm(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            *norm(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * 16, NUM_CLASSES),
        )

    config: dict[str, object] = {"width": width} | ({"bn": True} if bn else {})
    return classification_task("digits_cnn", factory, seed, batch_size, config, device=device)
