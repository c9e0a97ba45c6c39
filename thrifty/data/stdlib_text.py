"""A character-level code corpus taken from the running interpreter's standard library.

It needs no download and is the same on every machine with the same Python version, which
``StdlibCorpus.python_version`` records. The corpus is the top-level ``*.py`` files of
``sysconfig.get_paths()["stdlib"]`` (no subpackages, no site-packages) in sorted order; every
10th file (sorted positions 9, 19, ...) is validation, the rest training, so no file leaks into
both. Files are joined with one newline.

Encoding: a character with code point below 128 is its own id; every other character maps to
the reserved id ``UNK_ID = 128`` (decoded as U+FFFD), so the vocabulary has 129 ids.
"""

from __future__ import annotations

import platform
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["UNK_ID", "VOCAB_SIZE", "StdlibCorpus", "decode", "encode", "load_stdlib_corpus"]

UNK_ID = 128
VOCAB_SIZE = 129
VAL_EVERY = 10


@dataclass(frozen=True)
class StdlibCorpus:
    """Training and validation character ids (uint8) and the files each split came from."""

    train: Tensor
    val: Tensor
    vocab_size: int
    files_train: tuple[str, ...]
    files_val: tuple[str, ...]
    python_version: str

    def decode(self, ids: Tensor | Iterable[int]) -> str:
        return decode(ids)


def encode(text: str) -> Tensor:
    """Character ids of ``text`` as uint8: ASCII is kept, anything else becomes ``UNK_ID``."""
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return torch.from_numpy(np.where(codes < 128, codes, UNK_ID).astype(np.uint8))


def decode(ids: Tensor | Iterable[int]) -> str:
    """The text of ``ids``; ``UNK_ID`` decodes to U+FFFD, so only ASCII text round-trips exactly."""
    values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
    return "".join(chr(i) if i < 128 else "\ufffd" for i in values)


@dataclass(frozen=True)
class _Split:
    ids: Tensor
    files: tuple[str, ...]
    starts: tuple[int, ...]

    def head(self, n: int | None) -> tuple[Tensor, tuple[str, ...]]:
        """The first ``n`` ids and the files that contribute to them."""
        if n is None:
            return self.ids, self.files
        return self.ids[:n], tuple(f for f, s in zip(self.files, self.starts, strict=True) if s < n)


def _join(paths: list[Path]) -> _Split:
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in paths]
    starts = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]]).tolist()
    return _Split(encode("\n".join(texts)), tuple(p.name for p in paths), tuple(starts))


@lru_cache(maxsize=4)
def _read(stdlib_dir: str) -> tuple[_Split, _Split]:
    files = sorted(p for p in Path(stdlib_dir).glob("*.py") if p.is_file())
    if len(files) < VAL_EVERY:
        raise FileNotFoundError(
            f"the standard-library directory {stdlib_dir!r} has {len(files)} top-level .py files; "
            f"the stdlib corpus needs at least {VAL_EVERY} (is this a stripped Python install?)"
        )
    train = [p for i, p in enumerate(files) if i % VAL_EVERY != VAL_EVERY - 1]
    return _join(train), _join(files[VAL_EVERY - 1 :: VAL_EVERY])


def load_stdlib_corpus(max_chars: int | None = None, *, stdlib_dir: str | Path | None = None) -> StdlibCorpus:
    """The stdlib corpus, optionally truncated so that small configs load and index fast.

    ``max_chars`` keeps the first ``max_chars`` training characters and the first
    ``max(max_chars // 10, 1)`` validation characters (the natural ratio of the two splits);
    ``None`` keeps everything. ``files_train``/``files_val`` list the files that contribute to the
    kept characters. ``stdlib_dir`` defaults to the running interpreter's stdlib.
    Files are read once per directory and cached; the tensors returned are fresh copies.
    """
    if max_chars is not None and max_chars < 1:
        raise ValueError(f"max_chars must be in [1, inf) or None, got {max_chars}")
    directory = str(stdlib_dir if stdlib_dir is not None else sysconfig.get_paths()["stdlib"])
    train_split, val_split = _read(directory)
    val_chars = None if max_chars is None else max(max_chars // VAL_EVERY, 1)
    train, files_train = train_split.head(max_chars)
    val, files_val = val_split.head(val_chars)
    return StdlibCorpus(
        train=train.clone(),
        val=val.clone(),
        vocab_size=VOCAB_SIZE,
        files_train=files_train,
        files_val=files_val,
        python_version=platform.python_version(),
    )
