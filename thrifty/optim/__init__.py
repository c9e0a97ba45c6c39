"""Optimizers: ``torch.optim.Optimizer`` subclasses, a name registry and a state-memory counter."""

from thrifty.optim._core import state_bytes
from thrifty.optim._lowbit import keep_32bit_state
from thrifty.optim.adagrad import AdaGrad, AdaGradNorm
from thrifty.optim.adam8bit import Adam8bit, AdamW8bit
from thrifty.optim.diffgrad import DiffGrad
from thrifty.optim.factory import (
    OptimInfo,
    UnknownOptimizerError,
    create_optimizer,
    get_optimizer_class,
    list_optimizers,
    register_optimizer,
)
from thrifty.optim.frugal import FRUGAL, frugal_param_groups
from thrifty.optim.sgd8bit import SGD8bit
from thrifty.optim.sgd_sai import SGDSaI
from thrifty.optim.soap import SOAP

__all__ = [
    "FRUGAL",
    "SGD8bit",
    "SOAP",
    "Adam8bit",
    "AdamW8bit",
    "AdaGrad",
    "AdaGradNorm",
    "DiffGrad",
    "OptimInfo",
    "SGDSaI",
    "UnknownOptimizerError",
    "create_optimizer",
    "frugal_param_groups",
    "get_optimizer_class",
    "keep_32bit_state",
    "list_optimizers",
    "register_optimizer",
    "state_bytes",
]
