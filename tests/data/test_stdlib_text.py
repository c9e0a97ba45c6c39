from __future__ import annotations

import pytest
import torch

from thrifty.data.stdlib_text import UNK_ID, VOCAB_SIZE, decode, encode, load_stdlib_corpus


def test_split_by_file_is_disjoint_and_non_empty():
    corpus = load_stdlib_corpus()
    assert corpus.files_train and corpus.files_val
    assert not set(corpus.files_train) & set(corpus.files_val)
    assert list(corpus.files_train) == sorted(corpus.files_train)
    assert all(name.endswith(".py") for name in corpus.files_train + corpus.files_val)
    assert len(corpus.train) > 5 * len(corpus.val) > 0
    assert corpus.vocab_size == VOCAB_SIZE
    assert int(corpus.train.max()) < VOCAB_SIZE and int(corpus.val.max()) < VOCAB_SIZE


def test_max_chars_truncates_both_splits():
    corpus = load_stdlib_corpus(max_chars=10_000)
    assert len(corpus.train) == 10_000 and len(corpus.val) == 1_000
    assert 1 <= len(corpus.files_train) < len(load_stdlib_corpus().files_train)
    assert torch.equal(corpus.train, load_stdlib_corpus().train[:10_000])


def test_encode_decode_round_trip():
    text = "def f(x):\n\treturn x ** 2  # ~!@{}[]\\\x7f"
    ids = encode(text)
    assert ids.dtype == torch.uint8 and len(ids) == len(text)
    assert decode(ids) == text
    assert load_stdlib_corpus(max_chars=100).decode(ids) == text


def test_non_ascii_maps_to_reserved_id():
    ids = encode("é€😀a")
    assert ids.tolist() == [UNK_ID, UNK_ID, UNK_ID, ord("a")]
    assert decode(ids) == "\ufffd\ufffd\ufffda"


def test_missing_sources_raise_a_clear_error(tmp_path):
    (tmp_path / "only.py").write_text("x = 1\n")
    with pytest.raises(FileNotFoundError, match="top-level .py files"):
        load_stdlib_corpus(stdlib_dir=tmp_path)


def test_corpus_is_the_same_on_every_load():
    a, b = load_stdlib_corpus(max_chars=50_000), load_stdlib_corpus(max_chars=50_000)
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val)
    assert a.files_val == b.files_val and a.python_version == b.python_version
