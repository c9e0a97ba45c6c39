"""The SGC claim's workload: coded training on real gloo processes skips stragglers and trains exactly like SGD."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from thrifty.bench.claims.distributed.coded_training import (
    CodedTrainingSpec,
    coded_training,
    job_batch,
    run_coded_training,
)
from thrifty.data.digits import load_digits_split
from thrifty.distributed import spawn


def _delays(rounds, n):
    delays = np.full((rounds, n), 0.05)
    delays[3, 2] = 1.5  # one straggler: tolerated by both schemes
    delays[6, 0] = delays[6, 1] = 0.4  # two stragglers in a round: both schemes wait for everybody
    return delays


def _both(rank, world_size, specs):
    return [coded_training(rank, world_size, spec) for spec in specs]


@pytest.mark.slow
def test_real_processes_skip_stragglers_and_train_exactly_like_uncoded_sgd():
    n, jobs = 3, 10
    specs = [
        CodedTrainingSpec("gc", (1,), jobs, _delays(jobs, n), batch_size=60, num_models=2, mu=1.0),
        CodedTrainingSpec("msgc", (1, 2, 1), jobs, _delays(jobs + 1, n), batch_size=60, num_models=2, mu=1.0),
    ]
    out = spawn(_both, n, specs, timeout_s=240)
    x, y, _, _ = load_digits_split()
    reference = [torch.nn.Linear(64, 10) for _ in range(2)]
    for m in reference:
        torch.nn.init.zeros_(m.weight)
        torch.nn.init.zeros_(m.bias)
    for j in range(jobs):
        model = reference[j % 2]
        idx = job_batch(specs[0], j, len(x))
        model.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        with torch.no_grad():
            for p in model.parameters():
                p.sub_(0.5 * p.grad)
    expected = [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in reference]
    for k in range(2):
        ranks = [torch.tensor(out[r][k]["params"]) for r in range(n)]
        assert all(torch.equal(ranks[0], t) for t in ranks[1:])  # every rank decodes the same update
        for got, want in zip(ranks[0], expected, strict=True):
            assert torch.allclose(got, want, atol=1e-5)
        seconds = out[0][k]["round_seconds"]
        assert seconds[3] < 1.0  # the 1.5 s straggler was not waited for
        assert seconds[6] >= 0.4  # an intolerable pattern: the round waited for everybody
    assert out[0][1]["load"] < out[0][0]["load"]
    assert sum(o[1]["samples"] for o in out) < sum(o[0]["samples"] for o in out)


def test_coded_training_rejects_bad_specs_before_any_process_starts():
    n, jobs = 3, 6
    with pytest.raises(ValueError, match="delays must have shape"):
        run_coded_training(CodedTrainingSpec("gc", (1,), jobs, np.zeros((jobs + 1, n))), n)
    with pytest.raises(ValueError, match="num_models must exceed"):
        run_coded_training(CodedTrainingSpec("msgc", (1, 2, 1), jobs, np.zeros((jobs + 1, n))), n)
    with pytest.raises(ValueError, match="0 <= s < n"):
        run_coded_training(CodedTrainingSpec("gc", (3,), jobs, np.zeros((jobs, n))), n)
    delays = np.full((jobs, n), 0.01)
    delays[2, :2] = 1.0
    with pytest.raises(ValueError, match=r"round 2: stragglers \[0, 1\] are not tolerated"):
        run_coded_training(CodedTrainingSpec("gc", (1,), jobs, delays, strict=True), n)
