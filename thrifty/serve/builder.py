"""An ``LLMEngine`` from a checkpoint folder and a policy name, the way ``thrifty serve`` and scripts build one.

``build_engine(model_dir, scheduler, budget, ...)`` loads a local Hugging Face Llama checkpoint (``None``: the embedded
model), checks the knobs and sizes the token budget: a policy that prefills whole prompts (its class says
``prefills_whole_prompts``) gets at least the model's context, since its budget must hold the longest sequence.
"""

from __future__ import annotations

from pathlib import Path

from thrifty.serve.engine import LLMEngine
from thrifty.serve.model.loader import DEFAULT_MODEL_DIR, load_pretrained
from thrifty.serve.sched import SCHEDULERS, SchedulerConfig

__all__ = ["DEFAULT_SERVED_NAME", "build_engine", "served_model_name"]

DEFAULT_SERVED_NAME = "thrifty-stdlib-llama"


def served_model_name(model_dir: str | Path | None) -> str:
    """The model id clients send: the checkpoint folder's name, or ``DEFAULT_SERVED_NAME`` for the embedded model."""
    return Path(model_dir).resolve().name if model_dir is not None else DEFAULT_SERVED_NAME


def build_engine(
    model_dir: str | Path | None = None,
    scheduler: str = "sarathi_serve",
    budget: int = 512,
    max_num_seqs: int = 128,
    num_blocks: int | None = None,
    enable_prefix_caching: bool = True,
) -> LLMEngine:
    """The engine serving the checkpoint in ``model_dir`` with policy ``scheduler``.

    ``budget`` is the token budget per step of chunking policies (whole-prompt policies get at least the context),
    ``max_num_seqs`` the most requests running at once, ``num_blocks`` the KV blocks (``None``: the engine's
    default pool). Raises ``ValueError`` for a bad knob or a checkpoint that cannot be read, ``FileNotFoundError``
    for a missing one.
    """
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose from {', '.join(sorted(SCHEDULERS))}")
    for name, value in (("budget", budget), ("max_num_seqs", max_num_seqs), ("num_blocks", num_blocks)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if model_dir is None and not (DEFAULT_MODEL_DIR / "config.json").is_file():
        raise FileNotFoundError(f"the embedded default model is not installed ({DEFAULT_MODEL_DIR}); pass a model")
    if model_dir is not None and Path(model_dir).is_file():
        raise ValueError(f"{str(model_dir)!r} is a file: give the checkpoint's folder (config.json, *.safetensors)")
    try:
        model, tokenizer = load_pretrained(model_dir)
    except KeyError as exc:
        raise ValueError(f"{model_dir} is not a Llama checkpoint: missing {exc}") from None
    if SCHEDULERS[scheduler].prefills_whole_prompts:
        budget = max(budget, model.config.max_position_embeddings)
    config = SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=min(max_num_seqs, budget))
    return LLMEngine(
        model, tokenizer, scheduler, config, num_blocks=num_blocks, enable_prefix_caching=enable_prefix_caching
    )
