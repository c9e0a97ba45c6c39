"""The SGD-noise claim's experiment code: the (T, P) sweep, the crossing level read from it, the phase diagram."""

import math

import pytest
import torch
from torch import nn

from thrifty.batching.sgd_noise import AlphaScaledModel, FitResult
from thrifty.bench.claims.batching.sgd_noise import SweepResult, crossing_level, plot_phase_diagram, sweep


def _net(seed: int, d: int = 6, h: int = 32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, 1))


def _data(n: int, d: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    return x, torch.where(x[:, 0] + 0.5 * x[:, 1] > 0, 1.0, -1.0)


def test_sweep_and_phase_diagram(tmp_path):
    x, y = _data(40)
    x_test, y_test = _data(30, seed=1)
    calls = []
    result = sweep(
        lambda seed: AlphaScaledModel(_net(seed), 1.0),
        x,
        y,
        x_test,
        y_test,
        [10, 20],
        [0.01, 0.1],
        [0, 1],
        batch_size=5,
        max_steps=300,
        progress=calls.append,
    )
    assert len(calls) == 8 and set(result.runs) == {(p, t) for p in (10, 20) for t in (0.01, 0.1)}
    errors = result.mean("test_error")
    assert len(errors) == 2 and all(0.0 <= e <= 1.0 for row in errors for e in row)
    assert result.row("test_error", 20, 1) == [result.runs[(20, t)][1].test_error for t in (0.01, 0.1)]
    path = plot_phase_diagram(result, str(tmp_path / "phase.png"), critical=[0.05, math.nan])
    assert (tmp_path / "phase.png").stat().st_size > 0 and path.endswith("phase.png")
    with pytest.raises(ValueError, match="exceeds"):
        sweep(
            lambda seed: AlphaScaledModel(_net(seed), 1.0),
            x,
            y,
            x_test,
            y_test,
            [41],
            [0.1],
            [0],
            batch_size=5,
            max_steps=1,
        )


def _grid(values: dict[tuple[int, float], float]) -> SweepResult:
    sizes = sorted({p for p, _ in values})
    temps = sorted({t for _, t in values})
    result = SweepResult(sizes, temps)
    for key, v in values.items():
        result.runs[key] = [FitResult(True, 1, 0.0, v)]
    return result


def test_crossing_level_is_the_middle_of_the_band_every_size_crosses():
    result = _grid({(10, 0.1): 0.02, (10, 1.0): 0.8, (20, 0.1): 0.05, (20, 1.0): 0.2})
    level, table = crossing_level(result)
    assert level == pytest.approx(math.sqrt(0.05 * 0.2))  # above both plateaus, below both high-T values
    assert table["P=20, T=0.1 (plateau)"] == 0.05 and table["P=20, T=1"] == 0.2
    overlapping = _grid({(10, 0.1): 0.3, (10, 1.0): 0.8, (20, 0.1): 0.05, (20, 1.0): 0.2})
    assert math.isnan(crossing_level(overlapping)[0])  # one size's plateau above another's top: no common level
