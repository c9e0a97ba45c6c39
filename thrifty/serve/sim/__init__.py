"""A discrete-event serving simulator driven by the real schedulers and a GPU roofline cost model calibrated on
Vidur's operator profiles (pure Python + numpy). Every number it produces is simulated, labelled with its GPU."""

from thrifty.serve.sim.capacity import CapacityResult, SimulatedLoad, capacity_search, strict_tbt_slo
from thrifty.serve.sim.cost_model import CostModel, calibration_report
from thrifty.serve.sim.hardware import GPUS, GPUSpec, get_gpu
from thrifty.serve.sim.model_specs import MODELS, ModelSpec, get_model
from thrifty.serve.sim.simulator import SLO, SimResult, Simulator, default_config, kv_cache_blocks
from thrifty.serve.sim.workloads import RequestSpec, load_trace, shared_prefix_batch, trace_requests

__all__ = [
    "GPUS",
    "MODELS",
    "SLO",
    "CapacityResult",
    "CostModel",
    "GPUSpec",
    "ModelSpec",
    "RequestSpec",
    "SimResult",
    "SimulatedLoad",
    "Simulator",
    "calibration_report",
    "capacity_search",
    "default_config",
    "get_gpu",
    "get_model",
    "kv_cache_blocks",
    "load_trace",
    "shared_prefix_batch",
    "strict_tbt_slo",
    "trace_requests",
]
