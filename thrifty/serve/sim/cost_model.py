"""A per-operator roofline cost model of one forward pass of a Llama-style decoder, calibrated on GPU profiles.

Every operator of a layer is timed as a roofline (Williams et al., CACM 2009) with fitted efficiencies::

    t = max(FLOPs / (peak * eta_c), bytes / (bandwidth * eta_m)) + launch

Linear layers run once over all ``T`` tokens of the batch (prefill chunks and decodes together, SARATHI's fused GEMM);
their FLOPs use ``T`` rounded up to the GEMM tile (tile quantisation). Element-wise operators (norms, RoPE, SiLU-mul,
residual adds, embedding gather) are bandwidth-bound. Attention is timed from its own FLOPs and KV bytes: a prefill
chunk of ``q`` tokens after ``c`` cached ones costs ``4 * heads * head_dim * q * (c + (q + 1) / 2)`` FLOPs and reads
the keys and values of ``c + q`` tokens; a decode reads the KV of its whole context. A batch costs::

    layers * (sum of layer operators(T) + prefill attention + decode attention) + embedding(T)
        + final norm and LM head over the sequences that sample + per-iteration overhead

as in Vidur's ``ExecutionTime`` (arXiv 2405.05465), with the learned regressors replaced by the fitted roofline.

Calibration (``fit_constants``): for each GPU and operator the efficiencies, the launch term and the tile are fitted
by least squares on relative error against the median timings ``time_stats.<op>.median`` of Vidur's profiles
(``data/gpu-profiles/<gpu>_<model>_mlp.csv``, shipped with the package: Llama-2-7B on A100 and H100, Llama-3-8B on
A100, every ``num_tokens`` and tensor-parallel degree, shapes per worker). ``eta_c`` and ``eta_m`` are searched on a
grid of 0.02 steps, the tile among 1, 16, 32, 64, 128, and the launch term is the closed-form least-squares optimum
(clipped at 0) for each grid point. ``FITTED`` holds the result, printed by ``python -m thrifty.serve.sim.cost_model``
from the data folder (the cost model uses the stored fit, not a new one); ``calibration_report`` gives the
per-operator error. The profiles hold no attention kernels: attention uses the assumed efficiencies in ``ATTENTION`` (cited
there), not fitted ones.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from thrifty.serve.sim.hardware import GPUSpec, get_gpu
from thrifty.serve.sim.model_specs import ModelSpec, get_model

__all__ = [
    "ATTENTION",
    "DEFAULT_DATA_DIR",
    "FITTED",
    "GEMM_OPS",
    "OPS",
    "CostModel",
    "OpCalibration",
    "calibration_report",
    "fit_constants",
    "load_profiles",
    "op_shape_cost",
]

# Vidur's traces and GPU profiles (MIT), shipped with the package: see data/README.md.
DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data"

OPS = (
    "emb",
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
)
GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
_TILES = (1, 16, 32, 64, 128)
_GRID = np.round(np.arange(0.02, 1.0001, 0.02), 4)


@dataclass(frozen=True)
class OpCalibration:
    """Fitted roofline constants of one operator on one GPU (``eta_c`` is unused by bandwidth-bound operators)."""

    eta_c: float
    eta_m: float
    launch_s: float
    tile: int


# Fitted by ``python -m thrifty.serve.sim.cost_model`` from DEFAULT_DATA_DIR/gpu-profiles (Vidur's A100/H100 profiles).
FITTED: dict[str, dict[str, OpCalibration]] = {
    "a100": {
        "emb": OpCalibration(eta_c=1.00, eta_m=0.16, launch_s=3.087e-06, tile=1),
        "input_layernorm": OpCalibration(eta_c=1.00, eta_m=0.40, launch_s=2.298e-06, tile=1),
        "attn_pre_proj": OpCalibration(eta_c=0.72, eta_m=0.86, launch_s=8.223e-06, tile=128),
        "attn_rope": OpCalibration(eta_c=1.00, eta_m=0.44, launch_s=2.019e-06, tile=1),
        "attn_post_proj": OpCalibration(eta_c=0.68, eta_m=0.80, launch_s=5.443e-06, tile=64),
        "post_attention_layernorm": OpCalibration(eta_c=1.00, eta_m=0.38, launch_s=2.128e-06, tile=1),
        "mlp_up_proj": OpCalibration(eta_c=0.74, eta_m=0.78, launch_s=9.111e-06, tile=128),
        "mlp_act": OpCalibration(eta_c=1.00, eta_m=0.48, launch_s=1.881e-06, tile=1),
        "mlp_down_proj": OpCalibration(eta_c=0.76, eta_m=0.72, launch_s=5.804e-06, tile=128),
        "add": OpCalibration(eta_c=1.00, eta_m=1.00, launch_s=1.109e-06, tile=1),
    },
    "h100": {
        "emb": OpCalibration(eta_c=1.00, eta_m=0.18, launch_s=2.370e-06, tile=1),
        "input_layernorm": OpCalibration(eta_c=1.00, eta_m=0.44, launch_s=2.525e-06, tile=1),
        "attn_pre_proj": OpCalibration(eta_c=0.70, eta_m=1.00, launch_s=8.077e-06, tile=128),
        "attn_rope": OpCalibration(eta_c=1.00, eta_m=0.54, launch_s=1.729e-06, tile=1),
        "attn_post_proj": OpCalibration(eta_c=0.68, eta_m=1.00, launch_s=5.765e-06, tile=128),
        "post_attention_layernorm": OpCalibration(eta_c=1.00, eta_m=0.40, launch_s=2.227e-06, tile=1),
        "mlp_up_proj": OpCalibration(eta_c=0.72, eta_m=1.00, launch_s=9.927e-06, tile=128),
        "mlp_act": OpCalibration(eta_c=1.00, eta_m=0.56, launch_s=1.491e-06, tile=1),
        "mlp_down_proj": OpCalibration(eta_c=0.76, eta_m=1.00, launch_s=7.614e-06, tile=128),
        "add": OpCalibration(eta_c=1.00, eta_m=1.00, launch_s=7.168e-07, tile=1),
    },
}

# Attention efficiencies (assumed, not fitted: the profiles hold no attention kernel). Prefill: FlashAttention-2
# reaches 50-73% of the A100's peak in the forward pass (Dao, arXiv 2307.08691, Fig. 5) and about 35% of the H100's
# (FlashAttention-3, arXiv 2407.08608, Fig. 5, FA2 baseline); we take the low ends, since chunks with a KV-cache
# offset run the paged variable-length kernel. Decode: paged attention streams the KV cache at a fraction of the
# bandwidth; we take 0.7. Launch: 10 microseconds per kernel.
ATTENTION: dict[str, dict[str, OpCalibration]] = {
    "a100": {
        "prefill": OpCalibration(eta_c=0.5, eta_m=0.7, launch_s=10e-6, tile=1),
        "decode": OpCalibration(eta_c=0.5, eta_m=0.7, launch_s=10e-6, tile=1),
    },
    "h100": {
        "prefill": OpCalibration(eta_c=0.35, eta_m=0.7, launch_s=10e-6, tile=1),
        "decode": OpCalibration(eta_c=0.35, eta_m=0.7, launch_s=10e-6, tile=1),
    },
}


@dataclass(frozen=True)
class _Shape:
    """Per-worker shape of a layer: hidden, heads, kv heads, head dim, intermediate, vocab, TP degree."""

    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tp: int = 1
    dtype_bytes: int = 2

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def op_shape_cost(op: str, tokens: np.ndarray, shape: _Shape) -> tuple[np.ndarray, np.ndarray, bool]:
    """FLOPs, bytes and whether ``op`` is a GEMM, for ``tokens`` tokens on one worker of ``shape``.

    GEMM FLOPs are returned per token (the caller rounds tokens up to the tile): ``2 * K * N``.
    """
    t = np.asarray(tokens, dtype=np.float64)
    b, d, hd, tp = shape.dtype_bytes, shape.hidden, shape.head_dim, shape.tp
    if op in GEMM_OPS:
        k, n = {
            "attn_pre_proj": (d, (shape.heads + 2 * shape.kv_heads) * hd // tp),
            "attn_post_proj": (d // tp, d),
            "mlp_up_proj": (d, 2 * shape.intermediate // tp),
            "mlp_down_proj": (shape.intermediate // tp, d),
        }[op]
        return np.full_like(t, 2.0 * k * n), b * (k * n + t * (k + n)), True
    per_token = {
        "emb": 2 * d,
        "input_layernorm": 2 * d,
        "post_attention_layernorm": 2 * d,
        "attn_rope": 2 * (shape.heads + shape.kv_heads) * hd // tp,
        "mlp_act": 3 * shape.intermediate // tp,
        "add": 3 * d,
    }[op]
    return np.zeros_like(t), b * per_token * t, False


def _roofline(op: str, tokens: np.ndarray, shape: _Shape, gpu: GPUSpec, cal: OpCalibration) -> np.ndarray:
    flops_per_token, nbytes, gemm = op_shape_cost(op, tokens, shape)
    memory = nbytes / (gpu.mem_bandwidth * cal.eta_m)
    if not gemm:
        return memory + cal.launch_s
    padded = np.ceil(np.asarray(tokens, dtype=np.float64) / cal.tile) * cal.tile
    return np.maximum(flops_per_token * padded / (gpu.peak_flops * cal.eta_c), memory) + cal.launch_s


# ---------------------------------------------------------------------------------------------- calibration data


@dataclass
class _Profile:
    gpu: str
    model: str
    shapes: list[_Shape]
    tokens: np.ndarray
    times: dict[str, np.ndarray]  # seconds, per op


def load_profiles(data_dir: str | Path | None = None) -> list[_Profile]:
    """Vidur's per-operator profiles under ``<data_dir>/gpu-profiles`` (empty list if the folder is absent)."""
    folder = Path(data_dir if data_dir is not None else DEFAULT_DATA_DIR) / "gpu-profiles"
    profiles = []
    for path in sorted(folder.glob("*_mlp.csv")) if folder.is_dir() else []:
        gpu, _, model = path.name.removesuffix("_mlp.csv").partition("_")
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        shapes = [
            _Shape(
                hidden=int(r["n_embd"]),
                heads=int(r["n_head"]),
                kv_heads=int(r["n_kv_head"]),
                intermediate=int(r["n_expanded_embd"]),
                vocab=int(r["vocab_size"]),
                tp=int(r["num_tensor_parallel_workers"]),
            )
            for r in rows
        ]
        times = {op: np.array([float(r[f"time_stats.{op}.median"]) * 1e-3 for r in rows]) for op in OPS}
        tokens = np.array([float(r["num_tokens"]) for r in rows])
        profiles.append(_Profile(gpu, model, shapes, tokens, times))
    return profiles


