"""Compression: quantization (``thrifty.compress.quant``), shared by optimizer states, weight quantizers and layers."""
