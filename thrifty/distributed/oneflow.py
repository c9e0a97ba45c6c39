"""OneFlow's SBP layouts on PyTorch DTensor (Yuan et al., "OneFlow: Redesign the Distributed Deep Learning Framework
from Scratch", arXiv 2110.15032).

A global tensor of logical size ``|T|`` bytes lives on ``p`` devices with an SBP layout: ``S(i)`` split along axis
``i``, ``B`` broadcast (every device holds all of it), ``P`` partial-sum (the logical tensor is the sum of the
devices' tensors). They are DTensor's placements ``Shard(i)``, ``Replicate()`` and ``Partial("sum")`` on a 1-D
``DeviceMesh``. Converting a layout ("boxing") moves these bytes in total, on the same ``p`` devices (the paper's
cost table; ring collectives)::

    S(i)->S(i), B->B, P->P, B->S, B->P, S->P : 0   (local: slice, zero all but one device, pad with zeros)
    S(i)->S(j) : (p-1)/p |T|   (all-to-all)        S->B : (p-1)|T|   (all-gather)
    P->S       : (p-1)|T|      (reduce-scatter)    P->B : 2(p-1)|T|  (all-reduce)

and between disjoint sets of ``p1`` and ``p2`` devices [recalled from the paper's table, not measured here]:
``S->S |T|, S->B p2|T|, S->P |T|, B->S |T|, B->B p2|T|, B->P |T|, P->S p1|T|, P->B p1 p2|T|, P->P p1|T|``.

``to_global`` mirrors OneFlow's ``Tensor.to_global``: it makes a global tensor from a local one, or boxes a global
tensor to another layout. DTensor's ``redistribute`` is used where it issues the table's collective. On gloo it
lacks an all-to-all and a true reduce-scatter: it falls back to all-gather + slice for ``S(i)->S(j)`` (``p`` times
the table's bytes) and all-reduce + slice for ``P->S`` (twice), so these two go through the functional
``all_to_all_single_autograd`` (a true all-to-all on gloo) instead; ``B->P`` and ``S->P`` (which DTensor reserves
for internal use) are done locally.

A matmul ``Y = X W`` has six valid SBP signatures ``(X, W) -> Y``: ``(S(0), B) -> S(0)`` (data parallel),
``(B, S(1)) -> S(1)`` (column parallel), ``(S(1), S(0)) -> P`` (row parallel), ``(P, B) -> P``, ``(B, P) -> P``,
``(B, B) -> B``. ``TensorParallelMLP`` chains the column- and row-parallel signatures: ``X:B @ W1:S(1) -> S(1)``,
GELU (elementwise, keeps ``S(1)``), ``@ W2:S(0) -> P``, boxing ``P -> B`` (one all-reduce).
"""

from __future__ import annotations

import math
import re

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Partial, Placement, Replicate, Shard, distribute_tensor

__all__ = [
    "MATMUL_SIGNATURES",
    "TensorParallelMLP",
    "as_placement",
    "boxing_collective",
    "boxing_cost",
    "choose_matmul_signature",
    "matmul_sbp",
    "sbp_name",
    "to_global",
]

SBP = str | Placement

MATMUL_SIGNATURES: dict[tuple[str, str], str] = {
    ("S(0)", "B"): "S(0)",
    ("B", "S(1)"): "S(1)",
    ("S(1)", "S(0)"): "P",
    ("P", "B"): "P",
    ("B", "P"): "P",
    ("B", "B"): "B",
}

_SPLIT = re.compile(r"^S\((\d+)\)$")


def as_placement(sbp: SBP) -> Placement:
    """``"S(i)"`` -> ``Shard(i)``, ``"B"`` -> ``Replicate()``, ``"P"`` -> ``Partial("sum")``; placements pass."""
    if isinstance(sbp, Placement):
        if isinstance(sbp, Partial) and sbp.reduce_op != "sum":
            raise ValueError(f"only partial-sum is an SBP layout, got {sbp}")
        return sbp
    if sbp == "B":
        return Replicate()
    if sbp == "P":
        return Partial("sum")
    match = _SPLIT.match(sbp) if isinstance(sbp, str) else None
    if match is None:
        raise ValueError(f"an SBP layout is 'S(i)', 'B' or 'P' (or a DTensor placement), got {sbp!r}")
    return Shard(int(match.group(1)))


def sbp_name(sbp: SBP) -> str:
    """The paper's name of a layout: ``"S(i)"``, ``"B"`` or ``"P"``."""
    placement = as_placement(sbp)
    if isinstance(placement, Shard):
        return f"S({placement.dim})"
    return "B" if placement.is_replicate() else "P"


