"""A multi-block bilevel problem with quadratic lower levels: multi-task learning of per-feature ridge weights.

Block ``i`` is a linear-regression task with training data ``(A_i, b_i)`` and validation data ``(A'_i, b'_i)``.
The upper variable ``x`` holds one log regularization weight per feature, shared by all ``m`` tasks:

    g_i(x, y) = (1/2n) |A_i y - b_i|^2 + (1/2) sum_k exp(x_k) y_k^2        (lower: ridge fit of task i)
    f_i(x, y) = (1/2n') |A'_i y - b'_i|^2                                  (upper: validation loss)

so ``y_i*(x) = H_i(x)^{-1} A_i^T b_i / n`` with ``H_i(x) = A_i^T A_i / n + diag(exp(x))``, and the hypergradient
is closed form: ``grad F(x) = -(1/m) sum_i diag(exp(x) * y_i*) H_i^{-1} grad_y f_i(y_i*)``. The stochastic
objectives average over mini-batches of rows, so the Hessians seen by a method are noisy too. This is the
"hyperparameter optimization" workload family of BSVRB (arXiv 2305.18730) made exactly solvable; it is not a
``Task`` of the workload registry (a bilevel method does not train one model), claims build it directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MultiBlockRidge", "make_multiblock_ridge"]


@dataclass(frozen=True)
class MultiBlockRidge:
    """The data of the ``m`` tasks (float64): ``a_train`` (m, n, d), ``b_train`` (m, n), and the validation twins."""

    a_train: Tensor
    b_train: Tensor
    a_val: Tensor
    b_val: Tensor

    @property
    def num_blocks(self) -> int:
        return self.a_train.shape[0]

    @property
    def dim(self) -> int:
        return self.a_train.shape[2]

    def f(self, i: int) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
        """Block ``i``'s upper objective on the validation rows ``batch`` (all rows when ``None``)."""

        def f_i(x: Tensor, y: Tensor, batch: Tensor | None) -> Tensor:
            a, b = (self.a_val[i], self.b_val[i]) if batch is None else (self.a_val[i, batch], self.b_val[i, batch])
            return 0.5 * (a @ y - b).square().mean()

        return f_i

    def g(self, i: int) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
        """Block ``i``'s lower objective on the training rows ``batch`` (all rows when ``None``)."""

        def g_i(x: Tensor, y: Tensor, batch: Tensor | None) -> Tensor:
            if batch is None:
                a, b = self.a_train[i], self.b_train[i]
            else:
                a, b = self.a_train[i, batch], self.b_train[i, batch]
            return 0.5 * (a @ y - b).square().mean() + 0.5 * (x.exp() * y.square()).sum()

        return g_i

    def lower_hessians(self, x: Tensor) -> Tensor:
        """``H_i(x)`` for every block, shape (m, d, d)."""
        n = self.a_train.shape[1]
        return self.a_train.mT @ self.a_train / n + torch.diag_embed(x.exp()).expand(self.num_blocks, -1, -1)

    def lower_solutions(self, x: Tensor) -> Tensor:
        """``y_i*(x)`` for every block, shape (m, d), by an explicit solve (differentiable in ``x``)."""
        n = self.a_train.shape[1]
        rhs = (self.a_train.mT @ self.b_train.unsqueeze(-1)).squeeze(-1) / n
        return torch.linalg.solve(self.lower_hessians(x), rhs)

    def objective(self, x: Tensor) -> Tensor:
        """``F(x) = (1/m) sum_i f_i(x, y_i*(x))`` on all validation rows."""
        y = self.lower_solutions(x)
        residual = (self.a_val @ y.unsqueeze(-1)).squeeze(-1) - self.b_val
        return 0.5 * residual.square().mean(dim=1).mean()

    def hypergradient(self, x: Tensor) -> Tensor:
        """The closed-form ``grad F(x)`` (no autograd)."""
        y = self.lower_solutions(x)
        n_val = self.a_val.shape[1]
        residual = (self.a_val @ y.unsqueeze(-1)).squeeze(-1) - self.b_val
        grad_y_f = (self.a_val.mT @ residual.unsqueeze(-1)).squeeze(-1) / n_val
        v = torch.linalg.solve(self.lower_hessians(x), grad_y_f)
        return -(x.exp() * y * v).mean(dim=0)

    def sampler(self, batch_size: int, generator: torch.Generator) -> Callable[[int], tuple[Tensor, Tensor]]:
        """``batch_for(i)``: random validation and training rows of block ``i`` (``batch_size`` each)."""
        n_val, n_train = self.a_val.shape[1], self.a_train.shape[1]

        def batch_for(i: int) -> tuple[Tensor, Tensor]:
            return (
                torch.randint(n_val, (batch_size,), generator=generator),
                torch.randint(n_train, (batch_size,), generator=generator),
            )

        return batch_for


def make_multiblock_ridge(
    num_blocks: int = 50, dim: int = 10, n_train: int = 50, n_val: int = 50, noise: float = 0.5, seed: int = 0
) -> MultiBlockRidge:
    """``num_blocks`` regression tasks in ``dim`` features; only the first half of the features carry signal
    (each task's weights are a shared vector plus a task-specific perturbation), so the best regularization
    differs per feature."""
    if min(num_blocks, dim, n_train, n_val) < 1:
        raise ValueError("num_blocks, dim, n_train and n_val must be positive")
    gen = torch.Generator().manual_seed(seed)
    mask = (torch.arange(dim) < (dim + 1) // 2).double()
    shared = torch.randn(dim, generator=gen, dtype=torch.float64) * mask
    weights = shared + 0.3 * torch.randn(num_blocks, dim, generator=gen, dtype=torch.float64) * mask

    def data(n: int) -> tuple[Tensor, Tensor]:
        a = torch.randn(num_blocks, n, dim, generator=gen, dtype=torch.float64)
        noise_draw = torch.randn(num_blocks, n, generator=gen, dtype=torch.float64)
        b = (a @ weights.unsqueeze(-1)).squeeze(-1) + noise * noise_draw
        return a, b

    a_train, b_train = data(n_train)
    a_val, b_val = data(n_val)
    return MultiBlockRidge(a_train, b_train, a_val, b_val)
