"""Layers and blocks."""

from thrifty.nn.global_lbl import GlobalLoadBalancingLoss, MoELayer
from thrifty.nn.stable_embedding import StableEmbedding

__all__ = ["GlobalLoadBalancingLoss", "MoELayer", "StableEmbedding"]
