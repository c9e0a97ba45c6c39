"""The test-model helpers: the byte tokenizer round-trips text, a random Llama saved by ``save_pretrained`` loads
back with the same logits (in its own dtype, or cast)."""

from __future__ import annotations

import json

import torch

from thrifty.serve.model.loader import load_pretrained, save_pretrained
from thrifty.serve.model.testing import RANDOM_LLAMA_CONFIG, byte_tokenizer, random_llama

SMALL = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def test_byte_tokenizer_round_trips_and_a_saved_random_llama_reloads(tmp_path):
    tok = byte_tokenizer()
    text = "def f(x):\n    return 'héllo' + x  # ∑\n"
    ids = tok.encode(text)
    assert ids == [b + 1 for b in text.encode()] and tok.decode(ids) == text and tok.vocab_size == 257
    model = random_llama(seed=3, vocab_size=tok.vocab_size, **SMALL)
    assert model.config.max_position_embeddings == RANDOM_LLAMA_CONFIG["max_position_embeddings"]
    loaded, loaded_tok = load_pretrained(save_pretrained(model, tok, tmp_path / "ckpt"))
    x = torch.tensor([ids[:20]])
    assert torch.equal(loaded.forward_dense(x), model.forward_dense(x))
    assert loaded_tok.encode(text) == ids and loaded.config.eos_token_ids == (0,)
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]


def test_save_pretrained_casts_weights_when_asked_and_random_llama_is_seeded(tmp_path):
    model = random_llama(seed=1, vocab_size=50, **SMALL)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.parameters(), random_llama(seed=1, vocab_size=50, **SMALL).parameters(), strict=True)
    )
    assert not torch.equal(model.lm_head.weight, random_llama(seed=2, vocab_size=50, **SMALL).lm_head.weight)
    half, tok = load_pretrained(
        save_pretrained(model, None, tmp_path / "half", dtype=torch.float16), dtype=torch.float16
    )
    assert tok is None and half.dtype == torch.float16
    assert torch.equal(half.lm_head.weight, model.lm_head.weight.half())
    wide = random_llama(seed=1, dtype=torch.float64, vocab_size=50, **SMALL)
    assert wide.dtype == torch.float64 and torch.equal(wide.lm_head.weight.float(), model.lm_head.weight)
