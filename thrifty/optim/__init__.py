"""Optimizers: ``torch.optim.Optimizer`` subclasses, a name registry and a state-memory counter."""

from thrifty.optim._core import state_bytes
from thrifty.optim.adagrad import AdaGrad, AdaGradNorm
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
from thrifty.optim.sgd_sai import SGDSaI
from thrifty.optim.soap import SOAP

__all__ = [
    "FRUGAL",
    "SOAP",
    "AdaGrad",
    "AdaGradNorm",
    "DiffGrad",
    "OptimInfo",
    "SGDSaI",
    "UnknownOptimizerError",
    "create_optimizer",
    "frugal_param_groups",
    "get_optimizer_class",
    "list_optimizers",
    "register_optimizer",
    "state_bytes",
]
