"""Byzantine peers for MoNNA experiments: what they send, and a peer that takes part in the exchange.

An attack maps the honest peers' models, stacked as rows ``(h, d)``, to the one vector every Byzantine peer sends
(the official code's attacks also send ``f`` copies of one vector). They follow the official
``robust-collaborative-learning`` attacks, applied to models as in its ``peerToPeer.py``:

* ``SignFlip``: ``-mean(honest)`` (``attacks/signflipping.py``).
* ``LargeNorm``: a random Gaussian direction scaled to ``scale`` times the largest honest norm (a crude outlier that
  plain averaging cannot absorb).
* ``Mimic``: a copy of honest peer ``target`` (``attacks/mimic.py``: the first honest worker), which over-weights
  one peer's data under heterogeneity.
* ``ALIE`` ("A Little Is Enough", Baruch et al. 2019): ``mean + factor * std`` coordinate-wise, std over the honest
  rows (``attacks/identical.py::little``).
* ``FOE`` ("Fall of Empires", Xie et al. 2019): ``mean + factor * (-mean)`` (``attacks/identical.py::empire``).

The attack aimed at the defence is ALIE or FOE with ``factor=None``: as the official ``make_attack`` with its default
``factor=-16``, the factor is line-searched (16 evaluations of ``line_maximize``) to maximise the squared distance
between the honest mean and the average over honest peers of what each one's aggregation rule outputs, knowing the
rule and ``f``; against NNA this places the Byzantine models as far out as they can go while staying inside the
honest neighbourhoods.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import torch
from torch import Tensor

from thrifty.distributed.aggregators import AGGREGATORS, nna_many
from thrifty.distributed.monna import (
    agree_on_settings,
    check_byzantine_bound,
    exchange,
    protocol_settings,
    rank_and_size,
)

__all__ = [
    "ALIE",
    "ATTACKS",
    "FOE",
    "Attack",
    "ByzantinePeer",
    "LargeNorm",
    "Mimic",
    "SignFlip",
    "alie_z",
    "attack_damage",
    "line_maximize",
    "make_attack",
]


def _honest(honest: Tensor) -> Tensor:
    if not isinstance(honest, Tensor) or honest.dim() != 2 or honest.shape[0] < 1:
        shape = tuple(honest.shape) if isinstance(honest, Tensor) else type(honest).__name__
        raise ValueError(f"honest must be a 2-D tensor (peers, dim) with at least one row, got {shape}")
    return honest


def line_maximize(
    score: Callable[[float], float], evals: int = 16, start: float = 0.0, delta: float = 1.0, ratio: float = 0.8
) -> float:
    """Best-effort arg-max of ``score`` over ``x >= 0`` in ``evals`` evaluations (official ``tools.line_maximize``).

    Expansion: step ``delta`` from the best point, doubling ``delta`` while the score improves; contraction: probe
    ``delta`` to the side of the best point, shrinking ``delta`` by ``ratio`` after each probe.
    """
    if evals < 1:
        raise ValueError(f"evals must be a positive integer, got {evals!r}")
    best_x, best_y = start, score(start)
    evals -= 1
    prop_x = best_x
    while evals > 0:
        prop_x = best_x + delta
        prop_y = score(prop_x)
        evals -= 1
        if prop_y > best_y:
            best_x, best_y = prop_x, prop_y
            delta *= 2
        else:
            delta *= ratio
            break
    while evals > 0:
        if prop_x < best_x:
            prop_x += delta
        else:
            x = prop_x - delta
            while x < 0:
                x = (x + prop_x) / 2
            prop_x = x
        prop_y = score(prop_x)
        evals -= 1
        if prop_y > best_y:
            best_x, best_y = prop_x, prop_y
        delta *= ratio
    return best_x


def attack_damage(honest: Tensor, byzantine: Tensor, num_byzantine: int, aggregator: str, f: int) -> float:
    """``||mean_i rule_i(honest + byzantine copies) - mean(honest)||^2`` over honest pivots ``i`` (what the
    official attacks maximise in the peer-to-peer setting); ``aggregator`` names a rule of ``AGGREGATORS``."""
    received = torch.cat([honest, byzantine.expand(num_byzantine, -1)])
    if aggregator == "nna":
        output = nna_many(received, f, range(honest.shape[0])).mean(dim=0)
    else:  # the other rules ignore the pivot
        output = AGGREGATORS[aggregator](received, f, 0)
    return float((output - honest.mean(dim=0)).square().sum())


class Attack:
    """What a Byzantine peer sends, given the honest models; ``aggregator`` (a name of ``AGGREGATORS``) and ``f``
    describe the honest defence, ``num_byzantine`` how many copies of the vector the honest peers receive."""

    def __call__(self, honest: Tensor, *, aggregator: str, f: int, num_byzantine: int) -> Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class SignFlip(Attack):
    """``-mean(honest)``."""

    def __call__(self, honest: Tensor, **_: Any) -> Tensor:
        return -_honest(honest).mean(dim=0)


@dataclass
class LargeNorm(Attack):
    """A fresh Gaussian direction each call, scaled to ``scale * max_i ||honest_i||`` (``scale`` when all are 0)."""

    scale: float = 100.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale!r}")
        self._generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, honest: Tensor, **_: Any) -> Tensor:
        honest = _honest(honest)
        direction = torch.randn(honest.shape[1], generator=self._generator, dtype=honest.dtype).to(honest.device)
        largest = float(torch.linalg.vector_norm(honest, dim=1).max())
        return direction * (self.scale * (largest if largest > 0 else 1.0) / float(direction.norm()))


@dataclass(frozen=True)
class Mimic(Attack):
    """A copy of honest peer ``target`` (its row in the honest stack)."""

    target: int = 0

    def __call__(self, honest: Tensor, **_: Any) -> Tensor:
        honest = _honest(honest)
        if not 0 <= self.target < honest.shape[0]:
            raise ValueError(f"target must index one of the {honest.shape[0]} honest peers, got {self.target}")
        return honest[self.target].clone()


def alie_z(n: int, f: int) -> float:
    """Baruch et al.'s largest undetected deviation: ``z = Phi^-1((n - s) / n)`` with ``s = floor(n/2 + 1) - f``."""
    check_byzantine_bound(f, n)
    s = n // 2 + 1 - f
    return NormalDist().inv_cdf((n - s) / n)


