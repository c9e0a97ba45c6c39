"""AdaptiveBatchSize, its sampler, per-sample gradients and AdAdaGrad(-Norm) (arXiv 2402.11215)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from thrifty.batching import (
    AdAdaGrad,
    AdAdaGradNorm,
    AdaptiveBatchSampler,
    AdaptiveBatchSize,
    micro_batch_grads,
    per_sample_grads,
)
from thrifty.optim import AdaGrad, AdaGradNorm


def _ce(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def _data(n=64, d=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(classes, (n,), generator=g)


def _brute_force(rows, test, eta=0.5, theta=0.9, nu=5.84):
    """The required batch size from explicit loops over samples and coordinates (plain Python floats)."""
    g = rows.tolist()
    n, d = len(g), len(g[0])
    mean = [sum(g[i][j] for i in range(n)) / n for j in range(d)]
    sq = sum(m * m for m in mean)
    if test == "norm":
        var = sum(sum((g[i][j] - mean[j]) ** 2 for j in range(d)) for i in range(n)) / (n - 1)
        return var / (eta**2 * sq)
    if test == "inner_product":
        dots = [sum(g[i][j] * mean[j] for j in range(d)) for i in range(n)]
        var_ip = sum((dots[i] - sq) ** 2 for i in range(n)) / (n - 1)
        var_o = sum(sum((g[i][j] - dots[i] / sq * mean[j]) ** 2 for j in range(d)) for i in range(n)) / (n - 1)
        return max(var_ip / (theta**2 * sq**2), var_o / (nu**2 * sq))
    per_coord = []
    for j in range(d):
        var_j = sum((g[i][j] - mean[j]) ** 2 for i in range(n)) / (n - 1)
        per_coord.append(var_j / (eta**2 * mean[j] ** 2))
    return max(per_coord)


@pytest.mark.parametrize("test", ["norm", "inner_product", "coordinate"])
def test_required_size_matches_brute_force_variance(test):
    rows = torch.randn(12, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.3
    controller = AdaptiveBatchSize(12, 10_000, test=test)
    expected = _brute_force(rows, test)
    assert controller.required_batch_size(rows) == pytest.approx(expected, rel=1e-10)
    assert controller.required_batch_size(rows, micro_batch_size=4) == pytest.approx(4 * expected, rel=1e-10)
    nxt = controller.update(rows)
    assert nxt == min(10_000, max(12, math.ceil(expected)))


def test_coordinate_quantile_takes_the_kth_smallest_size():
    rows = torch.randn(10, 9, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 0.5
    mean = rows.mean(0)
    per_coord = sorted(((rows - mean).square().sum(0) / 9 / (0.25 * mean.square())).tolist())
    controller = AdaptiveBatchSize(4, 10_000, test="coordinate", coordinate_quantile=0.5)
    assert controller.required_batch_size(rows) == pytest.approx(per_coord[4], rel=1e-12)  # ceil(0.5 * 9) = 5th


@pytest.mark.parametrize("test", ["norm", "inner_product", "coordinate"])
def test_identical_per_sample_gradients_never_grow_the_batch(test):
    controller = AdaptiveBatchSize(8, 512, test=test, eta=0.01, theta=0.01, nu=0.01)
    for seed in range(5):
        row = torch.randn(30, generator=torch.Generator().manual_seed(seed))
        assert controller.update(row.expand(8, 30).clone()) == 8
    assert controller.history == [8] * 6


def test_identical_samples_through_autograd_never_grow_the_batch():
    model = torch.nn.Linear(5, 3)
    x, y = _data(1)
    opt = AdAdaGradNorm(model, _ce, lr=0.1, batch_size=6, max_batch_size=64, eta=0.01)
    for _ in range(3):
        opt.step((x.expand(6, 5), y.expand(6)))
    assert opt.controller.history == [6, 6, 6, 6]


def test_size_never_decreases_and_respects_the_cap():
    controller = AdaptiveBatchSize(4, 100)
    gen = torch.Generator().manual_seed(0)
    for k in range(40):
        # noise scale varies so that some steps ask for less than the current size and some for far more
        rows = torch.randn(controller.batch_size, 6, generator=gen) * (0.1 + (k % 5)) + 1.0
        before = controller.batch_size
        after = controller.update(rows)
        assert before <= after <= 100
    assert controller.history == sorted(controller.history)
    assert controller.batch_size == 100


def test_zero_mean_with_noise_goes_to_the_cap():
    rows = torch.tensor([[1.0, -2.0], [-1.0, 2.0]])
    for test in ("norm", "inner_product", "coordinate"):
        controller = AdaptiveBatchSize(2, 50, test=test)
        assert controller.required_batch_size(rows) == math.inf
        assert controller.update(rows) == 50


def test_bad_input_errors():
    with pytest.raises(ValueError, match=r"max_batch_size \(8\) is below the starting batch_size \(16\)"):
        AdaptiveBatchSize(16, 8)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        AdaptiveBatchSize(0, 8)
    with pytest.raises(ValueError, match="test must be one of"):
        AdaptiveBatchSize(2, 8, test="variance")
    with pytest.raises(ValueError, match="eta must be in"):
        AdaptiveBatchSize(2, 8, eta=0.0)
    with pytest.raises(ValueError, match="coordinate_quantile"):
        AdaptiveBatchSize(2, 8, coordinate_quantile=1.5)
    controller = AdaptiveBatchSize(2, 8)
    with pytest.raises(ValueError, match="2-D tensor"):
        controller.update(torch.ones(4))
    with pytest.raises(ValueError, match="at least 2 gradient rows"):
        controller.update(torch.ones(1, 3))
    with pytest.raises(ValueError, match="NaN or infinite"):
        controller.update(torch.tensor([[1.0, math.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="max_batch_size .* below"):
        AdAdaGradNorm(torch.nn.Linear(2, 2), _ce, batch_size=32, max_batch_size=16)
    with pytest.raises(ValueError, match="micro_batch_size must divide"):
        micro_batch_grads(torch.nn.Linear(5, 3), _ce, _data(6), 4)


def test_per_sample_and_micro_batch_gradients_match_autograd():
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    x, y = _data(8)
    rows, loss = per_sample_grads(model, _ce, (x, y))
    assert rows.shape == (8, sum(p.numel() for p in model.parameters()))
    for i in range(8):
        model.zero_grad()
        _ce(model, (x[i : i + 1], y[i : i + 1])).backward()
        expected = torch.cat([p.grad.flatten() for p in model.parameters()])
        torch.testing.assert_close(rows[i], expected)
    assert float(loss) == pytest.approx(float(_ce(model, (x, y))), rel=1e-6)
    micro, _ = micro_batch_grads(model, _ce, (x, y), 2)
    torch.testing.assert_close(micro, rows.view(4, 2, -1).mean(1))


def test_sampler_follows_the_controller_and_covers_a_pass():
    controller = AdaptiveBatchSize(3, 8)
    sampler = controller.sampler(20, generator=torch.Generator().manual_seed(0))
    assert isinstance(sampler, AdaptiveBatchSampler)
    sizes, seen = [], []
    for batch in sampler:
        sizes.append(len(batch))
        seen += batch
        controller.history.append(min(8, controller.batch_size + 2))  # as update would after a step
    assert sizes == [3, 5, 7, 5]  # the last batch is what is left of the pass
    assert sorted(seen) == list(range(20))
    assert [len(b) for b in AdaptiveBatchSampler(AdaptiveBatchSize(8, 8), 20, drop_last=True)] == [8, 8]


def test_adadagrad_norm_step_is_adagrad_norm_on_the_batch_gradient():
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    twin = torch.nn.Linear(5, 3)
    twin.load_state_dict(model.state_dict())
    reference = AdaGradNorm(twin.parameters(), lr=0.3, initial_accumulator_value=0.01)
    opt = AdAdaGradNorm(model, _ce, lr=0.3, initial_accumulator_value=0.01, batch_size=8, max_batch_size=64)
    assert isinstance(opt.optimizer, AdaGradNorm) and opt.controller.test == "norm"
    x, y = _data(64)
    loader = DataLoader(TensorDataset(x, y), batch_sampler=opt.sampler(64, generator=torch.Generator()))
    remaining = 64
    for batch in loader:
        assert len(batch[0]) == min(opt.batch_size, remaining)  # the loader reads the size batch by batch
        remaining -= len(batch[0])
        reference.zero_grad()
        _ce(twin, batch).backward()
        reference.step()
        opt.step(batch)
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert opt.controller.history == sorted(opt.controller.history)


def test_adadagrad_uses_adagrad_and_the_coordinate_test():
    opt = AdAdaGrad(torch.nn.Linear(5, 3), _ce, lr=0.1)
    assert isinstance(opt.optimizer, AdaGrad) and opt.controller.test == "coordinate"
    assert AdAdaGrad(torch.nn.Linear(5, 3), _ce, test="norm").controller.test == "norm"
    loss = opt.step(_data(16))
    assert math.isfinite(loss) and opt.batch_size >= 16
