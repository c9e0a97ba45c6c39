from __future__ import annotations

import math

import pytest
import torch

from thrifty.bench.experiment import RunSpec, default_device
from thrifty.bench.workloads import (
    WORKLOADS,
    NonFiniteLossError,
    Task,
    UnknownWorkloadError,
    fit,
    get_workload,
    list_workloads,
    make_task,
)
from thrifty.bench.workloads.digits import DigitsBatches

# Small configs so the whole module runs in seconds; the defaults are exercised separately.
SMALL = {
    "digits_mlp": {},
    "digits_cnn": {"width": 8},
    "logreg": {},
    "charlm": {
        "n_layer": 1,
        "d_model": 32,
        "n_head": 2,
        "context": 32,
        "batch_size": 16,
        "max_chars": 100_000,
        "eval_batches": 4,
    },
    "rosenbrock": {"init_noise": 0.1},
    "noisy_quadratic": {"init_noise": 0.1},
}
CLASSIFIERS = {"digits_mlp", "digits_cnn", "logreg"}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """These models are too small to gain from intra-op threads, and on a shared 2-core machine
    two spinning OpenMP threads make them up to 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_task(name: str, seed: int = 0) -> Task:
    return make_task(name, seed, **SMALL[name])


def flat_params(task: Task) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in task.model.parameters()])


def batches(task: Task, n: int = 3) -> list[object]:
    return [task.next_batch() for _ in range(n)]


def same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_registry_is_consistent():
    assert list_workloads() == sorted(SMALL)
    for name, info in WORKLOADS.items():
        assert info.name == name and info.description
        task = small_task(name)
        assert task.name == name
        metrics = task.evaluate(task.model)
        assert "val_loss" in metrics and info.metric in metrics
        assert ("val_acc" in metrics) == (name in CLASSIFIERS)
        assert info.higher_is_better == (info.metric == "val_acc")


def test_unknown_workload_lists_valid_names():
    with pytest.raises(UnknownWorkloadError) as excinfo:
        get_workload("nope")
    message = str(excinfo.value)
    assert isinstance(excinfo.value, KeyError) and "\n" not in message
    assert "'nope'" in message and all(name in message for name in WORKLOADS)
    with pytest.raises(UnknownWorkloadError):
        make_task("nope")


def test_unknown_config_key_is_rejected():
    with pytest.raises(TypeError):
        make_task("digits_mlp", hiddn=32)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_same_seed_same_weights_and_batches(name):
    a, b = small_task(name, seed=3), small_task(name, seed=3)
    assert torch.equal(flat_params(a), flat_params(b))
    assert same(batches(a), batches(b))
    assert a.config == b.config and a.config["seed"] == 3


@pytest.mark.parametrize("name", sorted(SMALL))
def test_different_seeds_differ(name):
    a, b = small_task(name, seed=0), small_task(name, seed=1)
    assert not torch.equal(flat_params(a), flat_params(b))
    if name != "rosenbrock":
        assert not same(batches(a), batches(b))


def test_rosenbrock_start_is_fixed_without_noise():
    for seed in (0, 1):
        task = make_task("rosenbrock", seed)
        assert task.model.w.tolist() == [-1.5, 2.0] and task.next_batch() is None
        assert task.evaluate(task.model)["val_loss"] == pytest.approx(12.5)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_global_rng_is_untouched(name):
    before = torch.random.get_rng_state()
    task = small_task(name, seed=5)
    batches(task)
    task.loss(task.model, task.next_batch()).backward()
    task.evaluate(task.model)
    assert torch.equal(before, torch.random.get_rng_state())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_validation_is_independent_of_seed(name):
    a, b = small_task(name, seed=0), small_task(name, seed=7)
    batches(b, 5)
    b.model.load_state_dict(a.model.state_dict())
    with torch.no_grad():
        assert a.evaluate(a.model) == b.evaluate(b.model)


@pytest.mark.parametrize(
    ("name", "lr", "steps"),
    [
        ("digits_mlp", 1e-2, 40),
        ("digits_cnn", 1e-2, 40),
        ("logreg", 5e-2, 40),
        ("charlm", 1e-2, 40),
        ("rosenbrock", 5e-2, 100),
        ("noisy_quadratic", 5e-2, 100),
    ],
)
def test_adam_reduces_validation_loss(name, lr, steps):
    task = small_task(name)
    curve = fit(task, torch.optim.Adam(task.model.parameters(), lr=lr), steps)
    first, last = curve.evals[0], curve.evals[-1]
    assert curve.eval_steps[-1] == steps and len(curve.train_loss) == steps
    assert last["val_loss"] < 0.65 * first["val_loss"]
    if name in CLASSIFIERS:
        assert first["val_acc"] < 0.3 and last["val_acc"] > 0.85
    if name == "charlm":
        assert first["val_loss"] == pytest.approx(math.log(129), abs=0.1)
        assert last["val_bpc"] == pytest.approx(last["val_loss"] / math.log(2))
    if name == "rosenbrock":
        assert last["dist_to_opt"] < first["dist_to_opt"]


def test_absurd_learning_rate_raises_non_finite_loss():
    task = make_task("rosenbrock")
    with pytest.raises(NonFiniteLossError) as excinfo:
        fit(task, torch.optim.SGD(task.model.parameters(), lr=1e10), 10)
    assert excinfo.value.step == 2 and not math.isfinite(excinfo.value.value)


def test_logreg_weight_decay_adds_l2_to_training_loss_only():
    plain, decayed = make_task("logreg"), make_task("logreg", weight_decay=0.1)
    batch = plain.next_batch()
    assert same(batch, decayed.next_batch())
    with torch.no_grad():
        l2 = 0.05 * plain.model.weight.square().sum()
        assert float(decayed.loss(decayed.model, batch)) == pytest.approx(float(plain.loss(plain.model, batch) + l2))
    assert plain.evaluate(plain.model) == decayed.evaluate(decayed.model)


def test_noisy_quadratic_gradient_noise_scales_with_curvature_and_batch():
    def gradient_variance(batch_size: int) -> torch.Tensor:
        task = make_task("noisy_quadratic", batch_size=batch_size, dim=4)
        grads = []
        for _ in range(4000):
            task.model.zero_grad()
            task.loss(task.model, task.next_batch()).backward()
            grads.append(task.model.w.grad.clone())
        return torch.stack(grads).var(dim=0)

    h = torch.logspace(-2.0, 0.0, 4)
    torch.testing.assert_close(gradient_variance(1), h, rtol=0.1, atol=0.0)
    torch.testing.assert_close(gradient_variance(8), h / 8, rtol=0.1, atol=0.0)


def test_charlm_default_config_and_fixed_validation():
    task = make_task("charlm")
    x, y = task.next_batch()
    assert x.shape == y.shape == (32, 64) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert task.config["train_chars"] == 2_000_000 and task.config["val_chars"] == 200_000
    n_params = sum(p.numel() for p in task.model.parameters())
    assert 400_000 < n_params < 500_000
    tied = make_task("charlm", tie_weights=True, max_chars=10_000)
    assert tied.model.head.weight is tied.model.tok.weight


def test_digits_batches_are_reshuffled_epochs_without_repeats():
    x = torch.arange(10.0)[:, None]
    stream = DigitsBatches(x, torch.arange(10), 3, torch.Generator().manual_seed(0))
    epochs = [torch.cat([stream()[1] for _ in range(3)]) for _ in range(2)]
    assert all(len(set(e.tolist())) == 9 for e in epochs)
    assert not torch.equal(epochs[0], epochs[1])


def test_charlm_validation_does_not_depend_on_batch_size():
    config = {**SMALL["charlm"], "batch_size": 4}
    a, b = make_task("charlm", **config), make_task("charlm", **{**config, "batch_size": 16})
    assert torch.equal(flat_params(a), flat_params(b))
    assert a.evaluate(a.model) == b.evaluate(b.model)


def five_step_fit(task: Task) -> tuple[list[float], list[dict[str, float]]]:
    curve = fit(task, torch.optim.Adam(task.model.parameters(), lr=1e-2), 5)
    return curve.train_loss, curve.evals


@pytest.mark.parametrize("name", sorted(SMALL))
def test_explicit_cpu_device_is_bit_identical_to_the_default(name):
    default, explicit = small_task(name, seed=4), make_task(name, 4, **SMALL[name], device="cpu")
    assert torch.equal(flat_params(default), flat_params(explicit))
    assert same(batches(default), batches(explicit))
    default, explicit = small_task(name, seed=4), make_task(name, 4, **SMALL[name], device=torch.device("cpu"))
    assert five_step_fit(default) == five_step_fit(explicit)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_device_is_recorded_in_config(name):
    assert small_task(name).config["device"] == "cpu"
    task = make_task(name, 0, **SMALL[name], device=torch.device("cpu"))
    assert task.config["device"] == "cpu"
    assert all(p.device.type == "cpu" for p in task.model.parameters())


def test_run_spec_device_is_in_the_cache_key():
    assert default_device("smoke") == default_device("quick") == "cpu"
    assert default_device("full") == ("cuda" if torch.cuda.is_available() else "cpu")
    spec = RunSpec.make("logreg", {}, "sgd", {"lr": 0.1}, 5, 1)
    assert spec.device == "cpu"
    on_gpu = RunSpec.make("logreg", {}, "sgd", {"lr": 0.1}, 5, 1, device="cuda")
    assert spec.key(0) != on_gpu.key(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", sorted(SMALL))
def test_cuda_matches_cpu(name):
    # Full fp32 on the GPU, so that only the order of floating-point operations differs from the CPU.
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        cpu, gpu = small_task(name, seed=2), make_task(name, 2, **SMALL[name], device="cuda")
        assert gpu.config["device"] == "cuda"
        assert all(p.device.type == "cuda" for p in gpu.model.parameters())
        assert torch.equal(flat_params(cpu), flat_params(gpu).cpu())
        cpu_batches, gpu_batches = batches(cpu), batches(gpu)
        for a, b in zip(cpu_batches, gpu_batches, strict=True):
            a, b = (a, b) if isinstance(a, tuple) else ((a,), (b,))
            assert all(y is None or y.device.type == "cuda" for y in b)
            assert same(a, tuple(None if y is None else y.cpu() for y in b))
        cpu, gpu = small_task(name, seed=2), make_task(name, 2, **SMALL[name], device="cuda")
        (cpu_loss, cpu_evals), (gpu_loss, gpu_evals) = five_step_fit(cpu), five_step_fit(gpu)
        torch.testing.assert_close(torch.tensor(gpu_loss), torch.tensor(cpu_loss), rtol=1e-3, atol=0.0)
        val = [[e["val_loss"] for e in evals] for evals in (cpu_evals, gpu_evals)]
        torch.testing.assert_close(torch.tensor(val[1]), torch.tensor(val[0]), rtol=1e-3, atol=0.0)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def test_fit_logs_the_global_gradient_norms_of_every_step():
    task = make_task("logreg", seed=0)
    opt = torch.optim.SGD(task.model.parameters(), lr=0.1)
    curve = fit(task, opt, 3)
    assert len(curve.grad_norms) == len(curve.grad_l1_norms) == 3
    assert curve.to_dict()["grad_norms"] == curve.grad_norms
    # the last logged norms are those of the gradient the optimizer used at step 3
    grads = [p.grad for p in task.model.parameters()]
    assert curve.grad_norms[-1] == pytest.approx(float(torch.cat([g.reshape(-1) for g in grads]).norm()))
    assert curve.grad_l1_norms[-1] == pytest.approx(float(sum(g.abs().sum() for g in grads)))


def test_digits_cnn_bn_option_adds_batch_norm_and_keeps_the_default():
    plain, bn = make_task("digits_cnn", width=4), make_task("digits_cnn", width=4, bn=True)
    norms = [m for m in bn.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [m.num_features for m in norms] == [4, 8] and "bn" not in plain.config and bn.config["bn"] is True
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.model.modules())
    convs = [
        [p for m in t.model.modules() if isinstance(m, torch.nn.Conv2d) for p in m.parameters()] for t in (plain, bn)
    ]
    assert all(torch.equal(a, b) for a, b in zip(*convs, strict=True))
    assert all(torch.equal(m.running_var, torch.ones(m.num_features)) for m in norms)
