"""One-byte decentralised zeroth-order fine-tuning with shared randomness.

Zelikman et al., "Just One Byte (per gradient): A Note on Low-Bandwidth Decentralized Language Model Finetuning Using
Shared Randomness" (arXiv 2306.10015), the decentralised extension of MeZO/SPSA (Malladi et al., arXiv 2305.17333).

Rule, per step ``t`` on each of the ``K`` processes (rank ``k``, its own batch ``x_k``)::

    s_k = seed(global_seed, t, k)                      # every process can compute every s_k
    z_k ~ N(0, I) from a generator seeded with s_k     # regenerated tensor by tensor, never stored
    p_k = [L(theta + eps z_k; x_k) - L(theta - eps z_k; x_k)] / (2 eps)
    q_k = int8(p_k)  ->  all_gather                    # the one byte each process sends
    theta <- theta - (lr / K) sum_k deq(q_k) z_k  (- lr wd theta)   # on every process, ranks in order

The perturbations are made in place (``theta + eps z``, then ``- 2 eps z``, then ``+ eps z``) as in MeZO's
``zo_perturb_parameters``, so memory is that of inference plus one parameter tensor. Two points the note leaves open:

* **Exact restoration.** Floating-point addition is not invertible (``(a + d) - d != a`` for about half of random fp32
  entries), and each process perturbs with its own ``z_k``, so restoration errors would make the replicas drift apart.
  Each parameter tensor is therefore kept on a power-of-two grid ``g`` (block fixed point: every entry a multiple of
  ``g`` with ``|theta| + eps * Z_CLIP <= 2**24 * g``), the perturbation ``d = round(eps z / g) g`` is on the grid and
  ``z`` is clipped to ``[-Z_CLIP, Z_CLIP]`` (8 sigma), so every addition is exact and the parameters come back bit for
  bit. Updates are rounded to the grid (round to nearest), identically on every process; the grid coarsens by powers
  of two when a tensor grows. The first snap moves each entry by at most ``g / 2`` (about ``2**-24`` of the tensor's
  largest magnitude).
* **Quantisation.** ``q = clamp(round(p / step), -128, 127)`` with ``step = 2 clip / 255``: 256 levels over
  ``[-clip, clip]``, error at most ``clip / 255`` inside that range. ``clip`` must be agreed in advance (checked).

The shared configuration (seed, lr, eps, clip, quantisation, parameter shapes) is compared across ranks at construction
with one all_gather of a few int64 values, so a mismatched seed fails there with a clear error, not as silent drift.
The note seeds with a (machine, sample) identifier; here it is (global seed, step, rank), the same thing when each
process draws one batch per step. The closure must be deterministic (dropout off or seeded), because the two
evaluations must differ only by the perturbation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["Z_CLIP", "SharedSeedSPSA", "dequantize_int8", "quantize_int8", "step_seed"]

Z_CLIP = 8.0
_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def step_seed(global_seed: int, step: int, rank: int) -> int:
    """The generator seed of ``rank``'s perturbation at ``step``: a splitmix64 hash, in ``[0, 2**63)``."""
    return _splitmix64(_splitmix64(_splitmix64(global_seed) ^ step) ^ rank) >> 1


def quantize_int8(value: Tensor, clip: float) -> Tensor:
    """``int8`` codes of ``value`` on 256 levels over ``[-clip, clip]`` (step ``2 clip / 255``); larger values clip."""
    step = 2.0 * clip / 255.0
    return torch.clamp(torch.round(value.to(torch.float32) / step), -128, 127).to(torch.int8)


def dequantize_int8(codes: Tensor, clip: float) -> Tensor:
    """Values of ``int8`` codes made by :func:`quantize_int8` with the same ``clip``."""
    return codes.to(torch.float32) * (2.0 * clip / 255.0)


def _grid_for(bound: float) -> float:
    """The finest power-of-two grid whose exactly representable fp32 range ``2**24 * g`` covers ``bound``."""
    return 2.0 ** (math.ceil(math.log2(max(bound, 1e-30))) - 24)


