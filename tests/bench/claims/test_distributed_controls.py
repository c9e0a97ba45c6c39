"""Negative controls for the distributed claims: a broken method is not held, and the baseline under the method's
name is never held.

Each runs the claim machinery at smoke scale with one piece swapped in the claim's module (in the parent process: what
the spawned processes need travels to them as arguments, so a swap there reaches them too).
"""

import importlib

import pytest

from thrifty.bench.claim import HELD, NOT_HELD
from thrifty.bench.claims import get_claim
from thrifty.bench.runner import run_claims


def _module(key: str):
    get_claim(key)  # loads every claim module
    return importlib.import_module(f"thrifty.bench.claims.distributed.{key}")


def _verdict(key: str, seeds: int = 3) -> str:
    (result,) = run_claims([get_claim(key)], scale="smoke", seeds=seeds).results
    assert result.error is None, result.error
    return result.verdict


@pytest.mark.slow
def test_monna_with_plain_averaging_is_not_held(monkeypatch):
    """MoNNA's nearest-neighbour averaging replaced by the mean: the large-norm attack breaks it."""
    monkeypatch.setitem(_module("monna").METHODS, "MoNNA", "mean")
    assert _verdict("monna") == NOT_HELD


@pytest.mark.slow
def test_sgc_with_gc_as_the_method_is_not_held(monkeypatch):
    """GC judged against itself: the same tuned parameters, the same simulated runtime, no 8% gain."""
    monkeypatch.setitem(_module("sgc").SCHEMES, "method", "gc")
    assert _verdict("sgc") == NOT_HELD


@pytest.mark.slow
def test_one_byte_with_a_saturated_int8_code_is_not_held(monkeypatch):
    """A clip a million times too small: every int8 projected gradient saturates and fine-tuning stalls."""
    module = _module("one_byte")
    monkeypatch.setattr(module, "_calibrate_clip", lambda state, seed: 1e-6)
    assert _verdict("one_byte") == NOT_HELD


@pytest.mark.slow
def test_one_byte_with_one_process_as_the_method_is_never_held(monkeypatch):
    """K = 1: the 'K processes' run is the single-process baseline itself."""
    monkeypatch.setattr(_module("one_byte"), "ONE_BYTE_PROCESSES", 1)
    assert _verdict("one_byte") != HELD


@pytest.mark.slow
def test_oneflow_against_a_wrong_cost_table_is_not_held(monkeypatch):
    """A table that predicts twice the bytes of every conversion disagrees with what the processes write."""
    module = _module("oneflow")
    cost = module.boxing_cost
    monkeypatch.setattr(module, "boxing_cost", lambda src, dst, nbytes, p: 2 * cost(src, dst, nbytes, p) + nbytes)
    assert _verdict("oneflow") == NOT_HELD