def boxing_collective(src: SBP, dst: SBP) -> str:
    """The collective that converts ``src`` to ``dst`` on the same devices."""
    a, b = sbp_name(src), sbp_name(dst)
    if a == b:
        return "none"
    kind = (a[0], b[0])
    return {
        ("S", "S"): "all-to-all",
        ("S", "B"): "all-gather",
        ("S", "P"): "local (pad with zeros)",
        ("B", "S"): "local (slice)",
        ("B", "P"): "local (zero all but one device)",
        ("P", "S"): "reduce-scatter",
        ("P", "B"): "all-reduce",
    }[kind]


def boxing_cost(src: SBP, dst: SBP, nbytes: float, devices: int, dst_devices: int | None = None) -> float:
    """Bytes moved in total to convert a tensor of logical size ``nbytes`` from ``src`` to ``dst`` (paper's table).

    ``devices`` holds the source; ``dst_devices`` the destination when it is a disjoint device set (None: same).
    """
    if devices < 1 or (dst_devices is not None and dst_devices < 1):
        raise ValueError(f"device counts must be positive, got {devices}, {dst_devices}")
    a, b = sbp_name(src), sbp_name(dst)
    p1 = devices
    if dst_devices is None:
        if a == b:
            return 0.0
        same = {
            ("S", "S"): (p1 - 1) / p1,
            ("S", "B"): p1 - 1,
            ("P", "S"): p1 - 1,
            ("P", "B"): 2 * (p1 - 1),
        }
        return same.get((a[0], b[0]), 0.0) * nbytes
    p2 = dst_devices
    disjoint = {
        ("S", "S"): 1,
        ("S", "B"): p2,
        ("S", "P"): 1,
        ("B", "S"): 1,
        ("B", "B"): p2,
        ("B", "P"): 1,
        ("P", "S"): p1,
        ("P", "B"): p1 * p2,
        ("P", "P"): p1,
    }
    return disjoint[(a[0], b[0])] * nbytes


def matmul_sbp(x: SBP, w: SBP) -> str:
    """The output layout of ``X @ W`` (2-D) for a valid signature; ``ValueError`` for an invalid one."""
    key = (sbp_name(x), sbp_name(w))
    if key not in MATMUL_SIGNATURES:
        valid = ", ".join(f"({a}, {b})" for a, b in MATMUL_SIGNATURES)
        raise ValueError(f"({key[0]}, {key[1]}) is not a valid SBP signature of a matmul; valid: {valid}")
    return MATMUL_SIGNATURES[key]


def choose_matmul_signature(
    x: SBP, w: SBP, x_bytes: float, w_bytes: float, devices: int
) -> tuple[tuple[str, str], float]:
    """The valid signature reachable at the least boxing cost from the inputs' layouts (OneFlow's greedy choice)."""
    options = [
        ((a, b), boxing_cost(x, a, x_bytes, devices) + boxing_cost(w, b, w_bytes, devices))
        for a, b in MATMUL_SIGNATURES
    ]
    return min(options, key=lambda option: option[1])


def _divisible(shape: torch.Size, dim: int, devices: int) -> None:
    if dim >= len(shape) or shape[dim] % devices:
        raise ValueError(f"cannot split axis {dim} of a tensor of shape {tuple(shape)} evenly over {devices} devices")


def _exchange(local: torch.Tensor, split_dim: int, group: dist.ProcessGroup) -> torch.Tensor:
    """All-to-all: chunk ``j`` of ``local`` along ``split_dim`` goes to rank ``j``; returns the received chunks
    stacked along a new leading axis in rank order (autograd-aware)."""
    p = dist.get_world_size(group)
    send = torch.stack(local.chunk(p, dim=split_dim)).contiguous()
    return funcol.wait_tensor(funcol.all_to_all_single_autograd(send, None, None, group))


