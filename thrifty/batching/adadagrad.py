"""Adaptive batch sizes for AdaGrad and AdaGrad-Norm: AdAdaGrad and AdAdaGrad-Norm.

Paper: T. T.-K. Lau, H. Liu, M. Kolar, "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient
Methods", arXiv:2402.11215. No official code was released. The batch size grows by the adaptive-sampling
tests of Bollapragada, Byrd and Nocedal ("Adaptive Sampling Strategies for Stochastic Optimization",
2018) while the model steps with AdaGrad (``AdAdaGrad``, with the paper's coordinate-wise test) or
AdaGrad-Norm (``AdAdaGradNorm``, with the norm test); the optimizers are ``thrifty.optim.AdaGrad`` and
``thrifty.optim.AdaGradNorm``.

At step k, with the per-sample gradients ``g_i`` (i = 1..b) of the batch of size ``b = b_k`` and their
mean ``g``, the tests estimate the sample variances (divisor ``b - 1``) and ask for a batch size::

    norm test:           Var = sum_i ||g_i - g||^2 / (b - 1)            b* = Var / (eta^2 ||g||^2)
    inner-product test:  Var_ip = sum_i (<g_i, g> - ||g||^2)^2 / (b - 1) b_ip = Var_ip / (theta^2 ||g||^4)
    orthogonality test:  Var_o = sum_i ||g_i - <g_i, g> g / ||g||^2||^2 / (b - 1)
                                                                       b_o = Var_o / (nu^2 ||g||^2)
    augmented inner-product test:  b* = max(b_ip, b_o)
    coordinate-wise test: Var_j = sum_i (g_ij - g_j)^2 / (b - 1)       b* = max_j Var_j / (eta^2 g_j^2)

A test passes when ``b* <= b`` (for the norm test: ``Var / b <= eta^2 ||g||^2``). The next batch size is
``b_{k+1} = min(max_batch_size, max(b_k, ceil(b*)))``: it never decreases and stays at the cap. A zero
mean gradient with non-zero variance asks for an infinite batch, that is, the cap. The coordinate-wise
test can take a quantile of the per-coordinate sizes instead of their maximum (``coordinate_quantile``).

Micro-batches (as workers' gradients in data-parallel training) instead of single samples: each row is
the mean gradient of ``m`` samples, whose variance is ``1/m`` times the per-sample variance, so the
estimate of ``b*`` is multiplied by ``m`` (``micro_batch_size=m``).

What was checked against the paper: its title, abstract and the names of the methods and tests (norm
test, augmented inner-product test, coordinate-wise test for AdaGrad). Its body text could not be read
here, so the formulas above follow the project's card [recalled] and Bollapragada et al.'s tests; the
defaults ``theta=0.9`` and ``nu=tan(80 deg)=5.84`` are the values recalled from Bollapragada et al.

Example: the user's loop is a sampler in a DataLoader and one ``step`` call per batch::

    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from thrifty.batching import AdAdaGradNorm
    from thrifty.data import load_digits_split

    x, y, x_val, y_val = load_digits_split()
    model = torch.nn.Linear(64, 10)
    loss_fn = lambda m, batch: torch.nn.functional.cross_entropy(m(batch[0]), batch[1])
    opt = AdAdaGradNorm(model, loss_fn, lr=0.5, batch_size=16, max_batch_size=1024, eta=0.5)
    loader = DataLoader(TensorDataset(x, y), batch_sampler=opt.sampler(len(x)))
    for epoch in range(5):
        for batch in loader:
            loss = opt.step(batch)  # per-sample gradients, an AdaGrad-Norm step, the next batch size
    print(opt.batch_size, opt.controller.history[:10])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap
from torch.utils.data import Sampler

from thrifty.optim.adagrad import AdaGrad, AdaGradNorm

__all__ = [
    "TESTS",
    "AdAdaGrad",
    "AdAdaGradNorm",
    "AdaptiveBatchSampler",
    "AdaptiveBatchSize",
    "micro_batch_grads",
    "per_sample_grads",
]

TESTS: tuple[str, ...] = ("norm", "inner_product", "coordinate")

LossFn = Callable[[nn.Module, Any], Tensor]


class _Loss(nn.Module):
    """``loss_fn(model, batch)`` as a module, so ``functional_call`` can swap the model's parameters."""

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> Tensor:
        return self.loss_fn(self.model, batch)