class SharedSeedSPSA:
    """Zeroth-order fine-tuning where each process sends one int8 projected gradient per step.

    ``params``: the parameters (or a module), the same shapes and order on every process; they must be floating
    point and are modified in place (snapped to their grids at construction). ``lr``: learning rate; ``eps``: the
    perturbation scale; ``clip``: the quantisation range of the projected gradient; ``quantize=False`` sends fp32
    scalars instead (4 bytes, the baseline); ``weight_decay``: decoupled decay applied in the update. ``seed`` must be
    the same on every process. ``group``: the process group (the default group when initialised; without one the
    optimiser runs as a single process).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | nn.Module,
        lr: float,
        *,
        eps: float = 1e-3,
        clip: float = 1.0,
        seed: int = 0,
        quantize: bool = True,
        weight_decay: float = 0.0,
        group: dist.ProcessGroup | None = None,
    ) -> None:
        self.params = list(params.parameters() if isinstance(params, nn.Module) else params)
        if not self.params:
            raise ValueError("params is empty")
        if any(not p.is_floating_point() for p in self.params):
            raise ValueError("every parameter must be a floating-point tensor")
        for name, value in (("lr", lr), ("eps", eps), ("clip", clip)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if not (0 <= seed < 2**63):
            raise ValueError(f"seed must be in [0, 2**63), got {seed!r}")
        self.lr, self.eps, self.clip, self.seed = float(lr), float(eps), float(clip), int(seed)
        self.quantize, self.weight_decay, self.group = bool(quantize), float(weight_decay), group
        if dist.is_available() and dist.is_initialized():
            self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)
        else:
            self.rank, self.world_size = 0, 1
        self.step_count = 0
        self.bytes_sent = 0
        self._check_agreement()
        self._grids = [0.0] * len(self.params)
        with torch.no_grad():
            for i in range(len(self.params)):
                self._regrid(i, force=True)

    @property
    def bytes_per_step(self) -> int:
        """Payload bytes each process sends per step: one int8 (1) or one fp32 (4) projected gradient."""
        return 1 if self.quantize else 4

    def _check_agreement(self) -> None:
        floats = torch.tensor([self.lr, self.eps, self.clip, self.weight_decay], dtype=torch.float64)
        shapes = hash(tuple(tuple(p.shape) for p in self.params)) & ((1 << 62) - 1)
        mine = torch.cat(
            [torch.tensor([self.seed, int(self.quantize), shapes], dtype=torch.int64), floats.view(torch.int64)]
        ).to(self.params[0].device)  # NCCL needs device tensors
        if self.world_size == 1:
            return
        rows = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(rows, mine, group=self.group)
        fields = ("seed", "quantize", "parameter shapes", "lr", "eps", "clip", "weight_decay")
        for j, name in enumerate(fields):
            if len({int(r[j]) for r in rows}) > 1:
                if name == "parameter shapes":
                    detail = ""
                else:
                    shown = [int(r[j]) if j < 2 else r[j : j + 1].view(torch.float64).item() for r in rows]
                    detail = ": " + ", ".join(f"rank {k} has {v}" for k, v in enumerate(shown))
                raise ValueError(f"shared {name} differs across ranks{detail}; every process must use the same one")

    def _regrid(self, i: int, force: bool = False) -> None:
        p = self.params[i]
        bound = 2.0 * (float(p.abs().max()) + self.eps * Z_CLIP)
        if force or bound > 2.0**24 * self._grids[i]:
            g = max(_grid_for(bound), self._grids[i])
            self._grids[i] = g
            p.div_(g).round_().mul_(g)

    def perturbation(self, seed: int) -> list[Tensor]:
        """The ``z`` of a perturbation seed, tensor by tensor (clipped to ``[-Z_CLIP, Z_CLIP]``); for tests."""
        gen = None
        out = []
        for p in self.params:
            if gen is None or gen.device != p.device:
                gen = torch.Generator(device=p.device).manual_seed(seed)
            out.append(torch.randn(p.shape, generator=gen, dtype=p.dtype, device=p.device).clamp_(-Z_CLIP, Z_CLIP))
        return out

    @torch.no_grad()
    def perturb(self, seed: int, multiple: int) -> None:
        """``theta += multiple * round(eps z / g) g`` in place, tensor by tensor; exact, hence exactly reversible."""
        gen = None
        for p, g in zip(self.params, self._grids, strict=True):
            if gen is None or gen.device != p.device:
                gen = torch.Generator(device=p.device).manual_seed(seed)
            z = torch.randn(p.shape, generator=gen, dtype=p.dtype, device=p.device).clamp_(-Z_CLIP, Z_CLIP)
            p.add_(z.mul_(self.eps / g).round_().mul_(g * multiple))

    @torch.no_grad()
    def projected_gradient(self, closure: Callable[[], Tensor | float], seed: int) -> float:
        """``[L(theta + eps z) - L(theta - eps z)] / (2 eps)`` for ``seed``'s ``z``; parameters restored exactly."""
        self.perturb(seed, 1)
        plus = float(closure())
        self.perturb(seed, -2)
        minus = float(closure())
        self.perturb(seed, 1)
        return (plus - minus) / (2.0 * self.eps)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor | float]) -> float:
        """One step: two evaluations of ``closure`` (this process's batch), one scalar sent, all updates applied.

        Returns this process's projected gradient (before quantisation).
        """
        t = self.step_count
        projected = self.projected_gradient(closure, step_seed(self.seed, t, self.rank))
        value = torch.tensor([projected], dtype=torch.float32, device=self.params[0].device)
        payload = quantize_int8(value, self.clip) if self.quantize else value
        if self.world_size > 1:
            gathered = [torch.empty_like(payload) for _ in range(self.world_size)]
            dist.all_gather(gathered, payload, group=self.group)
        else:
            gathered = [payload]
        scalars = [float(dequantize_int8(q, self.clip)) if self.quantize else float(q) for q in gathered]
        self.bytes_sent += payload.element_size() * payload.numel()
        gens = [None] * self.world_size
        scale = self.lr / self.world_size
        for i, (p, g) in enumerate(zip(self.params, self._grids, strict=True)):
            update = p * (self.lr * self.weight_decay) if self.weight_decay else torch.zeros_like(p)
            for k in range(self.world_size):
                if gens[k] is None or gens[k].device != p.device:
                    gens[k] = torch.Generator(device=p.device).manual_seed(step_seed(self.seed, t, k))
                z = torch.randn(p.shape, generator=gens[k], dtype=p.dtype, device=p.device).clamp_(-Z_CLIP, Z_CLIP)
                update.add_(z, alpha=scale * scalars[k])
            p.sub_(update).div_(g).round_().mul_(g)
            self._regrid(i)
        self.step_count += 1
        return projected
