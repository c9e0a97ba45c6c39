"""Layers and blocks."""

from thrifty.nn.stable_embedding import StableEmbedding

__all__ = ["StableEmbedding"]
