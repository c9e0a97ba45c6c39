"""AutoDiffusion: training-free search of time steps (and skipped blocks) (Li et al., ICCV 2023, arXiv 2309.10438).

A candidate is a set of K time steps, optionally with a per-step set of skipped blocks. Its fitness is an FID-like
distance between samples generated with it and reference data (lower is better). The evolutionary search follows the
official ``search_imagenet64_classifier_guidance.py`` (defaults of its ImageNet-64 4-step script): population 50,
``select_num`` 10 parents kept as the top-k of everything evaluated so far, then per epoch 25 mutants (each gene
replaced by an unused value with probability ``m_prob`` 0.25), 15 crossovers (each gene from either parent with
probability 1/2) and random candidates to refill the population; 10 epochs; each candidate evaluated once
(``vis_dict``). The initial population (``use_ddim_init_x``) holds the uniform (DDIM) candidate, ``population / 2 + 1``
random candidates and mutants of the uniform one with probability 0.1.

Conventions here: times come from a search space of ``resolution`` levels ``t = k / resolution`` (k = 1 ..
resolution - 1); the first time is pinned to t = 1 (pure noise, where flows start) and the K - 1 interior times are
searched, so a candidate's grid is ``[1, t_1 > ... > t_{K-1}, 0]``: K denoiser evaluations with the Euler/DDIM step.
``fitness`` is any callable ``samples -> float`` (``swd_fitness``, ``digits_fd_fitness``); the sample noise is fixed
for the whole search, so held-out evaluation must use fresh noise and fresh reference data.

Block skipping (the paper's architecture half, searched after the time steps as in its two-stage variant):
``SkipPlanDenoiser(denoiser, blocks, plan)`` runs step ``i`` with the modules ``blocks[j]`` for ``j in plan[i]``
replaced by the identity (their input passes through; the shapes must agree), and ``search_skips`` evolves the plan
under a cap on the mean fraction of skipped blocks.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from thrifty.diffusion.core.denoiser import DenoiserWrapper, Prediction
from thrifty.diffusion.core.metrics import digits_fd, sliced_wasserstein
from thrifty.diffusion.core.solvers import check_grid, sample

__all__ = [
    "AutoDiffusionSearch",
    "SearchResult",
    "SkipPlanDenoiser",
    "digits_fd_fitness",
    "search_skips",
    "swd_fitness",
]

Fitness = Callable[[Tensor], float]


def swd_fitness(reference: Tensor, projections: int = 128, seed: int = 0) -> Fitness:
    """Sliced Wasserstein distance to ``reference`` with fixed projections (the 2-D FID proxy)."""

    def fitness(samples: Tensor) -> float:
        return sliced_wasserstein(samples, reference, projections, torch.Generator().manual_seed(seed))

    return fitness


def digits_fd_fitness(reference: Tensor) -> Fitness:
    """Classifier-feature Frechet distance to ``reference`` digits (the digits FID proxy)."""
    return lambda samples: digits_fd(samples, reference)


@dataclass
class SearchResult:
    """The best candidate found, its grid and fitness, and the search history (best fitness per epoch)."""

    candidate: tuple[int, ...]
    grid: Tensor
    fitness: float
    history: list[float] = field(default_factory=list)
    evaluations: int = 0


class AutoDiffusionSearch:
    """Evolutionary search of a K-step time grid for ``denoiser`` (time-step stage of AutoDiffusion).

    ``search(noise)`` returns a ``SearchResult``; ``grid_of(candidate)`` maps a candidate to its time grid;
    ``evaluate(candidate)`` samples ``noise`` with it and applies ``fitness`` (memoised).
    """

    def __init__(
        self,
        denoiser: Any,
        steps: int,
        fitness: Fitness,
        resolution: int = 1000,
        population: int = 50,
        select_num: int = 10,
        mutation_num: int = 25,
        crossover_num: int = 15,
        m_prob: float = 0.25,
        epochs: int = 10,
        solver: str = "euler",
        cond: Any = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"number of steps must be a positive integer, got {steps!r}")
        if steps - 1 > resolution - 1:
            raise ValueError(f"cannot choose {steps - 1} interior times from {resolution - 1} levels")
        if mutation_num + crossover_num > population or select_num < 1:
            raise ValueError("need mutation_num + crossover_num <= population and select_num >= 1")
        self.denoiser, self.steps, self.fitness = denoiser, steps, fitness
        self.resolution, self.population, self.select_num = resolution, population, select_num
        self.mutation_num, self.crossover_num, self.m_prob, self.epochs = mutation_num, crossover_num, m_prob, epochs
        self.solver, self.cond = solver, cond
        self.rng = random.Random(seed)
        self.cache: dict[tuple[int, ...], float] = {}
        self.noise: Tensor | None = None

    def grid_of(self, candidate: Sequence[int]) -> Tensor:
        interior = sorted(candidate, reverse=True)
        return torch.tensor([1.0] + [k / self.resolution for k in interior] + [0.0])

    def uniform_candidate(self) -> tuple[int, ...]:
        """The DDIM candidate: interior times of the uniform K-step grid, rounded to the search space."""
        return tuple(sorted(round(self.resolution * (1 - i / self.steps)) for i in range(1, self.steps)))

    def evaluate(self, candidate: Sequence[int]) -> float:
        key = tuple(sorted(candidate))
        if key not in self.cache:
            if self.noise is None:
                raise RuntimeError("evaluate needs the search noise: call search(noise) first")
            with torch.no_grad():
                out = sample(self.denoiser, self.noise, self.grid_of(key), self.solver, self.cond)
            score = float(self.fitness(out))
            self.cache[key] = score if score == score else float("inf")  # NaN counts as the worst fitness
        return self.cache[key]

    def _legal(self, cand: Sequence[int]) -> bool:
        return len(set(cand)) == len(cand) and all(1 <= k <= self.resolution - 1 for k in cand)

    def _random(self) -> tuple[int, ...]:
        return tuple(sorted(self.rng.sample(range(1, self.resolution), self.steps - 1)))

    def _mutate(self, cand: Sequence[int], prob: float) -> tuple[int, ...]:
        cand = list(cand)
        unused = [k for k in range(1, self.resolution) if k not in cand]
        for i in range(len(cand)):
            if unused and self.rng.random() < prob:
                cand[i] = unused.pop(self.rng.randrange(len(unused)))
        return tuple(sorted(cand))

    def _cross(self, a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
        return tuple(sorted(x if self.rng.random() < 0.5 else y for x, y in zip(a, b, strict=True)))

    def _fill(self, make: Callable[[], tuple[int, ...]], count: int, pool: list[tuple[int, ...]]) -> None:
        tries = 10 * max(count, 1)
        added = 0
        while added < count and tries > 0:
            tries -= 1
            cand = make()
            if self._legal(cand) and cand not in self.cache:
                self.evaluate(cand)
                pool.append(cand)
                added += 1

    def search(self, noise: Tensor, progress: Callable[[int], None] | None = None) -> SearchResult:
        """Run the evolutionary search with ``noise`` (the fixed batch at t = 1 the fitness samples from)."""
        self.noise = noise
        if self.steps == 1:
            cand: tuple[int, ...] = ()
            return SearchResult(cand, self.grid_of(cand), self.evaluate(cand), [self.evaluate(cand)], 1)
        init = self.uniform_candidate()
        population = [init] if self._legal(init) else []
        if population:
            self.evaluate(init)
        self._fill(self._random, self.population // 2 + 1, population)
        self._fill(lambda: self._mutate(init, 0.1), self.population - len(population), population)
        top: list[tuple[int, ...]] = []
        history = []
        for _ in range(self.epochs):
            top = sorted(set(top) | set(population), key=self.cache.__getitem__)[: self.select_num]
            history.append(self.cache[top[0]])
            population = []
            parents = list(top)
            self._fill(lambda p=parents: self._mutate(self.rng.choice(p), self.m_prob), self.mutation_num, population)
            self._fill(
                lambda p=parents: self._cross(self.rng.choice(p), self.rng.choice(p)), self.crossover_num, population
            )
            self._fill(self._random, self.population - len(population), population)
            if progress is not None:
                progress(1)
        best = min(set(top) | set(population), key=self.cache.__getitem__)
        history.append(self.cache[best])
        return SearchResult(best, self.grid_of(best), self.cache[best], history, len(self.cache))


class SkipPlanDenoiser(DenoiserWrapper):
    """Run step ``i`` of a sampler with ``blocks[j]`` replaced by the identity for every ``j`` in ``plan[i]``.

    Steps are counted by ``predict`` calls (one per Euler/DDIM step); ``reset()`` restarts the count (``sample``
    does not call it: call it before each trajectory). Each skipped block must map its input to an output of the
    same shape.
    """

    def __init__(self, denoiser: Any, blocks: Sequence[nn.Module], plan: Sequence[Sequence[int]]) -> None:
        super().__init__(denoiser)
        self.blocks, self.plan = list(blocks), [tuple(p) for p in plan]
        for p in self.plan:
            if any(not 0 <= j < len(self.blocks) for j in p):
                raise ValueError(f"plan entry {p} names a block outside 0..{len(self.blocks) - 1}")
        self.step = 0

    def reset(self) -> None:
        self.step = 0

    def predict(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Prediction:
        skipped = self.plan[self.step] if self.step < len(self.plan) else ()
        self.step += 1
        handles = [self.blocks[j].register_forward_hook(lambda m, args, out: args[0]) for j in skipped]
        try:
            return self.denoiser.predict(x, t, cond)
        finally:
            for h in handles:
                h.remove()

    def forward(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        return self.predict(x, t, cond).as_type(self.prediction_type)


def search_skips(
    denoiser: Any,
    blocks: Sequence[nn.Module],
    grid: Tensor,
    noise: Tensor,
    fitness: Fitness,
    max_skip_fraction: float = 0.25,
    population: int = 30,
    select_num: int = 10,
    epochs: int = 5,
    m_prob: float = 0.25,
    seed: int = 0,
) -> tuple[list[tuple[int, ...]], float]:
    """Evolve a skip plan (one subset of ``blocks`` per step of ``grid``) whose mean skipped fraction is at most
    ``max_skip_fraction``; returns the best plan and its fitness (the empty plan competes as well).

    The initial population is the empty plan and random plans (each gene skipped with probability
    ``max_skip_fraction``); each epoch mutates the ``select_num`` best plans found so far (gene flips with probability
    ``m_prob``) into ``population`` children, illegal ones discarded.
    """
    grid = check_grid(grid)
    steps, nb = grid.numel() - 1, len(blocks)
    rng = random.Random(seed)
    cache: dict[tuple[tuple[int, ...], ...], float] = {}

    def fit(plan: tuple[tuple[int, ...], ...]) -> float:
        if plan not in cache:
            wrapped = SkipPlanDenoiser(denoiser, blocks, plan)
            with torch.no_grad():
                cache[plan] = float(fitness(sample(wrapped, noise, grid)))
        return cache[plan]

    def legal(plan: tuple[tuple[int, ...], ...]) -> bool:
        return sum(len(p) for p in plan) <= max_skip_fraction * steps * nb

    def mutate(plan: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], ...]:
        # each (step, block) gene flips between kept and skipped with probability m_prob
        return tuple(tuple(j for j in range(nb) if (j in p) != (rng.random() < m_prob)) for p in plan)

    def random_plan() -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(j for j in range(nb) if rng.random() < max_skip_fraction) for _ in range(steps))

    empty = tuple(() for _ in range(steps))
    pool = [empty] + [p for p in (random_plan() for _ in range(population)) if legal(p)]
    for p in pool:
        fit(p)
    for _ in range(epochs):
        top = sorted(cache, key=cache.__getitem__)[:select_num]
        children = [mutate(rng.choice(top)) for _ in range(population)]
        for c in children:
            if legal(c):
                fit(c)
    best = min(cache, key=cache.__getitem__)
    return [tuple(p) for p in best], cache[best]
