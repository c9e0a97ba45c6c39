"""Adaptive batch sizes in the harness: resizable digits batches, ``fit`` with a controller, ``--adaptive-batch``."""

from __future__ import annotations

import json

import pytest
import torch

from thrifty.batching import AdaptiveBatchSize
from thrifty.bench.workloads import fit, make_task
from thrifty.cli import main
from thrifty.optim import create_optimizer


def test_default_stream_is_unchanged_and_sizes_can_vary():
    plain, sized = make_task("logreg", seed=3, batch_size=32), make_task("logreg", seed=3, batch_size=32)
    for _ in range(60):  # past an epoch boundary
        a, b = plain.next_batch(), sized.next_batch(None)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    task = make_task("digits_mlp", seed=0, batch_size=16)
    assert [len(task.next_batch(n)[0]) for n in (5, 700, 1000, 16)] == [5, 700, 1000, 16]
    assert len(task.next_batch()[0]) == 16
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, 1437\], got 2000"):
        task.next_batch(2000)


def test_fit_with_a_controller_records_growing_batch_sizes():
    torch.manual_seed(0)
    task = make_task("logreg", seed=0, batch_size=8)
    optimizer = create_optimizer(task.model, "adagrad_norm", lr=0.5)
    controller = AdaptiveBatchSize(8, 256, eta=0.5)
    curve = fit(task, optimizer, 12, eval_every=6, batch_controller=controller)
    assert curve.batch_sizes == controller.history[:-1]
    assert curve.batch_sizes[0] == 8 and curve.batch_sizes == sorted(curve.batch_sizes)
    assert curve.batch_sizes[-1] > 8 and max(controller.history) <= 256
    assert curve.to_dict()["batch_sizes"] == curve.batch_sizes
    assert fit(make_task("logreg", seed=0), create_optimizer(make_task("logreg").model, "sgd"), 2).batch_sizes == []


def test_train_adaptive_batch_writes_and_plots_the_batch_sizes(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "logreg", "--optimizer", "adagrad_norm", "--lr", "0.5", "--steps", "8", "--batch-size", "8"]
    assert main([*argv, "--adaptive-batch", "--max-batch-size", "128", "--out", str(out)]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["adaptive_batch"] == {"test": "norm", "eta": 0.5, "batch_size": 8, "max_batch_size": 128}
    sizes = record["batch_sizes"]
    assert len(sizes) == 8 and sizes[0] == 8 and sizes == sorted(sizes) and sizes == record["curve"]["batch_sizes"]
    assert (out / "curve.png").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--adaptive-batch", "--max-batch-size", "4"], "max_batch_size (4) is below the starting batch_size (8)"),
        (["--max-batch-size", "64"], "--max-batch-size and --batch-eta need --adaptive-batch"),
        (["--adaptive-batch", "--max-batch-size", "5000", "--batch-eta", "0.01"], "lower --max-batch-size"),
    ],
)
def test_train_adaptive_batch_bad_input(tmp_path, capsys, extra, message):
    argv = ["train", "logreg", "--optimizer", "sgd", "--steps", "3", "--batch-size", "8", "--out", str(tmp_path)]
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err


def test_train_adaptive_batch_needs_resizable_batches(tmp_path, capsys):
    argv = ["train", "rosenbrock", "--optimizer", "sgd", "--steps", "2", "--adaptive-batch", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "--adaptive-batch needs batches that can change size" in capsys.readouterr().err