class _KeepOnFirst(torch.autograd.Function):
    """B -> P: rank 0 keeps the value, the others hold zeros. The replicas are one logical tensor, so each replica's
    gradient is the output's whole gradient (identity backward), which keeps the gradient of ``B`` replicated."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, rank: int) -> torch.Tensor:  # noqa: ANN001
        return local.clone() if rank == 0 else torch.zeros_like(local)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        return grad, None


def to_global(x: torch.Tensor, sbp: SBP, mesh: DeviceMesh | None = None) -> DTensor:
    """OneFlow's ``to_global``: a local tensor becomes a global one with layout ``sbp`` on ``mesh`` (every rank
    passes its local part); a global tensor (DTensor) is boxed to ``sbp`` with the table's collective.

    Only 1-D meshes (the paper's single-level SBP). Raises ``ValueError`` before any communication when an axis to
    split is not divisible by the number of devices.
    """
    target = as_placement(sbp)
    if not isinstance(x, DTensor):
        if mesh is None:
            raise ValueError("a local tensor needs the mesh it is to be placed on")
        if mesh.ndim != 1:
            raise ValueError(f"only 1-D device meshes are supported, got {mesh.ndim}-D")
        return DTensor.from_local(x, mesh, [target], run_check=False)
    if mesh is not None and mesh != x.device_mesh:
        raise ValueError("boxing between different device meshes is not implemented")
    mesh = x.device_mesh
    if mesh.ndim != 1:
        raise ValueError(f"only 1-D device meshes are supported, got {mesh.ndim}-D")
    source = x.placements[0]
    p = mesh.size()
    if isinstance(target, Shard):
        _divisible(x.shape, target.dim, p)
    if sbp_name(source) == sbp_name(target):
        return x
    group = mesh.get_group()
    rank = mesh.get_local_rank()
    local = x.to_local()
    shape, stride = x.shape, x.stride()
    if isinstance(source, Shard) and isinstance(target, Shard):
        _divisible(x.shape, source.dim, p)
        out = torch.cat(_exchange(local, target.dim, group).unbind(0), dim=source.dim)
    elif source.is_partial() and isinstance(target, Shard):
        out = _exchange(local, target.dim, group).sum(0)
    elif target.is_partial() and source.is_replicate():
        out = _KeepOnFirst.apply(local, rank)
    elif target.is_partial() and isinstance(source, Shard):
        _divisible(x.shape, source.dim, p)
        size = shape[source.dim] // p
        before = rank * size
        pad = [0, 0] * (len(shape) - 1 - source.dim) + [before, shape[source.dim] - before - size]
        out = F.pad(local, pad)
    else:  # S -> B (all-gather), P -> B (all-reduce), B -> S (local slice): DTensor issues the table's collective
        return x.redistribute(mesh, [target])
    return DTensor.from_local(out, mesh, [target], run_check=False, shape=shape, stride=stride)


class TensorParallelMLP(nn.Module):
    """``y = GELU(x W1 + b1) W2 + b2`` with ``W1`` column-split ``S(1)`` and ``W2`` row-split ``S(0)`` on a 1-D mesh.

    ``forward`` takes the local (replicated, ``B``) input and returns the replicated output; the hidden activation
    is ``S(1)``, the second matmul's output ``P``, and one all-reduce (``P -> B``) finishes the layer. The weights
    are DTensor parameters (their gradients are DTensors too); ``from_dense`` splits a single-process MLP's weights.
    """

    def __init__(self, mesh: DeviceMesh, d_model: int, d_hidden: int) -> None:
        super().__init__()
        if mesh.ndim != 1:
            raise ValueError(f"only 1-D device meshes are supported, got {mesh.ndim}-D")
        if d_hidden % mesh.size():
            raise ValueError(f"d_hidden {d_hidden} must be divisible by the {mesh.size()} devices")
        self.mesh = mesh
        bound1, bound2 = 1 / math.sqrt(d_model), 1 / math.sqrt(d_hidden)
        self.w1 = nn.Parameter(
            distribute_tensor(torch.empty(d_model, d_hidden).uniform_(-bound1, bound1), mesh, [Shard(1)])
        )
        self.b1 = nn.Parameter(distribute_tensor(torch.empty(d_hidden).uniform_(-bound1, bound1), mesh, [Shard(0)]))
        self.w2 = nn.Parameter(
            distribute_tensor(torch.empty(d_hidden, d_model).uniform_(-bound2, bound2), mesh, [Shard(0)])
        )
        self.b2 = nn.Parameter(distribute_tensor(torch.empty(d_model).uniform_(-bound2, bound2), mesh, [Replicate()]))

    @classmethod
    def from_dense(cls, mesh: DeviceMesh, fc1: nn.Linear, fc2: nn.Linear) -> TensorParallelMLP:
        """Split the weights of ``fc2(GELU(fc1(x)))`` (identical on every rank) over ``mesh``."""
        mlp = cls(mesh, fc1.in_features, fc1.out_features)
        for name, dense in (("w1", fc1.weight.T), ("b1", fc1.bias), ("w2", fc2.weight.T), ("b2", fc2.bias)):
            placements = getattr(mlp, name).placements
            setattr(mlp, name, nn.Parameter(distribute_tensor(dense.detach().contiguous(), mesh, placements)))
        return mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_global(x, "B", self.mesh)
        hidden = F.gelu(x @ self.w1 + self.b1)  # (B, S(1)) -> S(1); the bias S(0) of a vector matches
        partial = hidden @ self.w2  # (S(1), S(0)) -> P
        return (to_global(partial, "B") + self.b2).to_local()
