"""Quantization: the block-wise 8-bit core (code maps, quantize/dequantize with one absmax per block)."""

from thrifty.compress.quant.blockwise import (
    CodeLookup,
    Quantized,
    dequantize_blockwise,
    dynamic_map,
    linear_map,
    nearest_code,
    quantize_blockwise,
    stochastic_code,
)

__all__ = [
    "CodeLookup",
    "Quantized",
    "dequantize_blockwise",
    "dynamic_map",
    "linear_map",
    "nearest_code",
    "quantize_blockwise",
    "stochastic_code",
]
