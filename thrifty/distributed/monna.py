"""MoNNA: peer-to-peer SGD with local Polyak momentum and nearest-neighbour averaging of the models.

Paper: S. Farhadkhani, R. Guerraoui, N. Gupta, L.-N. Hoang, R. Pinot, J. Stephan, "Robust Collaborative Learning
with Linear Gradient Overhead", arXiv:2209.10931 (ICML 2023). Official code: github.com/LPD-EPFL/
robust-collaborative-learning, ``peerToPeer.py`` (``--momentum-at worker``, ``--gar cva`` with ``honest_index``).

Each honest peer ``i`` of ``n`` (at most ``f`` of them Byzantine), at every step::

    m_i   = beta * m_i + (1 - dampening) * g_i      # dampened Polyak momentum of the local gradient, m_i(0) = 0
    x_i   = theta_i - lr * m_i                      # local half-step
    theta_i = NNA_i(x_1, ..., x_n)                  # mean of the n - f received models closest to x_i, x_i included

The official experiments use ``beta = dampening = 0.99`` (an exponential moving average), batch 25 and
``lr_t = lr_0 / (t / 50 + 1)`` updated every 50 steps. Models, not gradients, are exchanged and mixed; the momentum
stays local. Ties in the NNA distance go to the lower rank (``thrifty.distributed.aggregators.nna``).

Here the exchange is one ``all_gather`` of every peer's flattened model per step (all-to-all, as the paper's complete
communication graph), so a peer hears all ``n`` models and keeps ``n - f``. The official simulation lets each honest
peer hear only ``n - 2f`` randomly drawn honest models plus the ``f`` Byzantine ones and keeps ``n - 2f`` of them
(the worst case of its model); a synchronous all-to-all run gives NNA more honest models to average.

Safety: ``f`` must satisfy ``2f < n`` (a ``ValueError`` before any communication), and the peers agree on the
protocol settings (``f``, model size and dtype, aggregation rule, the ``rushing`` flag) through one all-gather of a
settings digest when the optimizer is built; a mismatch raises the same ``ValueError`` on every rank instead of a
later hang or a silent shape error. ``rushing=True`` is for Byzantine experiments only: every step first all-gathers
the honest half-step models once more (honest peers ignore the result) so that simulated Byzantine peers
(``thrifty.distributed.byzantine.ByzantinePeer``) can craft their vectors from the current honest models, the
omniscient adversary of the paper's experiments.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from thrifty.distributed.aggregators import AGGREGATORS
from thrifty.optim._core import check_range

__all__ = ["MoNNA", "agree_on_settings", "check_byzantine_bound", "exchange", "protocol_settings", "rank_and_size"]


def check_byzantine_bound(f: int, world_size: int) -> None:
    """Raise ``ValueError`` unless ``f`` is an integer with ``0 <= f`` and ``2f < world_size`` (honest majority)."""
    if not isinstance(f, int) or isinstance(f, bool) or f < 0:
        raise ValueError(f"f (the number of Byzantine peers tolerated) must be a non-negative integer, got {f!r}")
    if 2 * f >= world_size:
        raise ValueError(
            f"{world_size} peers cannot tolerate f = {f} Byzantine peers: MoNNA needs an honest majority, 2f < n "
            f"(at most f = {(world_size - 1) // 2} for n = {world_size})"
        )


def rank_and_size(group: Any) -> tuple[int, int]:
    """``(rank, world size)`` in ``group``; a clear ``RuntimeError`` when no process group is initialized."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "torch.distributed is not initialized: start the peers with torchrun and call "
            "thrifty.distributed.init_from_env(), or run them with thrifty.distributed.spawn"
        )
    return dist.get_rank(group), dist.get_world_size(group)


# torch >= 2.13 names the tensor all-gather ``all_gather_single`` (``all_gather_into_tensor`` is deprecated there)
_all_gather_tensor = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def protocol_settings(f: int, numel: int, dtype: torch.dtype, aggregator: str, rushing: bool) -> dict[str, Any]:
    """The settings every peer of one run must share (what ``agree_on_settings`` compares)."""
    return {
        "protocol": "monna-1",
        "f": f,
        "numel": numel,
        "dtype": str(dtype),
        "aggregator": aggregator,
        "rushing": bool(rushing),
    }


