"""Sequential gradient coding for straggler mitigation (Krishnan, Ebrahimi and Khisti, arXiv 2211.13802).

``coding``: Tandon's cyclic gradient code and the sequential schemes (selective repetition, multiplexed
``SequentialGradientCoder``): task assignment, straggler tolerance (the wait rule's outcome) and exact decoding.
``simulation``: bursty straggler traces and a large-``n`` runtime simulator of the schemes.
"""

from thrifty.distributed.sgc.coding import (
    Coder,
    CyclicGradientCoder,
    SelectiveRepeatCoder,
    SequentialGradientCoder,
    Task,
    chunk_slices,
    cyclic_encoding_matrix,
    cyclic_support,
    decoding_vector,
    make_coder,
)
from thrifty.distributed.sgc.simulation import (
    SimulationResult,
    conforms,
    gilbert_elliott_trace,
    simulate,
    worker_times,
)

__all__ = [
    "Coder",
    "CyclicGradientCoder",
    "SelectiveRepeatCoder",
    "SequentialGradientCoder",
    "SimulationResult",
    "Task",
    "chunk_slices",
    "conforms",
    "cyclic_encoding_matrix",
    "cyclic_support",
    "decoding_vector",
    "gilbert_elliott_trace",
    "make_coder",
    "simulate",
    "worker_times",
]
