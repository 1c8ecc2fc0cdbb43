"""KL-constrained backtracking line search."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trustregion as tr
from trustregion import Status


def quadratic_problem(center, radius_sq):
    """Maximize -||x - center||^2 under ||x||^2 <= radius_sq."""

    def evaluate(x):
        return -float(np.sum((x - center) ** 2)), float(np.sum(x**2))

    return evaluate


@given(
    n=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
    step_scale=st.floats(-3, 3),
    shrink=st.floats(0.1, 0.95),
    max_backtracks=st.integers(0, 15),
    accept_ratio=st.sampled_from([0.0, 0.1, 0.5]),
    slack=st.sampled_from([1.0, 1.5]),
)
def test_never_accepts_a_step_that_breaks_the_constraint_or_lowers_the_objective(
    n, seed, step_scale, shrink, max_backtracks, accept_ratio, slack
):
    rng = np.random.default_rng(seed)
    center = rng.standard_normal(n) * 2
    x0 = rng.standard_normal(n) * 0.1
    step = rng.standard_normal(n) * 10.0**step_scale
    evaluate = quadratic_problem(center, 1.0)
    f0, _ = evaluate(x0)
    expected = max(0.0, float(-2 * (x0 - center) @ step))
    res = tr.backtracking_line_search(
        evaluate, x0, step, expected_improvement=expected, max_constraint=1.0,
        shrink=shrink, max_backtracks=max_backtracks, accept_ratio=accept_ratio,
        constraint_slack=slack,
    )
    assert len(res.fractions) == len(res.objectives) == len(res.constraints)
    assert len(res.fractions) <= max_backtracks + 1
    assert np.allclose(res.fractions, shrink ** np.arange(len(res.fractions)))
    if res.accepted:
        obj, con = evaluate(res.x)
        assert obj > f0 and con <= slack * 1.0
        assert res.objective == obj and res.constraint == con
        assert np.allclose(res.x, x0 + res.step_fraction * step)
        if accept_ratio > 0:
            assert obj - f0 >= accept_ratio * res.step_fraction * expected
        # every earlier trial was rejected for a reason
        for f, c in zip(res.objectives[:-1], res.constraints[:-1], strict=True):
            assert f <= f0 or c > slack or accept_ratio > 0
    else:
        assert res.x is x0 or np.array_equal(res.x, x0)
        assert res.step_fraction == 0.0 and res.objective == f0
        assert len(res.fractions) == max_backtracks + 1


def test_first_acceptable_trial_is_taken():
    evaluate = quadratic_problem(np.array([1.0, 1.0]), 1.0)
    res = tr.backtracking_line_search(
        evaluate, np.zeros(2), np.full(2, 2.0), expected_improvement=8.0, max_constraint=1.0
    )
    assert res.accepted and res.status is Status.ACCEPTED
    # 2 * (2 * 0.8^k)^2 <= 1  <=>  0.8^k <= 0.3536  <=>  k >= 5
    assert res.n_backtracks == 5 and res.step_fraction == pytest.approx(0.8**5)
    assert res.constraints[4] > 1.0 >= res.constraints[5]


def test_full_step_accepted_without_backtracking():
    evaluate = quadratic_problem(np.array([0.1, 0.0]), 1.0)
    res = tr.backtracking_line_search(
        evaluate, np.zeros(2), np.array([0.1, 0.0]), expected_improvement=0.02,
        max_constraint=1.0,
    )
    assert res.accepted and res.n_backtracks == 0 and res.step_fraction == 1.0


def test_rejection_leaves_x0_and_reports_the_reason():
    evaluate = quadratic_problem(np.array([-1.0, 0.0]), 1.0)  # step goes the wrong way
    x0 = np.zeros(2)
    res = tr.backtracking_line_search(
        evaluate, x0, np.array([1.0, 0.0]), expected_improvement=1.0, max_constraint=10.0
    )
    assert not res.accepted and res.status is Status.NO_IMPROVEMENT
    assert res.x is x0 and res.n_backtracks == 10 and len(res.fractions) == 11
    assert "x0" in res.message


def test_constraint_violation_status():
    res = tr.backtracking_line_search(
        lambda x: (float(x[0]), 1e6), np.zeros(1), np.ones(1), expected_improvement=1.0,
        max_constraint=0.01, max_backtracks=3,
    )
    assert not res.accepted and res.status is Status.CONSTRAINT_VIOLATED


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_trials_are_rejected_never_accepted(bad):
    calls = []

    def evaluate(x):
        calls.append(x.copy())
        if len(calls) == 1:
            return 0.0, 0.0
        return bad, 0.0

    res = tr.backtracking_line_search(
        evaluate, np.zeros(2), np.ones(2), expected_improvement=1.0, max_constraint=1.0
    )
    assert not res.accepted and res.status is Status.NON_FINITE


def test_non_finite_constraint_then_finite_is_accepted_later():
    def evaluate(x):
        return float(x[0]), (np.nan if x[0] > 0.5 else float(x[0]))

    res = tr.backtracking_line_search(
        evaluate, np.zeros(1), np.ones(1), expected_improvement=1.0, max_constraint=1.0, f0=0.0
    )
    assert res.accepted and res.step_fraction <= 0.5
    assert np.isnan(res.constraints[0])


def test_accept_ratio_demands_enough_improvement():
    # objective improves by only 1% of the linear prediction: accepted with r=0, not with r=0.1
    def evaluate(x):
        return 0.01 * float(x[0]), 0.0

    kwargs = dict(expected_improvement=1.0, max_constraint=1.0, f0=0.0)
    assert tr.backtracking_line_search(evaluate, np.zeros(1), np.ones(1), **kwargs).accepted
    res = tr.backtracking_line_search(
        evaluate, np.zeros(1), np.ones(1), accept_ratio=0.1, **kwargs
    )
    assert not res.accepted and res.status is Status.NO_IMPROVEMENT


def test_constraint_slack_widens_the_bound():
    def evaluate(x):
        return float(x[0]), 1.2

    kwargs = dict(expected_improvement=1.0, max_constraint=1.0, f0=0.0)
    assert not tr.backtracking_line_search(evaluate, np.zeros(1), np.ones(1), **kwargs).accepted
    assert tr.backtracking_line_search(
        evaluate, np.zeros(1), np.ones(1), constraint_slack=1.5, **kwargs
    ).accepted


def test_f0_given_skips_the_baseline_evaluation():
    calls = []

    def evaluate(x):
        calls.append(1)
        return 1.0, 0.0

    tr.backtracking_line_search(
        evaluate, np.zeros(1), np.ones(1), expected_improvement=1.0, max_constraint=1.0, f0=0.0
    )
    assert len(calls) == 1


def test_evaluate_cannot_corrupt_x0():
    x0 = np.zeros(2)

    def evaluate(x):
        x[:] = 99.0  # a careless callback
        return -1.0, 0.0

    tr.backtracking_line_search(
        evaluate, x0, np.ones(2), expected_improvement=1.0, max_constraint=1.0, max_backtracks=2
    )
    assert np.array_equal(x0, np.zeros(2))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(max_constraint=0.0), ValueError, "max_constraint must be > 0"),
        (dict(max_constraint=-1.0), ValueError, "max_constraint"),
        (dict(expected_improvement=-1.0), ValueError, "not an ascent direction"),
        (dict(expected_improvement=np.nan), ValueError, "expected_improvement"),
        (dict(shrink=1.0), ValueError, r"shrink must lie in \(0, 1\), got 1.0"),
        (dict(shrink=0.0), ValueError, "shrink"),
        (dict(max_backtracks=-1), ValueError, "max_backtracks must be >= 0"),
        (dict(accept_ratio=-0.1), ValueError, "accept_ratio"),
        (dict(constraint_slack=0.0), ValueError, "constraint_slack"),
        (dict(x0=np.array([np.nan, 0.0])), ValueError, "x0 must be finite"),
        (dict(full_step=np.ones(3)), ValueError, "full_step must have shape"),
        (dict(full_step=np.array([np.inf, 0.0])), ValueError, "full_step must be finite"),
        (dict(evaluate=lambda x: 1.0), TypeError, r"evaluate must return \(objective, constraint\)"),
        (dict(evaluate=lambda x: ("a", 0.0)), TypeError, "two real numbers"),
        (dict(evaluate=lambda x: (np.nan, 0.0)), ValueError, r"objective at x0 \(f0\) must be finite"),
        (dict(evaluate=None), TypeError, "evaluate must be callable"),
    ],
)
def test_bad_input_raises(kwargs, error, match):
    args = dict(
        evaluate=lambda x: (0.0, 0.0), x0=np.zeros(2), full_step=np.ones(2),
        expected_improvement=1.0, max_constraint=0.1,
    )
    args.update(kwargs)
    evaluate, x0, step = args.pop("evaluate"), args.pop("x0"), args.pop("full_step")
    with pytest.raises(error, match=match):
        tr.backtracking_line_search(evaluate, x0, step, **args)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 30), seed=st.integers(0, 2**32 - 1), log_delta=st.floats(-6.0, 2.0))
def test_step_on_a_quadratic_constraints_boundary_is_accepted(n, seed, log_delta):
    """scale_step lands exactly on 1/2 s^T H s = delta; rounding of the constraint's value must
    not reject it (it did about half the time with an exact comparison)."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    H = (Q * rng.uniform(0.1, 10.0, n)) @ Q.T
    g = rng.standard_normal(n)
    delta = 10.0**log_delta
    step = tr.scale_step(g, np.linalg.solve(H, g), g, delta)  # H d = g exactly for this d
    assert step.status is Status.BOUNDARY

    def evaluate(x):
        return float(g @ x), float(0.5 * x @ H @ x)

    res = tr.backtracking_line_search(
        evaluate, np.zeros(n), step.step,
        expected_improvement=step.expected_improvement, max_constraint=delta, f0=0.0,
    )
    assert res.accepted and res.n_backtracks == 0, (res.constraints[0] - delta) / delta
    # the tolerance is a few ulps, not a slack: a trial clearly outside is still rejected
    far = tr.backtracking_line_search(
        evaluate, np.zeros(n), step.step * (1 + 1e-9),
        expected_improvement=step.expected_improvement, max_constraint=delta, f0=0.0,
        max_backtracks=0,
    )
    assert far.status is Status.CONSTRAINT_VIOLATED