def per_sample_grads(model: nn.Module, loss_fn: LossFn, batch: Any) -> tuple[Tensor, Tensor]:
    """The per-sample gradients of ``loss_fn(model, batch)`` as a ``(b, d)`` matrix, and the mean loss.

    ``batch`` is a tensor or a tuple/list of tensors whose first dimension indexes samples; each sample is
    passed to ``loss_fn`` as a batch of one (``torch.func.vmap`` over ``torch.func.grad``). Row ``i``
    concatenates the flattened gradients of the trainable parameters, in ``model.parameters()`` order.
    """
    wrapper = _Loss(model, loss_fn)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    params = {f"model.{name}": p.detach() for name, p in model.named_parameters() if p.requires_grad}

    def one(values: dict[str, Tensor], sample: Any) -> Tensor:
        return functional_call(wrapper, values, (_unsqueeze(sample),))

    grads, losses = vmap(grad_and_value(one), in_dims=(None, 0))(params, batch)
    rows = torch.cat([grads[f"model.{name}"].flatten(1) for name in names], dim=1)
    return rows, losses.mean()


def micro_batch_grads(model: nn.Module, loss_fn: LossFn, batch: Any, micro_batch_size: int) -> tuple[Tensor, Tensor]:
    """The mean gradients of consecutive micro-batches of ``micro_batch_size`` samples, ``(n, d)``, and the mean loss.

    The batch size must be a multiple of ``micro_batch_size``; pass the same ``micro_batch_size`` to
    ``AdaptiveBatchSize.update``.
    """
    tensors = list(batch) if isinstance(batch, tuple | list) else [batch]
    size = len(tensors[0])
    if micro_batch_size < 1 or size % micro_batch_size:
        raise ValueError(f"micro_batch_size must divide the batch size {size}, got {micro_batch_size}")
    params = [p for p in model.parameters() if p.requires_grad]
    rows, losses = [], []
    for start in range(0, size, micro_batch_size):
        chunk = [t[start : start + micro_batch_size] for t in tensors]
        loss = loss_fn(model, type(batch)(chunk) if isinstance(batch, tuple | list) else chunk[0])
        rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
        losses.append(loss.detach())
    return torch.stack(rows), torch.stack(losses).mean()


def _unsqueeze(sample: Any) -> Any:
    """One sample (a tensor, or a tuple/list of them) as a batch of one."""
    if isinstance(sample, tuple | list):
        return type(sample)(t.unsqueeze(0) for t in sample)
    return sample.unsqueeze(0)


