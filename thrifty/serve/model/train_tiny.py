"""Train the embedded default model of ``thrifty.serve``: a small Llama on the Python standard library source.

The corpus is ``thrifty.data.stdlib_text`` (top-level stdlib ``*.py`` files of the running interpreter; every 10th
file is held out). A byte-level BPE tokenizer (``tokenizers``, GPT-2 style pre-tokenizer, ``<|endoftext|>`` as id 0)
is trained on the training split only. The model is ``thrifty.serve.model.llama.LlamaForCausalLM`` trained with
AdamW under bfloat16 autocast on random windows of the training tokens, cosine learning rate with warm-up; the
checkpoint (written every ``--eval-every`` steps and at the end; no selection on held-out data) is in Hugging Face
layout (``config.json``, ``model.safetensors`` in float16, ``tokenizer.json``) with ``training.json`` recording
the command, seed, versions, held-out perplexity and the unigram baseline (token frequencies of the training
split, add-one smoothed) on the same held-out tokens.

    OMP_NUM_THREADS=1 python -m thrifty.serve.model.train_tiny --out thrifty/serve/assets/stdlib-llama
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from thrifty.data.stdlib_text import decode, load_stdlib_corpus
from thrifty.serve.model.llama import LlamaConfig, LlamaForCausalLM
from thrifty.serve.model.loader import TextTokenizer, save_pretrained

EOS = "<|endoftext|>"


def train_tokenizer(text: str, vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer with ``<|endoftext|>`` as id 0, trained on ``text``."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer)
    return tok


def unigram_nll(train_ids: torch.Tensor, val_ids: torch.Tensor, vocab_size: int) -> float:
    """Mean negative log-likelihood (nats) of ``val_ids`` under add-one smoothed training token frequencies."""
    counts = torch.bincount(train_ids, minlength=vocab_size).double() + 1.0
    logp = (counts / counts.sum()).log()
    return float(-logp[val_ids].mean())


@torch.no_grad()
def evaluate(model: LlamaForCausalLM, ids: torch.Tensor, seq_len: int, max_windows: int | None = None) -> float:
    """Mean next-token NLL (nats) over non-overlapping windows of ``ids`` (every token predicted once)."""
    model.eval()
    n = (ids.numel() - 1) // seq_len
    if max_windows is not None:
        n = min(n, max_windows)
    total, count = 0.0, 0
    for start in range(0, n, 16):
        rows = range(start, min(start + 16, n))
        x = torch.stack([ids[r * seq_len : r * seq_len + seq_len + 1] for r in rows])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model.forward_dense(x[:, :-1])
        total += float(F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten(), reduction="sum"))
        count += x[:, 1:].numel()
    model.train()
    return total / count


@torch.no_grad()
def sample(model: LlamaForCausalLM, tok: Tokenizer, prompt: str, n: int, seed: int) -> str:
    """``n`` tokens sampled at temperature 0.8 after ``prompt`` (dense forward, for the training log)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    ids = tok.encode(prompt).ids
    for _ in range(n):
        ctx = torch.tensor([ids[-model.config.max_position_embeddings :]])
        probs = torch.softmax(model.forward_dense(ctx)[0, -1].float() / 0.8, -1)
        ids.append(int(torch.multinomial(probs, 1, generator=gen)))
    model.train()
    return tok.decode(ids)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--intermediate-size", type=int, default=512)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--context", type=int, default=512, help="max_position_embeddings of the saved model")
    p.add_argument("--seq-len", type=int, default=256, help="training window")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--max-chars", type=int, default=None, help="truncate the corpus (smoke runs)")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    t0 = time.perf_counter()

    corpus = load_stdlib_corpus(args.max_chars)
    train_text, val_text = decode(corpus.train), decode(corpus.val)
    tok = train_tokenizer(train_text, args.vocab_size)
    train_ids = torch.tensor(tok.encode(train_text).ids, dtype=torch.long)
    val_ids = torch.tensor(tok.encode(val_text).ids, dtype=torch.long)
    vocab = tok.get_vocab_size()
    print(f"tokens: train {train_ids.numel()} val {val_ids.numel()} vocab {vocab}", flush=True)

    eos = tok.token_to_id(EOS)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.context,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.02)
                if name.endswith(("o_proj.weight", "down_proj.weight")):
                    param.mul_(1 / math.sqrt(2 * args.layers))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters", flush=True)
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
        fused=True,
    )

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        progress = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    gen = torch.Generator().manual_seed(args.seed)
    history = []
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        starts = torch.randint(0, train_ids.numel() - args.seq_len - 1, (args.batch_size,), generator=gen)
        x = torch.stack([train_ids[s : s + args.seq_len + 1] for s in starts.tolist()])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model.forward_dense(x[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0:
            elapsed = time.perf_counter() - t0
            print(f"step {step} loss {loss.item():.4f} lr {lr_at(step):.2e} {elapsed:.0f}s", flush=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            val = evaluate(model, val_ids, args.seq_len, max_windows=64)
            history.append({"step": step + 1, "train_loss": round(loss.item(), 4), "val_loss_subset": round(val, 4)})
            print(f"eval step {step + 1}: held-out subset loss {val:.4f}", flush=True)
            save_pretrained(model, TextTokenizer(tok), args.out, dtype=torch.float16)

    final = LlamaForCausalLM(config)
    final.load_hf_state_dict({k: v.float() for k, v in load_file(str(args.out / "model.safetensors")).items()})
    val_nll = evaluate(final, val_ids, args.seq_len)
    uni = unigram_nll(train_ids, val_ids, vocab)
    chars_per_token = len(val_text) / val_ids.numel()
    report = {
        "command": "OMP_NUM_THREADS=1 python -m thrifty.serve.model.train_tiny " + " ".join(sys.argv[1:]),
        "seed": args.seed,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "parameters": n_params,
        "weights_dtype": "float16",
        "corpus": "thrifty.data.stdlib_text (top-level stdlib *.py, every 10th file held out)",
        "python_version": corpus.python_version,
        "torch_version": torch.__version__,
        "train_tokens": train_ids.numel(),
        "heldout_tokens": val_ids.numel(),
        "heldout_chars_per_token": round(chars_per_token, 3),
        "steps": args.steps,
        "heldout_loss_nats": round(val_nll, 4),
        "heldout_perplexity": round(math.exp(val_nll), 2),
        "heldout_bits_per_char": round(val_nll / math.log(2) / chars_per_token, 3),
        "unigram_perplexity": round(math.exp(uni), 2),
        "unigram_bits_per_char": round(uni / math.log(2) / chars_per_token, 3),
        "history": history,
        "train_seconds": round(time.perf_counter() - t0, 1),
        "platform": platform.platform(),
        "sample_prompt": "def ",
        "sample": sample(final, tok, "def ", 96, args.seed),
    }
    (args.out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