@pytest.mark.parametrize("rounding", [-1e-17, -1e-15, -0.0])
def test_expected_improvement_rounded_below_zero_counts_as_zero(rounding):
    res = tr.backtracking_line_search(
        lambda x: (float(x[0]), 0.0), np.zeros(1), np.full(1, 1e-12),
        expected_improvement=rounding, max_constraint=1.0, accept_ratio=0.1,
    )
    assert res.accepted and res.n_backtracks == 0


def test_expected_improvement_rounding_tolerance_scales_with_the_objective():
    kwargs = dict(max_constraint=1.0, f0=1e6)
    evaluate = lambda x: (1e6 + float(x[0]), 0.0)  # noqa: E731
    res = tr.backtracking_line_search(
        evaluate, np.zeros(1), np.ones(1), expected_improvement=-1e-8, **kwargs
    )
    assert res.accepted
    with pytest.raises(ValueError, match="not an ascent direction"):
        tr.backtracking_line_search(
            evaluate, np.zeros(1), np.ones(1), expected_improvement=-1e-3, **kwargs
        )


@pytest.mark.parametrize("bad", [-1e-16, np.nan, "x"])
def test_constraint_rtol_is_validated(bad):
    with pytest.raises((ValueError, TypeError), match="constraint_rtol"):
        tr.backtracking_line_search(
            lambda x: (1.0, 0.0), np.zeros(1), np.ones(1), expected_improvement=1.0,
            max_constraint=1.0, f0=0.0, constraint_rtol=bad,
        )