class AdaptiveBatchSize:
    """The batch-size controller: from one step's per-sample gradients, the next (non-decreasing) batch size.

    Args:
        batch_size: the starting batch size ``b_0``.
        max_batch_size: the cap; it must be at least ``batch_size``.
        test: ``"norm"``, ``"inner_product"`` (the augmented inner-product test) or ``"coordinate"``.
        eta: the norm test's (and the coordinate-wise test's) tolerance.
        theta, nu: the inner-product and orthogonality tolerances of the augmented inner-product test.
        coordinate_quantile: the coordinate-wise test takes this quantile of the per-coordinate sizes
            (1.0, the default, is their maximum, the test on every coordinate).

    ``history`` holds the batch size of every step so far, then the next one (``history[-1] == batch_size``).
    """

    def __init__(
        self,
        batch_size: int,
        max_batch_size: int,
        *,
        test: str = "norm",
        eta: float = 0.5,
        theta: float = 0.9,
        nu: float = 5.84,
        coordinate_quantile: float = 1.0,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int):
            raise ValueError(f"max_batch_size must be an integer, got {max_batch_size!r}")
        if max_batch_size < batch_size:
            raise ValueError(
                f"max_batch_size ({max_batch_size}) is below the starting batch_size ({batch_size}); "
                "the cap must be at least the starting batch size"
            )
        if test not in TESTS:
            raise ValueError(f"test must be one of {', '.join(TESTS)}, got {test!r}")
        for name, value in (("eta", eta), ("theta", theta), ("nu", nu)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be in (0, inf), got {value}")
        if not 0 < coordinate_quantile <= 1:
            raise ValueError(f"coordinate_quantile must be in (0, 1], got {coordinate_quantile}")
        self.max_batch_size = max_batch_size
        self.test = test
        self.eta, self.theta, self.nu = eta, theta, nu
        self.coordinate_quantile = coordinate_quantile
        self.history: list[int] = [batch_size]

    @property
    def batch_size(self) -> int:
        """The batch size of the next step."""
        return self.history[-1]

    def required_batch_size(self, grads: Tensor, micro_batch_size: int = 1) -> float:
        """The batch size ``b*`` the test asks for, unrounded (``inf`` for a zero mean with non-zero variance).

        ``grads`` is ``(n, d)``: one row per sample, or per micro-batch of ``micro_batch_size`` samples.
        """
        if not isinstance(grads, Tensor) or grads.dim() != 2:
            raise ValueError(f"grads must be a 2-D tensor (one row per sample), got {_describe(grads)}")
        n = grads.shape[0]
        if n < 2:
            raise ValueError(f"the variance needs at least 2 gradient rows, got {n}")
        if micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be positive, got {micro_batch_size}")
        g = grads.detach().to(torch.float64)
        if not torch.isfinite(g).all():
            raise ValueError("grads contain NaN or infinite values")
        mean = g.mean(dim=0)
        sq = float(mean.square().sum())
        if self.test == "norm":
            variance = float((g - mean).square().sum()) / (n - 1)
            required = _ratio(variance, self.eta**2 * sq)
        elif self.test == "inner_product":
            dots = g @ mean
            var_ip = float((dots - sq).square().sum()) / (n - 1)
            if sq > 0:
                var_o = float((g - dots[:, None] / sq * mean).square().sum()) / (n - 1)
            else:
                var_o = float(g.square().sum()) / (n - 1)
            required = max(_ratio(var_ip, self.theta**2 * sq**2), _ratio(var_o, self.nu**2 * sq))
        else:
            var_j = (g - mean).square().sum(dim=0) / (n - 1)
            denominator = self.eta**2 * mean.square()
            per_coordinate = torch.where(
                var_j == 0, torch.zeros_like(var_j), var_j / denominator
            )  # var_j > 0 over a zero mean gives inf
            k = max(1, math.ceil(self.coordinate_quantile * per_coordinate.numel()))
            required = float(per_coordinate.kthvalue(k).values)
        return micro_batch_size * required

    def update(self, grads: Tensor, micro_batch_size: int = 1) -> int:
        """Run the test on this step's gradients, record and return the next batch size."""
        required = self.required_batch_size(grads, micro_batch_size)
        wanted = self.max_batch_size if required >= self.max_batch_size else math.ceil(required)
        self.history.append(min(self.max_batch_size, max(self.batch_size, wanted)))
        return self.batch_size

    def sampler(
        self, num_samples: int, *, generator: torch.Generator | None = None, drop_last: bool = False
    ) -> AdaptiveBatchSampler:
        """A batch sampler over ``range(num_samples)`` whose batches have this controller's current size."""
        return AdaptiveBatchSampler(self, num_samples, generator=generator, drop_last=drop_last)


def _ratio(numerator: float, denominator: float) -> float:
    if numerator == 0:
        return 0.0
    return numerator / denominator if denominator > 0 else math.inf


def _describe(value: object) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__


class AdaptiveBatchSampler(Sampler[list[int]]):
    """Index lists over one reshuffled pass of ``range(num_samples)``, each as long as the controller asks.

    The size is read when each batch is drawn, so a ``DataLoader(dataset, batch_sampler=sampler)`` with
    ``num_workers=0`` follows every update; with workers, batches prefetched ahead lag behind it. A batch
    is capped by what is left of the pass; ``drop_last`` drops a last batch shorter than asked.
    """

    def __init__(
        self,
        controller: AdaptiveBatchSize,
        num_samples: int,
        *,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        self.controller = controller
        self.num_samples = num_samples
        self.generator = generator
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.num_samples, generator=self.generator).tolist()
        start = 0
        while start < self.num_samples:
            size = self.controller.batch_size
            batch = order[start : start + size]
            if len(batch) < size and self.drop_last:
                return
            start += size
            yield batch


class AdAdaGrad:
    """AdaGrad with the coordinate-wise adaptive batch-size test: one ``step(batch)`` per batch.

    ``step`` computes the batch's per-sample gradients (``per_sample_grads``), steps the optimizer with
    their mean (the batch gradient) and updates the controller, whose ``batch_size`` the next batch
    should have; ``sampler`` gives a DataLoader batch sampler that follows it.

    Args:
        model: the module to train; every trainable parameter goes to the optimizer.
        loss_fn: ``loss_fn(model, batch) -> scalar`` mean loss; ``batch``'s tensors index samples first.
        lr, initial_accumulator_value, eps, weight_decay: the optimizer's options.
        batch_size, max_batch_size, test, eta, theta, nu, coordinate_quantile: the controller's options
            (``test`` defaults to ``"coordinate"`` here and to ``"norm"`` in ``AdAdaGradNorm``).
    """

    optimizer_class: type[torch.optim.Optimizer] = AdaGrad
    default_test = "coordinate"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        *,
        lr: float = 1e-2,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        weight_decay: float = 0.0,
        batch_size: int = 16,
        max_batch_size: int = 1024,
        test: str | None = None,
        eta: float = 0.5,
        theta: float = 0.9,
        nu: float = 5.84,
        coordinate_quantile: float = 1.0,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.controller = AdaptiveBatchSize(
            batch_size,
            max_batch_size,
            test=test or self.default_test,
            eta=eta,
            theta=theta,
            nu=nu,
            coordinate_quantile=coordinate_quantile,
        )
        self.optimizer = self.optimizer_class(
            [p for p in model.parameters() if p.requires_grad],
            lr=lr,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            weight_decay=weight_decay,
        )

    @property
    def batch_size(self) -> int:
        """The size the next batch should have."""
        return self.controller.batch_size

    def sampler(
        self, num_samples: int, *, generator: torch.Generator | None = None, drop_last: bool = False
    ) -> AdaptiveBatchSampler:
        """A DataLoader batch sampler over ``range(num_samples)`` that follows the controller."""
        return self.controller.sampler(num_samples, generator=generator, drop_last=drop_last)

    def step(self, batch: Any) -> float:
        """One step on ``batch``: set the gradients, step the optimizer, update the batch size; returns the loss."""
        rows, loss = per_sample_grads(self.model, self.loss_fn, batch)
        offset = 0
        mean = rows.mean(dim=0)
        for p in self.model.parameters():
            if p.requires_grad:
                p.grad = mean[offset : offset + p.numel()].view_as(p).to(p.dtype).clone()
                offset += p.numel()
        self.optimizer.step()
        self.controller.update(rows)
        return float(loss)


class AdAdaGradNorm(AdAdaGrad):
    """AdaGrad-Norm (one scalar step size) with the norm test: the paper's AdAdaGrad-Norm."""

    optimizer_class = AdaGradNorm
    default_test = "norm"
