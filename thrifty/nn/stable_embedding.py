"""The stable embedding layer of "8-bit Optimizers via Block-wise Quantization" (Dettmers et al., arXiv 2110.02861).

Language models see a few tokens very often and most rarely, so embedding gradients are sparse
and uneven, and 8-bit states of the embedding destabilise training. The paper's fix, as in
bitsandbytes' ``bnb.nn.StableEmbedding``: Xavier-uniform initialisation, a LayerNorm applied to
the looked-up vectors, and 32-bit optimizer state for the embedding weight.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from thrifty.optim._lowbit import keep_32bit_state

__all__ = ["StableEmbedding"]


class StableEmbedding(nn.Embedding):
    """``nn.Embedding`` with Xavier-uniform init and a LayerNorm after the lookup.

    Its ``weight`` is marked with ``thrifty.optim.keep_32bit_state`` (the attribute
    ``weight.thrifty_state_bits == 32``), which ``Adam8bit``, ``AdamW8bit`` and ``SGD8bit`` honour
    by keeping fp32 state for it whatever its size. The LayerNorm's own parameters are small and
    stay in 32 bit under the 4096-element rule. Arguments are those of ``nn.Embedding``, plus the
    ``device``/``dtype`` factory keywords; ``sparse=True`` is refused (the optimizers need dense
    gradients).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        _weight: Tensor | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if sparse:
            raise ValueError("StableEmbedding needs dense gradients (sparse=False) for the 8-bit optimizers")
        super().__init__(
            num_embeddings,
            embedding_dim,
            padding_idx,
            max_norm,
            norm_type,
            scale_grad_by_freq,
            sparse,
            _weight,
            device=device,
            dtype=dtype,
        )
        self.norm = nn.LayerNorm(embedding_dim, device=device, dtype=dtype)
        keep_32bit_state(self.weight)

    def reset_parameters(self) -> None:
        """Xavier-uniform weights (not ``nn.Embedding``'s N(0, 1)), zero at ``padding_idx``."""
        nn.init.xavier_uniform_(self.weight)
        self._fill_padding_idx_with_zero()

    def forward(self, input: Tensor) -> Tensor:
        return self.norm(super().forward(input))
