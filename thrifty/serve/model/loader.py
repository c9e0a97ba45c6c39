"""Load Hugging Face Llama checkpoints from a local directory (no network), and the embedded default model.

A checkpoint directory holds ``config.json`` (Hugging Face ``LlamaConfig`` fields), the weights as
``model.safetensors`` or shards listed in ``model.safetensors.index.json``, and optionally ``tokenizer.json``
(loaded through ``tokenizers``) and ``generation_config.json`` (extra EOS ids). Weights are cast to ``dtype``.
``save_pretrained`` writes such a directory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from thrifty.serve.model.llama import LlamaConfig, LlamaForCausalLM

__all__ = ["DEFAULT_MODEL_DIR", "TextTokenizer", "load_llama", "load_pretrained", "load_tokenizer", "save_pretrained"]

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "stdlib-llama"


class TextTokenizer:
    """Text <-> token ids through a ``tokenizers.Tokenizer``; ``eos_token_ids`` end generation."""

    def __init__(self, tokenizer, eos_token_ids: Iterable[int] = ()) -> None:  # tokenizers.Tokenizer
        self.tokenizer = tokenizer
        self.eos_token_ids = tuple(dict.fromkeys(eos_token_ids))

    @classmethod
    def from_file(cls, path: str | Path, eos_token_ids: Iterable[int] = ()) -> TextTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)), eos_token_ids)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text`` (``add_special_tokens`` applies the tokenizer's post-processor, e.g. Llama's BOS)."""
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def _checkpoint_dir(path: str | Path) -> Path:
    d = Path(path)
    if not d.is_dir():
        raise FileNotFoundError(f"model directory {str(d)!r} does not exist (only local checkpoints are loaded)")
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"{d} has no config.json: not a Hugging Face checkpoint directory")
    return d


def _weight_files(d: Path) -> list[Path]:
    index = d / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(_read_json(index)["weight_map"].values()))
        missing = [s for s in shards if not (d / s).is_file()]
        if missing:
            raise FileNotFoundError(f"{d}: shards listed in model.safetensors.index.json are missing: {missing}")
        return [d / s for s in shards]
    if (d / "model.safetensors").is_file():
        return [d / "model.safetensors"]
    found = sorted(d.glob("*.safetensors"))
    if found:
        return found
    raise FileNotFoundError(f"{d} has no *.safetensors weights (PyTorch .bin checkpoints are not supported)")


def load_llama(
    path: str | Path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> LlamaForCausalLM:
    """The ``LlamaForCausalLM`` of a local Hugging Face checkpoint, weights cast to ``dtype``, in eval mode."""
    d = _checkpoint_dir(path)
    config = LlamaConfig.from_dict(_read_json(d / "config.json"))
    gen_path = d / "generation_config.json"
    if gen_path.is_file():
        gen_eos = _read_json(gen_path).get("eos_token_id")
        if gen_eos is not None:
            ids = list(config.eos_token_ids) + (gen_eos if isinstance(gen_eos, list) else [gen_eos])
            config.eos_token_id = list(dict.fromkeys(ids))
    with torch.device(device):  # (not "meta": materialising meta modules imports torch's compiler stack, seconds)
        model = LlamaForCausalLM(config).to(dtype)
    state: dict[str, torch.Tensor] = {}
    for f in _weight_files(d):
        state.update(load_file(str(f), device=str(device)))
    model.load_hf_state_dict({k: v.to(dtype) for k, v in state.items()})
    return model.eval().requires_grad_(False)


def load_tokenizer(path: str | Path, eos_token_ids: Iterable[int] = ()) -> TextTokenizer | None:
    """The ``tokenizer.json`` of a checkpoint directory through ``tokenizers``, or ``None`` when there is none."""
    f = Path(path) / "tokenizer.json"
    return TextTokenizer.from_file(f, eos_token_ids) if f.is_file() else None


def load_pretrained(
    path: str | Path | None = None, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> tuple[LlamaForCausalLM, TextTokenizer | None]:
    """Model and tokenizer of a local checkpoint; ``None`` loads the embedded default model (``DEFAULT_MODEL_DIR``)."""
    d = DEFAULT_MODEL_DIR if path is None else Path(path)
    model = load_llama(d, dtype, device)
    return model, load_tokenizer(d, model.config.eos_token_ids)


def save_pretrained(
    model: LlamaForCausalLM,
    tokenizer: TextTokenizer | None,
    path: str | Path,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model`` (weights in ``dtype``, default the model's own) and ``tokenizer`` (when given) as a Hugging
    Face Llama directory that ``load_pretrained``, ``thrifty serve --model`` and ``transformers`` load; returns it."""
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    tensors = {k: (v if dtype is None else v.to(dtype)).contiguous() for k, v in model.hf_state_dict().items()}
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.tokenizer.save(str(d / "tokenizer.json"))
    return d
