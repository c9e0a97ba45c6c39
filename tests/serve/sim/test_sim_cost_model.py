"""The roofline cost model: hand-computed cases, model shapes, and its fit to Vidur's GPU profiles."""

from __future__ import annotations

import math

import pytest

from thrifty.serve.sim.cost_model import (
    FITTED,
    GEMM_OPS,
    CostModel,
    OpCalibration,
    calibration_report,
    fit_constants,
)
from thrifty.serve.sim.hardware import UnknownGPUError, get_gpu
from thrifty.serve.sim.model_specs import UnknownModelError, get_model


def test_model_shapes_match_published_sizes():
    llama2 = get_model("llama2-7b")
    assert llama2.num_params() == 6_738_415_616  # Hugging Face Llama-2-7b-hf parameter count
    assert llama2.kv_bytes_per_token() == 512 * 1024
    assert get_model("mistral-7b").kv_bytes_per_token() == 128 * 1024
    assert get_model("llama-13b").kv_bytes_per_token() == 800 * 1024
    assert get_model("mistral-7b").attention_context(10_000) == 4096
    with pytest.raises(UnknownModelError, match="known models"):
        get_model("gpt-5")
    with pytest.raises(UnknownGPUError, match="known GPUs"):
        CostModel("llama2-7b", "tpu")


def test_gemm_roofline_by_hand():
    cal = OpCalibration(eta_c=0.5, eta_m=0.5, launch_s=1e-5, tile=64)
    cost = CostModel("llama2-7b", "a100", constants={**FITTED["a100"], "mlp_up_proj": cal})
    a100 = get_gpu("a100")
    k, n = 4096, 2 * 11008
    for tokens, padded in ((100, 128), (1, 64)):
        flops = 2 * k * n * padded
        nbytes = 2 * (k * n + tokens * (k + n))
        expected = max(flops / (312e12 * 0.5), nbytes / (2039e9 * 0.5)) + 1e-5
        assert a100.peak_flops == 312e12 and a100.mem_bandwidth == 2039e9
        assert cost.op_time("mlp_up_proj", tokens)[0] == pytest.approx(expected, rel=1e-12)
    # one token is bandwidth-bound (weights dominate), 4096 tokens compute-bound
    assert cost.op_time("mlp_up_proj", 1)[0] == pytest.approx(2 * (k * n + k + n) / (2039e9 * 0.5) + 1e-5)
    assert cost.op_time("mlp_up_proj", 4096)[0] == pytest.approx(2 * k * n * 4096 / (312e12 * 0.5) + 1e-5)


def test_attention_by_hand():
    cal = OpCalibration(eta_c=0.5, eta_m=0.7, launch_s=1e-5, tile=1)
    cost = CostModel("llama2-7b", "a100", attention={"prefill": cal, "decode": cal})
    heads, hd, layers = 32, 128, 32
    # a decode at context 1000 reads the KV of 1000 tokens (plus Q/O and its own new KV) in every layer
    kv = 2 * heads * hd * 2
    nbytes = 2 * heads * hd * 2 + 1001 * kv
    flops = 4 * heads * hd * 1000
    per_layer = max(flops / (312e12 * 0.5), nbytes / (2039e9 * 0.7)) + 1e-5
    assert cost.attention_time([], [1000]) == pytest.approx(layers * per_layer, rel=1e-12)
    # a 256-token chunk after 512 cached tokens: 4 * heads * hd * q * (c + (q + 1) / 2) FLOPs
    flops = 4 * heads * hd * 256 * (512 + 257 / 2)
    nbytes = 256 * 2 * heads * hd * 2 + (768 + 256) * kv
    per_layer = max(flops / (312e12 * 0.5), nbytes / (2039e9 * 0.7)) + 1e-5
    assert cost.attention_time([(256, 512)], []) == pytest.approx(layers * per_layer, rel=1e-12)


def test_batch_time_composition_and_piggybacking():
    cost = CostModel("mistral-7b", "a100")
    chunk, decodes = [(480, 1000)], [1000] * 32
    hybrid = cost.batch_time(chunk, decodes, 32)
    expected = cost.linear_time(512) + cost.attention_time(chunk, decodes) + cost.head_time(32)
    assert hybrid == pytest.approx(expected)
    assert cost.batch_time([], [], 0) == 0.0
    # decodes ride on the chunk's compute-bound matmuls: far cheaper than a decode-only step
    marginal = hybrid - cost.batch_time(chunk, [], 0)
    assert marginal < 0.5 * cost.batch_time([], decodes, 32)
    # more tokens never cost less; an H100 is faster than an A100
    times = [cost.linear_time(t) for t in (1, 64, 512, 2048)]
    assert times == sorted(times)
    assert CostModel("mistral-7b", "h100").batch_time(chunk, decodes, 32) < hybrid


def test_fit_reproduces_profile_timings():
    """Stated error: every GEMM within 12% mean absolute relative error of the profile medians, every other
    operator (microsecond element-wise kernels) within 20%, on every GPU and model profiled."""
    report = calibration_report()
    assert {r["gpu"] for r in report} == {"a100", "h100"}
    for row in report:
        bound = 0.12 if row["op"] in GEMM_OPS else 0.20
        assert row["mape"] <= bound, row


def test_stored_constants_are_the_fit():
    """Refitting (H100, one GEMM and one element-wise operator: the whole fit takes seconds) gives the stored values."""
    fitted = fit_constants(gpus=["h100"], ops=["attn_post_proj", "mlp_act"])
    for gpu, ops in fitted.items():
        for op, cal in ops.items():
            stored = FITTED[gpu][op]
            assert (stored.eta_c, stored.eta_m, stored.tile) == (cal.eta_c, cal.eta_m, cal.tile), (gpu, op)
            assert math.isclose(stored.launch_s, cal.launch_s, rel_tol=1e-3), (gpu, op)