def agree_on_settings(settings: dict[str, Any], group: Any, device: torch.device) -> None:
    """All-gather a 63-bit digest of ``settings``; raise ``ValueError`` on every rank if any rank differs."""
    blob = json.dumps(settings, sort_keys=True).encode()
    digest = int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") >> 1
    _, world_size = rank_and_size(group)
    mine = torch.tensor([digest], dtype=torch.int64, device=device)
    everyone = torch.empty(world_size, dtype=torch.int64, device=device)
    _all_gather_tensor(everyone, mine, group=group)
    differing = [r for r, d in enumerate(everyone.tolist()) if d != everyone[0].item()]
    if differing:
        raise ValueError(
            f"MoNNA settings differ across ranks: ranks {differing} disagree with rank 0 on the protocol settings "
            f"(f, model size and dtype, aggregation rule, rushing); this rank has {settings}"
        )


def exchange(vector: Tensor, group: Any) -> Tensor:
    """All-gather every peer's flat ``vector``: returns ``(n, d)`` rows in group-rank order."""
    _, world_size = rank_and_size(group)
    received = vector.new_empty(world_size * vector.numel())
    _all_gather_tensor(received, vector.reshape(-1), group=group)
    return received.view(world_size, -1)


class MoNNA(torch.optim.Optimizer):
    """MoNNA on one honest peer: dampened momentum step on the local gradient, then NNA over all peers' models.

    Build it on every honest rank with the same ``f``, ``aggregator`` and ``rushing`` and the same model shapes;
    ``step()`` communicates (two all-gathers with ``rushing``, else one), so every rank of ``group`` must call it
    the same number of times. ``aggregator`` names the mixing rule of ``thrifty.distributed.aggregators``: ``"nna"``
    (MoNNA), ``"mean"`` (D-SGD with momentum, the non-robust baseline), ``"median"`` or ``"trimmed_mean"``.
    ``weight_decay`` adds ``weight_decay * theta`` to the gradient (coupled L2; the official runs put an L2 term
    of 1e-4 in the loss instead). Parameters without a gradient skip the local step but are still mixed.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        f: int,
        momentum: float = 0.99,
        dampening: float | None = None,
        weight_decay: float = 0.0,
        *,
        aggregator: str = "nna",
        group: Any = None,
        rushing: bool = False,
    ):
        check_range("lr", lr, 0.0, low_inclusive=False)
        check_range("momentum", momentum, 0.0, 1.0, high_inclusive=False)
        dampening = momentum if dampening is None else dampening
        check_range("dampening", dampening, 0.0, 1.0)
        check_range("weight_decay", weight_decay)
        if aggregator not in AGGREGATORS:
            raise ValueError(f"aggregator must be one of {', '.join(AGGREGATORS)}, got {aggregator!r}")
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay}
        super().__init__(params, defaults)
        rank, world_size = rank_and_size(group)
        check_byzantine_bound(f, world_size)
        flat = self._params()
        dtypes = {p.dtype for p in flat}
        devices = {p.device for p in flat}
        if len(dtypes) != 1 or len(devices) != 1 or not flat[0].is_floating_point():
            raise ValueError(
                "MoNNA needs floating-point parameters of one dtype on one device, got dtypes "
                f"{sorted(map(str, dtypes))} on devices {sorted(map(str, devices))}"
            )
        self.f, self.aggregator, self.group, self.rushing = f, aggregator, group, bool(rushing)
        self.rank, self.world_size = rank, world_size
        self.numel = sum(p.numel() for p in flat)
        agree_on_settings(
            protocol_settings(f, self.numel, flat[0].dtype, aggregator, self.rushing), group, flat[0].device
        )

    def _params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """Local momentum step on every parameter with a gradient, then mix the models across peers."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            bufs = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, grads, alpha=1.0 - group["dampening"])
            torch._foreach_add_(params, bufs, alpha=-group["lr"])
        self.mix_()
        return loss

    @torch.no_grad()
    def mix_(self) -> Tensor:
        """Replace the parameters by the chosen aggregate of all peers' models; returns the received ``(n, d)``."""
        params = self._params()
        vector = torch.cat([p.reshape(-1) for p in params])
        if self.rushing:  # experiments only: let simulated Byzantine peers observe this step's honest models
            exchange(vector, self.group)
        received = exchange(vector, self.group)
        mixed = AGGREGATORS[self.aggregator](received, self.f, self.rank)
        chunks = mixed.split([p.numel() for p in params])
        torch._foreach_copy_(params, [c.view_as(p) for c, p in zip(chunks, params, strict=True)])
        return received
