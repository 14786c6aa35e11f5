"""core.cost.match_factor, the one cost-matching bisection (baselines, evaluate, guided designs use it)."""

from hypothesis import given
from hypothesis import strategies as st

from prune_nas.core.cost import match_factor


@given(steps=st.lists(st.floats(0.01, 0.99), min_size=1, max_size=30), target=st.floats(-1.0, 35.0))
def test_the_factor_is_the_closest_step_and_the_smaller_on_a_tie(steps, target):
    def cost_at(x):  # a step function: one more unit past each step (like one more channel)
        return sum(x >= s for s in steps)

    x = match_factor(cost_at, target, 0.0, 1.0)
    assert 0.0 <= x <= 1.0
    reachable = {cost_at(0.0)} | {cost_at(s) for s in steps}
    best = min(abs(c - target) for c in reachable)
    closest = sorted(c for c in reachable if abs(c - target) == best)
    assert cost_at(x) == closest[0]  # the closest cost; of two as close, the smaller


def test_the_ends_are_returned_when_the_target_is_outside():
    assert match_factor(lambda x: 10 * x, 50.0, 0.5, 2.0) == 2.0  # even the largest factor costs less
    assert match_factor(lambda x: 10 * x, 1.0, 0.5, 2.0) == 0.5  # even the smallest costs more
    calls = []
    match_factor(lambda x: calls.append(x) or round(100 * x), 37.2, 0.0, 1.0, iters=20)
    assert len(calls) == 2 + 20  # both ends, then one cost per halving: no cost is computed twice
