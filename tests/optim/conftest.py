"""Helpers several optimizer test modules share, given to them as fixtures (test modules never import each other).

- ``official_mlp``: the small tanh MLP of the official-trajectory fixtures (diffGrad, SGD-SaI).
- ``lowbit_problem``: the float32 problem of the bitsandbytes 8-bit trajectory fixture (Adam8bit, SGD8bit).
- ``lowbit_paths``, ``select_fused``, ``fused_mode``, ``native_build``: run an 8-bit optimizer's fused paths (the
  native kernel under several compiler flags, or the torch.compile kernel) against its eager reference.
"""

from __future__ import annotations

import io
import json
import platform
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"


def _load_json(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


class OfficialMLP:
    """A fixture stores the problem (data and initial parameters), the optimizer's two param groups and the
    parameters after every step of the official code; these helpers rebuild and train the same problem."""

    NAMES = ("W1", "b1", "W2", "b2")
    F64 = torch.float64

    @staticmethod
    def load(name: str) -> dict:
        return _load_json(name)

    @staticmethod
    def options(spec: dict) -> dict:
        """Optimizer keyword arguments from JSON (lists back to tuples for ``betas``)."""
        return {k: tuple(v) if k == "betas" else v for k, v in spec.items()}

    @classmethod
    def build_optimizer(
        cls, opt_cls: type, official: dict, params: list[torch.Tensor], **extra
    ) -> torch.optim.Optimizer:
        """The fixture's two groups: weights with the defaults, biases with ``group1``'s overrides."""
        spec = official["optimizer"]
        group1 = {"params": [params[1], params[3]], **cls.options(spec["group1"])}
        return opt_cls([{"params": [params[0], params[2]]}, group1], **{**cls.options(spec["defaults"]), **extra})

    @classmethod
    def problem(cls, official: dict, init: dict | None = None) -> tuple[list[torch.Tensor], Callable[[], torch.Tensor]]:
        """The fixture's MLP: leaf parameters (W1, b1, W2, b2) and a loss closure over its points."""
        spec = official["problem"]
        init = init or {k: torch.tensor(spec["init"][k], dtype=cls.F64) for k in cls.NAMES}
        params = [init[k].clone().requires_grad_(True) for k in cls.NAMES]
        x = torch.tensor(spec["x"], dtype=cls.F64)
        y = torch.tensor(spec["y"], dtype=cls.F64)

        def loss_fn() -> torch.Tensor:
            w1, b1, w2, b2 = params
            return ((torch.tanh(x @ w1.T + b1) @ w2.T + b2 - y) ** 2).mean()

        return params, loss_fn

    @staticmethod
    def negated(loss_fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        return lambda: -loss_fn()

    @staticmethod
    def train(
        opt: torch.optim.Optimizer, params: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], steps: int
    ) -> list[list[torch.Tensor]]:
        """Parameters after each of ``steps`` steps."""
        trajectory = []
        for _ in range(steps):
            opt.zero_grad()
            loss_fn().backward()
            opt.step()
            trajectory.append([p.detach().clone() for p in params])
        return trajectory

    @classmethod
    def assert_resume_is_bit_identical(cls, opt_cls: type, official: dict, **extra) -> None:
        """Train 20 steps; separately train 8, save to bytes, load into fresh objects, train 12: equal bits."""
        params, loss_fn = cls.problem(official)
        full = cls.train(cls.build_optimizer(opt_cls, official, params, **extra), params, loss_fn, 20)

        params, loss_fn = cls.problem(official)
        opt = cls.build_optimizer(opt_cls, official, params, **extra)
        cls.train(opt, params, loss_fn, 8)
        buffer = io.BytesIO()
        torch.save({"params": [p.detach() for p in params], "optim": opt.state_dict()}, buffer)
        buffer.seek(0)
        saved = torch.load(buffer)

        params, loss_fn = cls.problem(official, dict(zip(cls.NAMES, saved["params"], strict=True)))
        opt = cls.build_optimizer(opt_cls, official, params, **extra)
        opt.load_state_dict(saved["optim"])
        resumed = cls.train(opt, params, loss_fn, 12)
        for a, b in zip(full[8:], resumed, strict=True):
            for x, y in zip(a, b, strict=True):
                assert torch.equal(x, y)


class LowbitProblem:
    """The float32 problem of the bitsandbytes 8-bit trajectory fixture, rebuilt from its seed, and a runner."""

    NAMES = ("W1", "b1", "W2", "b2")

    @staticmethod
    def load_fixture() -> dict:
        return _load_json("bnb_8bit_trajectories.json")

    @staticmethod
    def problem() -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Parameters [W1, b1, W2, b2] and data (x, y), drawn as the fixture's note says."""
        g = torch.Generator().manual_seed(2110)
        x = torch.randn(64, 66, generator=g)
        teacher = torch.randn(41, 66, generator=g) / 8
        y = torch.tanh(x @ teacher.T)
        w1 = torch.randn(100, 66, generator=g) / 8
        w2 = torch.randn(41, 100, generator=g) / 10
        params = [w1, torch.zeros(100), w2, torch.zeros(41)]
        return [p.requires_grad_(True) for p in params], x, y

    @staticmethod
    def loss_fn(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w1, b1, w2, b2 = params
        return ((torch.tanh(x @ w1.T + b1) @ w2.T + b2 - y) ** 2).mean()

    @classmethod
    def run(
        cls, make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer], steps: int
    ) -> tuple[list[float], list[torch.Tensor], torch.optim.Optimizer]:
        """Losses before each step and the final parameters of ``steps`` full-batch steps."""
        params, x, y = cls.problem()
        opt = make_optimizer(params)
        losses = []
        for _ in range(steps):
            opt.zero_grad()
            loss = cls.loss_fn(params, x, y)
            losses.append(loss.item())
            loss.backward()
            opt.step()
        return losses, [p.detach() for p in params], opt

    @classmethod
    def deviation(
        cls, run_fixture: dict, losses: list[float], params: list[torch.Tensor], subsample: int
    ) -> tuple[float, float]:
        """Largest relative loss gap over the steps, and relative L2 gap of the final (subsampled) parameters."""
        ref_loss = torch.tensor(run_fixture["loss"])
        loss_gap = ((torch.tensor(losses) - ref_loss).abs() / ref_loss).max().item()
        ours = torch.cat([p.reshape(-1)[::subsample] for p in params])
        ref = torch.cat([torch.tensor(run_fixture["final_subsampled"][n]) for n in cls.NAMES])
        return loss_gap, ((ours - ref).norm() / ref.norm()).item()


def scaled_grads(params: list[torch.Tensor], step: int) -> None:
    """Gradients over five orders of magnitude (10^-2 .. 10^2, cycling with the step)."""
    g = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 10.0 ** (step % 5 - 2)


class LowbitPaths:
    """Compare two 8-bit optimizers (a fused path and the eager reference) step by step."""

    scaled_grads = staticmethod(scaled_grads)

    @staticmethod
    def close(a: torch.Tensor, b: torch.Tensor) -> bool:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, check_dtype=False)
        return True

    @classmethod
    def assert_same(cls, opt_a, params_a, opt_b, params_b) -> None:
        """8-bit states and their parameters equal bit for bit; 32-bit ones to float32 rounding (fused=False runs
        torch's single-tensor Adam on them, the other paths torch's fused kernel, which rounds differently)."""
        for x, y in zip(params_a, params_b, strict=True):
            quantized = "state1" not in opt_a.state[x] or opt_a.state[x]["state1"].dtype == torch.uint8
            same = torch.equal if quantized else cls.close
            assert same(x, y)
            for key, value in opt_a.state[x].items():
                assert same(torch.as_tensor(value), torch.as_tensor(opt_b.state[y][key])), key

    @classmethod
    def step_alike(cls, opt_a, params_a, opt_b, params_b, steps: int, grads=scaled_grads) -> None:
        """Step both optimizers on the same gradients, checking ``assert_same`` after every step."""
        for step in range(steps):
            grads(params_a, step)
            grads(params_b, step)
            opt_a.step()
            opt_b.step()
            cls.assert_same(opt_a, params_a, opt_b, params_b)


