"""A synthetic cost model the simulator tests share, given to them as a fixture: 1 s per step plus 10 ms per token."""

from __future__ import annotations

import pytest

from thrifty.serve.sim.model_specs import get_model


class LinearCost:
    """Duck-types ``CostModel`` for the simulator: ``model``, ``label`` and ``batch_time``."""

    model = get_model("llama2-7b")
    label = "synthetic cost model"

    def batch_time(self, prefills, decodes, num_sampled):
        return 1.0 + 0.01 * (sum(q for q, _ in prefills) + len(decodes))


@pytest.fixture
def linear_cost() -> LinearCost:
    return LinearCost()