@dataclass(frozen=True)
class _Directional(Attack):
    """``mean + factor * direction(honest)``; ``factor=None`` line-searches it against the defence."""

    factor: float | None = None
    evals: int = 16

    def direction(self, honest: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, honest: Tensor, *, aggregator: str, f: int, num_byzantine: int) -> Tensor:
        honest = _honest(honest)
        center, direction = honest.mean(dim=0), self.direction(honest)
        factor = self.factor
        if factor is None:
            factor = line_maximize(
                lambda x: attack_damage(honest, center + x * direction, num_byzantine, aggregator, f), self.evals
            )
        return center + factor * direction


@dataclass(frozen=True)
class ALIE(_Directional):
    """``mean + factor * std`` (coordinate-wise std over honest peers, unbiased; 0 for one peer)."""

    def direction(self, honest: Tensor) -> Tensor:
        if honest.shape[0] == 1:
            return torch.zeros_like(honest[0])
        return honest.var(dim=0).sqrt()


@dataclass(frozen=True)
class FOE(_Directional):
    """``mean - factor * mean`` (inner-product manipulation)."""

    def direction(self, honest: Tensor) -> Tensor:
        return -honest.mean(dim=0)


ATTACKS: dict[str, Callable[..., Attack]] = {
    "sign_flip": SignFlip,
    "large_norm": LargeNorm,
    "mimic": Mimic,
    "alie": ALIE,
    "foe": FOE,
}


def make_attack(name: str, **options: Any) -> Attack:
    """An attack by name (``ATTACKS``) with its options, e.g. ``make_attack("alie", factor=None)``."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; valid attacks: {', '.join(ATTACKS)}")
    return ATTACKS[name](**options)


class ByzantinePeer:
    """A simulated Byzantine rank in a MoNNA run: it follows the honest peers' collectives and sends ``attack``'s
    vector instead of a model.

    ``byzantine_ranks`` are the colluding ranks (group ranks), so the others are honest; ``initial`` is the flattened
    initial model (what the peers start from). With ``rushing`` (which every rank must share) the attack sees the
    honest half-step models of the current step; without it, those of the previous step (the initial model at the
    first step). ``f`` and ``aggregator`` must match the honest peers': they are part of the settings checked at
    construction, and the attack uses them to aim at the defence.
    """

    def __init__(
        self,
        attack: Attack,
        initial: Tensor,
        f: int,
        byzantine_ranks: Sequence[int],
        *,
        aggregator: str = "nna",
        group: Any = None,
        rushing: bool = False,
    ):
        rank, world_size = rank_and_size(group)
        check_byzantine_bound(f, world_size)
        byzantine = sorted(set(byzantine_ranks))
        if rank not in byzantine or not all(0 <= r < world_size for r in byzantine):
            raise ValueError(f"byzantine_ranks must be group ranks that include this rank {rank}, got {byzantine}")
        if aggregator not in AGGREGATORS:
            raise ValueError(f"aggregator must be one of {', '.join(AGGREGATORS)}, got {aggregator!r}")
        if initial.dim() != 1 or not initial.is_floating_point():
            raise ValueError(f"initial must be a flat floating-point model vector, got shape {tuple(initial.shape)}")
        self.attack, self.f, self.aggregator, self.group, self.rushing = attack, f, aggregator, group, bool(rushing)
        self.honest_ranks = [r for r in range(world_size) if r not in byzantine]
        self.num_byzantine = len(byzantine)
        self._honest_models = initial.detach().reshape(1, -1).clone()
        agree_on_settings(
            protocol_settings(f, initial.numel(), initial.dtype, aggregator, self.rushing), group, initial.device
        )

    def step(self) -> Tensor:
        """Take part in one MoNNA step; returns the vector sent."""
        if self.rushing:  # the honest peers' first all-gather: see this step's honest models before sending
            self._honest_models = exchange(torch.zeros_like(self._honest_models[0]), self.group)[self.honest_ranks]
        vector = self.attack(
            self._honest_models, aggregator=self.aggregator, f=self.f, num_byzantine=self.num_byzantine
        ).to(self._honest_models.dtype)
        self._honest_models = exchange(vector, self.group)[self.honest_ranks]
        return vector

    def __repr__(self) -> str:
        return f"ByzantinePeer({self.attack!r}, f={self.f}, aggregator={self.aggregator!r}, rushing={self.rushing})"