# fused=True runs the native kernel (extra compiler flags: none, AVX-512 without byte permutes, plain C)
# and, with THRIFTY_NATIVE=0 (None here), the torch.compile kernel, whose first compile takes seconds: slow tier.
BUILDS = ["", "-mno-avx512vbmi", "-mno-avx512f"] if platform.machine() in ("x86_64", "AMD64") else [""]
BUILD_IDS = [f"native{flags}" for flags in BUILDS]


@pytest.fixture(scope="session")
def official_mlp() -> type[OfficialMLP]:
    return OfficialMLP


@pytest.fixture(scope="session")
def lowbit_problem() -> type[LowbitProblem]:
    return LowbitProblem


@pytest.fixture(scope="session")
def lowbit_paths() -> type[LowbitPaths]:
    return LowbitPaths


@pytest.fixture
def select_fused(monkeypatch: pytest.MonkeyPatch) -> Callable[[str | None], None]:
    """``select_fused(cflags)``: the native kernel built with ``cflags`` (the compiled kernel must not run then),
    or with ``None`` the torch.compile kernel."""

    def select(cflags: str | None) -> None:
        import thrifty.optim._lowbit as lowbit

        if cflags is None:
            monkeypatch.setenv("THRIFTY_NATIVE", "0")
            return
        monkeypatch.setenv("THRIFTY_NATIVE_CFLAGS", cflags)

        def fail(*args):
            raise AssertionError("the torch.compile kernel ran instead of the native one")

        monkeypatch.setattr(lowbit, "_COMPILED", fail)

    return select


@pytest.fixture(params=[*BUILDS, pytest.param(None, marks=pytest.mark.slow)], ids=[*BUILD_IDS, "compiled"])
def fused_mode(request: pytest.FixtureRequest, select_fused) -> str | None:
    """Every fused path in turn (native builds, then the torch.compile kernel), selected; the mode."""
    select_fused(request.param)
    return request.param


@pytest.fixture(params=BUILDS, ids=BUILD_IDS)
def native_build(request: pytest.FixtureRequest, select_fused) -> str:
    """Every native build in turn, selected; its compiler flags."""
    select_fused(request.param)
    return request.param