def _op_arrays(profiles: Sequence[_Profile], op: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Tokens, FLOPs per token, bytes and measured seconds of ``op`` over all rows of ``profiles``."""
    tokens, flops, nbytes, times = [], [], [], []
    gemm = False
    for p in profiles:
        for shape in set(p.shapes):
            mask = np.array([s == shape for s in p.shapes])
            f, b, gemm = op_shape_cost(op, p.tokens[mask], shape)
            tokens.append(p.tokens[mask])
            flops.append(f)
            nbytes.append(b)
            times.append(p.times[op][mask])
    return np.concatenate(tokens), np.concatenate(flops), np.concatenate(nbytes), np.concatenate(times), gemm


def _best_launch(model: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form launch term minimising sum(((model + l - y) / y)^2) over the last axis (clipped at 0), and SSE."""
    w = 1.0 / y**2
    launch = np.clip(((y - model) * w).sum(-1) / w.sum(), 0.0, None)
    sse = ((((model + launch[..., None]) - y) / y) ** 2).sum(-1)
    return launch, sse


def _fit_op(profiles: Sequence[_Profile], op: str, gpu: GPUSpec) -> OpCalibration:
    tokens, flops, nbytes, y, gemm = _op_arrays(profiles, op)
    memory = nbytes[None, :] / (gpu.mem_bandwidth * _GRID[:, None])  # (grid, n)
    if not gemm:
        launch, sse = _best_launch(memory, y)
        i = int(np.argmin(sse))
        return OpCalibration(eta_c=1.0, eta_m=float(_GRID[i]), launch_s=float(launch[i]), tile=1)
    best = (math.inf, None)
    for tile in _TILES:
        compute_flops = flops * np.ceil(tokens / tile) * tile
        for eta_c in _GRID:
            model = np.maximum(compute_flops[None, :] / (gpu.peak_flops * eta_c), memory)
            launch, sse = _best_launch(model, y)
            i = int(np.argmin(sse))
            if sse[i] < best[0]:
                best = (sse[i], OpCalibration(float(eta_c), float(_GRID[i]), float(launch[i]), tile))
    return best[1]


def fit_constants(
    data_dir: str | Path | None = None, gpus: Sequence[str] | None = None, ops: Sequence[str] = OPS
) -> dict[str, dict[str, OpCalibration]]:
    """Fit ``OpCalibration`` per GPU (all profiled, or ``gpus``) and operator (``ops``), all models of a GPU
    together."""
    profiles = load_profiles(data_dir)
    if not profiles:
        raise FileNotFoundError(f"no gpu-profiles/*_mlp.csv under {data_dir or DEFAULT_DATA_DIR}")
    fitted: dict[str, dict[str, OpCalibration]] = {}
    for gpu_key in sorted({p.gpu for p in profiles} if gpus is None else gpus):
        mine = [p for p in profiles if p.gpu == gpu_key]
        fitted[gpu_key] = {op: _fit_op(mine, op, get_gpu(gpu_key)) for op in ops}
    return fitted


def calibration_report(
    data_dir: str | Path | None = None, constants: dict[str, dict[str, OpCalibration]] | None = None
) -> list[dict[str, float | str | int]]:
    """Relative error of the roofline against each profile's median timings, per GPU, model and operator.

    Rows: ``gpu``, ``model``, ``op``, ``n`` (rows of the profile), ``mape`` (mean absolute relative error),
    ``p90`` (90th percentile of it) and ``max``. ``constants`` defaults to ``FITTED`` (the stored fit).
    """
    constants = FITTED if constants is None else constants
    report = []
    for p in load_profiles(data_dir):
        gpu = get_gpu(p.gpu)
        for op in OPS:
            _, _, _, y, _ = _op_arrays([p], op)
            pred = np.concatenate(
                [
                    _roofline(op, p.tokens[np.array([s == shape for s in p.shapes])], shape, gpu, constants[p.gpu][op])
                    for shape in set(p.shapes)
                ]
            )
            err = np.abs(pred - y) / y
            report.append(
                {
                    "gpu": p.gpu,
                    "model": p.model,
                    "op": op,
                    "n": int(y.size),
                    "mape": float(err.mean()),
                    "p90": float(np.quantile(err, 0.9)),
                    "max": float(err.max()),
                }
            )
    return report


# ------------------------------------------------------------------------------------------------- the cost model


class CostModel:
    """Simulated seconds of one forward pass (one scheduler step) of ``model`` on ``gpu``.

    ``overhead_s`` is a fixed per-iteration cost (scheduling, sampling, input preparation); 0 by default, as Vidur
    skips CPU-overhead modelling by default. ``constants`` overrides the fitted operator constants.
    """

    def __init__(
        self,
        model: str | ModelSpec,
        gpu: str | GPUSpec,
        overhead_s: float = 0.0,
        constants: dict[str, OpCalibration] | None = None,
        attention: dict[str, OpCalibration] | None = None,
    ) -> None:
        self.model = get_model(model)
        self.gpu = get_gpu(gpu)
        if overhead_s < 0:
            raise ValueError(f"overhead_s must be >= 0, got {overhead_s}")
        self.overhead_s = overhead_s
        calibrated = self.gpu.calibrated_as
        self.constants = dict(FITTED[calibrated] if constants is None else constants)
        self.attention = dict(ATTENTION[calibrated] if attention is None else attention)
        m = self.model
        self._shape = _Shape(m.hidden, m.num_heads, m.num_kv_heads, m.intermediate, m.vocab, 1, m.dtype_bytes)
        self._linear_cache: dict[int, float] = {}
        self._head_cache: dict[int, float] = {}
        # attention constants per token, hoisted for the per-step loop
        hd, b = m.head_dim, m.dtype_bytes
        self._attn_flops = 4.0 * m.num_heads * hd
        self._q_bytes = 2.0 * m.num_heads * hd * b  # read Q, write O
        self._kv_bytes = m.kv_bytes_per_token() / m.num_layers  # K and V of one token in one layer

    @property
    def label(self) -> str:
        return self.gpu.label()

    def op_time(self, op: str, tokens: int | np.ndarray) -> np.ndarray:
        """Seconds of one layer operator (an ``OPS`` name) over ``tokens`` tokens."""
        return _roofline(op, np.atleast_1d(tokens), self._shape, self.gpu, self.constants[op])

    def linear_time(self, tokens: int) -> float:
        """Seconds of every non-attention operator of all layers, plus the embedding, for ``tokens`` tokens."""
        cached = self._linear_cache.get(tokens)
        if cached is None:
            layer = sum(float(self.op_time(op, tokens)[0]) for op in OPS if op not in ("emb", "add"))
            layer += 2 * float(self.op_time("add", tokens)[0])
            cached = self.model.num_layers * layer + float(self.op_time("emb", tokens)[0])
            self._linear_cache[tokens] = cached
        return cached

    def head_time(self, num_seqs: int) -> float:
        """Final norm and LM head over the ``num_seqs`` last tokens that produce logits."""
        if num_seqs == 0:
            return 0.0
        cached = self._head_cache.get(num_seqs)
        if cached is None:
            m = self.model
            cal = self.constants["mlp_up_proj"]  # the widest GEMM's efficiencies
            flops = 2.0 * m.hidden * m.vocab * math.ceil(num_seqs / cal.tile) * cal.tile
            nbytes = m.dtype_bytes * (m.hidden * m.vocab + num_seqs * (m.hidden + m.vocab))
            gemm = max(flops / (self.gpu.peak_flops * cal.eta_c), nbytes / (self.gpu.mem_bandwidth * cal.eta_m))
            cached = gemm + cal.launch_s + float(self.op_time("input_layernorm", num_seqs)[0])
            self._head_cache[num_seqs] = cached
        return cached

    def attention_time(self, prefills: Iterable[tuple[int, int]], decode_contexts: Iterable[int]) -> float:
        """Seconds of attention in all layers: ``prefills`` as (chunk tokens, cached tokens before the chunk),
        decodes by their context length (tokens whose KV is read, the new one included)."""
        window = self.model.sliding_window
        flops = nbytes = 0.0
        n_prefill = 0
        for q, c in prefills:
            attended = c + (q + 1) / 2
            kv = c + q
            if window is not None:
                attended, kv = min(attended, window), min(kv, window)
            flops += q * attended
            nbytes += q * self._q_bytes + (kv + q) * self._kv_bytes
            n_prefill += 1
        total = 0.0
        if n_prefill:
            cal = self.attention["prefill"]
            total += (
                max(
                    flops * self._attn_flops / (self.gpu.peak_flops * cal.eta_c),
                    nbytes / (self.gpu.mem_bandwidth * cal.eta_m),
                )
                + cal.launch_s
            )
        flops = nbytes = 0.0
        n_decode = 0
        for ctx in decode_contexts:
            kv = ctx if window is None else min(ctx, window)
            flops += kv
            nbytes += self._q_bytes + (kv + 1) * self._kv_bytes
            n_decode += 1
        if n_decode:
            cal = self.attention["decode"]
            total += (
                max(
                    flops * self._attn_flops / (self.gpu.peak_flops * cal.eta_c),
                    nbytes / (self.gpu.mem_bandwidth * cal.eta_m),
                )
                + cal.launch_s
            )
        return self.model.num_layers * total

    def batch_time(
        self, prefills: Sequence[tuple[int, int]], decode_contexts: Sequence[int], num_sampled: int
    ) -> float:
        """Seconds of one step: linear layers over all tokens, attention, and the LM head over ``num_sampled``."""
        tokens = sum(q for q, _ in prefills) + len(decode_contexts)
        if tokens == 0:
            return 0.0
        return (
            self.linear_time(tokens)
            + self.attention_time(prefills, decode_contexts)
            + self.head_time(num_sampled)
            + self.overhead_s
        )

    def decode_iteration_time(self, batch_size: int, context: int) -> float:
        """One decode-only step of ``batch_size`` sequences at ``context`` tokens each (for SLO definitions)."""
        return self.batch_time([], [context] * batch_size, batch_size)


def _format_constants(fitted: dict[str, dict[str, OpCalibration]]) -> str:
    lines = ["FITTED: dict[str, dict[str, OpCalibration]] = {"]
    for gpu, ops in fitted.items():
        lines.append(f'    "{gpu}": {{')
        for op, c in ops.items():
            lines.append(
                f'        "{op}": OpCalibration(eta_c={c.eta_c:.2f}, eta_m={c.eta_m:.2f}, '
                f"launch_s={c.launch_s:.3e}, tile={c.tile}),"
            )
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines)


if __name__ == "__main__":
    constants = fit_constants()
    print(_format_constants(constants))
    for row in calibration_report(constants=constants):
        print(f"{row['gpu']:5s} {row['model']:20s} {row['op']:26s} mape {row['mape']:.3f} p90 {row['p90']:.3f}")
