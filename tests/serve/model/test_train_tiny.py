"""The embedded default model: the training script end to end at toy size, and the committed checkpoint."""

from __future__ import annotations

import json
import math

import torch

from thrifty.serve.engine import LLM
from thrifty.serve.model.loader import DEFAULT_MODEL_DIR, load_pretrained
from thrifty.serve.model.train_tiny import main, unigram_nll
from thrifty.serve.sampling import SamplingParams


def test_unigram_baseline_is_the_smoothed_frequency_cross_entropy():
    train = torch.tensor([0, 0, 1, 2])
    val = torch.tensor([0, 2])
    # add-one counts over a vocabulary of 4: [3, 2, 2, 1] / 8
    expected = -(math.log(3 / 8) + math.log(2 / 8)) / 2
    assert abs(unigram_nll(train, val, 4) - expected) < 1e-12


def test_training_script_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "tiny"
    args = ["--out", str(out), "--max-chars", "30000", "--steps", "4", "--warmup", "2", "--eval-every", "2"]
    args += ["--vocab-size", "300", "--hidden-size", "32", "--intermediate-size", "48", "--layers", "1"]
    args += ["--heads", "2", "--kv-heads", "1", "--seq-len", "32", "--batch-size", "2", "--context", "64"]
    assert main(args) == 0
    report = json.loads((out / "training.json").read_text())
    assert report["seed"] == 0 and report["command"].startswith("OMP_NUM_THREADS=1 python -m thrifty.serve")
    assert [h["step"] for h in report["history"]] == [2, 4]
    model, tok = load_pretrained(out)
    assert model.config.max_position_embeddings == 64 and tok.vocab_size == 300
    assert tok.eos_token_ids == (0,) and tok.decode(tok.encode("x = 1\n")) == "x = 1\n"


def test_the_embedded_model_beats_the_unigram_baseline_and_writes_code():
    report = json.loads((DEFAULT_MODEL_DIR / "training.json").read_text())
    assert report["heldout_perplexity"] < report["unigram_perplexity"] / 5
    assert (DEFAULT_MODEL_DIR / "model.safetensors").stat().st_size < 8.5 * 2**20
    llm = LLM()  # no model given: the embedded one
    prompt = "class Foo:\n    def __init__(self"
    [out] = llm.generate(prompt, SamplingParams(max_tokens=24, temperature=0), progress=False)
    assert len(out.token_ids) == 24 and "return" in out.text and "\n        " in out.text  # an indented body
