"""cpo_step against scipy's SLSQP on small random problems with an explicit H, per case."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

import trustregion as tr
from trustregion import Status


def random_problem(seed, n):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    H = (Q * rng.uniform(0.2, 5.0, n)) @ Q.T
    g, b = rng.standard_normal(n), rng.standard_normal(n)
    delta = float(rng.uniform(0.005, 0.1))
    return H, g, b, delta, rng


def constraint_bounds(H, g, b, delta):
    """(L, U): the linear constraint is inactive at the TRPO step iff c <= L, and the
    problem is feasible iff c <= U."""
    v, w = np.linalg.solve(H, g), np.linalg.solve(H, b)
    q, r, s = g @ v, b @ v, b @ w
    return -np.sqrt(2 * delta / q) * r, np.sqrt(2 * delta * s)


def c_for_case(case, H, g, b, delta, u):
    """A constraint value that puts the problem in ``case``; u in (0, 1) picks where."""
    L, U = constraint_bounds(H, g, b, delta)
    if case is Status.INACTIVE:
        return L - (0.01 + u) * abs(U)
    if case is Status.ACTIVE:
        return L + (0.05 + 0.9 * u) * (U - L)
    return U * (1.05 + u)


def slsqp(H, g, b, c, delta):
    """max g^T x s.t. b^T x + c <= 0, 1/2 x^T H x <= delta by SLSQP."""
    constraints = [
        {"type": "ineq", "fun": lambda x: delta - 0.5 * x @ H @ x, "jac": lambda x: -H @ x},
        {"type": "ineq", "fun": lambda x: -(b @ x + c), "jac": lambda x: -b},
    ]
    res = minimize(lambda x: -g @ x, np.zeros(len(g)), jac=lambda x: -g, method="SLSQP",
                   constraints=constraints, options={"ftol": 1e-12, "maxiter": 500})  # fmt: skip
    return checked(res)


def checked(res):
    # status 8 ("positive directional derivative for linesearch") is SLSQP stopping at the
    # limit of its precision, at the optimum to ~1e-8 on these problems
    assert res.status in (0, 8), res.message
    return res.x


def slsqp_recovery(H, b, delta):
    """min b^T x s.t. 1/2 x^T H x <= delta by SLSQP (the most the constraint can drop)."""
    constraints = [
        {"type": "ineq", "fun": lambda x: delta - 0.5 * x @ H @ x, "jac": lambda x: -H @ x}
    ]
    res = minimize(lambda x: b @ x, np.zeros(len(b)), jac=lambda x: b, method="SLSQP",
                   constraints=constraints, options={"ftol": 1e-12, "maxiter": 500})  # fmt: skip
    return checked(res)


CASES = [Status.INACTIVE, Status.ACTIVE, Status.RECOVERY]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 8), u=st.floats(0.0, 1.0))
def test_matches_slsqp_in_each_case(case, seed, n, u):
    H, g, b, delta, _ = random_problem(seed, n)
    c = c_for_case(case, H, g, b, delta, u)
    res = tr.cpo_step(g, b, c, H.dot, delta, cg_iters=n)
    assert res.status is case, res.message
    if case is Status.RECOVERY:
        reference = slsqp_recovery(H, b, delta)
    else:
        reference = slsqp(H, g, b, c, delta)
    scale = max(1.0, np.abs(reference).max())
    np.testing.assert_allclose(res.step, reference, atol=1e-6 * scale)


@settings(max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 8), c_scale=st.floats(-3.0, 3.0))
def test_kkt_conditions_hold(seed, n, c_scale):
    H, g, b, delta, _ = random_problem(seed, n)
    c = c_scale * np.sqrt(2 * delta * (b @ np.linalg.solve(H, b)))
    res = tr.cpo_step(g, b, c, H.dot, delta, cg_iters=n)
    x = res.step
    assert res.status in CASES
    divergence = 0.5 * x @ H @ x
    assert res.predicted_divergence == pytest.approx(divergence, rel=1e-8, abs=1e-14)
    assert res.predicted_constraint == pytest.approx(b @ x + c, rel=1e-8, abs=1e-12)
    assert res.expected_improvement == pytest.approx(g @ x, rel=1e-12, abs=1e-15)
    assert divergence <= delta * (1 + 1e-9)
    if res.status is Status.RECOVERY:
        # the whole region violates the constraint (up to rounding where it touches the
        # hyperplane); the step lowers it the most
        assert b @ x + c >= -1e-9 * abs(c)
        assert divergence == pytest.approx(delta, rel=1e-9)
        w = np.linalg.solve(H, b)
        np.testing.assert_allclose(x, -np.sqrt(2 * delta / (b @ w)) * w, rtol=1e-8)
        return
    assert b @ x + c <= 1e-9 * max(1.0, abs(c))
    assert res.lam >= 0 and res.nu >= 0
    # stationarity g - nu b - lam H x = 0 and complementary slackness; the multipliers grow
    # without bound where the region just touches the hyperplane, so scale by them
    terms = np.abs(g) + res.nu * np.abs(b) + res.lam * np.abs(H @ x)
    np.testing.assert_array_less(np.abs(g - res.nu * b - res.lam * H @ x), 1e-8 * terms.max())
    assert res.nu * abs(b @ x + c) <= 1e-9 * max(1.0, res.nu * (abs(c) + np.abs(b) @ np.abs(x)))
    assert res.lam * abs(divergence - delta) <= 1e-9 * max(1.0, res.lam * delta)
    if res.status is Status.INACTIVE:
        assert res.nu == 0


def test_inactive_case_is_exactly_the_natural_gradient_step():
    H, g, b, delta, _ = random_problem(7, 6)
    c = c_for_case(Status.INACTIVE, H, g, b, delta, 0.5)
    res = tr.cpo_step(g, b, c, H.dot, delta, cg_iters=6)
    trpo = tr.natural_gradient_step(g, H.dot, delta, cg_iters=6)
    assert res.status is Status.INACTIVE and res.nu == 0
    np.testing.assert_allclose(res.step, trpo.step, rtol=1e-10)


def test_whole_region_feasible_is_the_trpo_step_even_when_r_is_positive():
    H = np.eye(2)
    g, b = np.array([1.0, 0.0]), np.array([1.0, 0.0])  # r > 0: the step raises the cost
    res = tr.cpo_step(g, b, -10.0, H.dot, 0.5)  # but the hyperplane is 10 away, reach 1
    assert res.status is Status.INACTIVE
    np.testing.assert_allclose(res.step, [1.0, 0.0])


def test_damping_is_the_same_as_a_damped_matrix():
    H, g, b, delta, _ = random_problem(3, 5)
    c = c_for_case(Status.ACTIVE, H, g, b, delta, 0.3)
    damped = tr.cpo_step(g, b, c, H.dot, delta, damping=0.1, cg_iters=5)
    explicit = tr.cpo_step(g, b, c, (H + 0.1 * np.eye(5)).dot, delta, cg_iters=5)
    np.testing.assert_allclose(damped.step, explicit.step, rtol=1e-10)


def test_hvp_calls_are_two_cg_solves_and_nothing_more():
    H, g, b, delta, _ = random_problem(4, 30)
    calls = [0]

    def hvp(u):
        calls[0] += 1
        return H @ u

    res = tr.cpo_step(g, b, 0.0, hvp, delta, cg_iters=10)
    assert calls[0] == res.cg_g.n_matvec + res.cg_b.n_matvec <= 20


class TestDegenerate:
    def test_zero_b_feasible_is_trpo(self):
        g = np.array([1.0, 2.0])
        res = tr.cpo_step(g, np.zeros(2), -1.0, np.eye(2).dot, 0.5)
        assert res.status is Status.INACTIVE and res.cg_b is None
        np.testing.assert_allclose(res.step, g / np.linalg.norm(g))

    def test_zero_b_infeasible_has_no_direction(self):
        res = tr.cpo_step(np.ones(2), np.zeros(2), 1.0, np.eye(2).dot, 0.5)
        assert res.status is Status.INFEASIBLE_NO_DIRECTION
        assert not np.any(res.step)

    def test_zero_g_feasible_point_stays(self):
        res = tr.cpo_step(np.zeros(3), np.ones(3), -0.1, np.eye(3).dot, 0.5)
        assert res.status is Status.INACTIVE
        assert not np.any(res.step)

    def test_zero_g_infeasible_point_moves_to_the_nearest_feasible_point(self):
        H = np.diag([1.0, 2.0, 4.0])
        b = np.ones(3)
        res = tr.cpo_step(np.zeros(3), b, 0.1, H.dot, 0.5)
        assert res.status is Status.ACTIVE
        w = np.linalg.solve(H, b)
        np.testing.assert_allclose(res.step, -0.1 / (b @ w) * w, rtol=1e-12)
        assert np.all(np.isfinite(res.step))

    @pytest.mark.parametrize("alpha", [2.0, -2.0])
    def test_g_parallel_to_b_stays_finite_and_optimal(self, alpha):
        H = np.diag([1.0, 3.0])
        b = np.array([1.0, -1.0])
        g = alpha * b
        c = -0.2
        res = tr.cpo_step(g, b, c, H.dot, 0.5)
        assert np.all(np.isfinite(res.step))
        assert b @ res.step + c <= 1e-12
        assert 0.5 * res.step @ H @ res.step <= 0.5 * (1 + 1e-12)
        optimum = g @ slsqp(H, g, b, c, 0.5)
        assert g @ res.step == pytest.approx(optimum, rel=1e-7)

    def test_region_touching_the_hyperplane_is_the_recovery_step(self):
        H = np.eye(2)
        b = np.array([1.0, 0.0])
        res = tr.cpo_step(np.array([0.0, 1.0]), b, 1.0, H.dot, 0.5)  # reach sqrt(2 delta) = 1
        assert res.status is Status.RECOVERY
        np.testing.assert_allclose(res.step, [-1.0, 0.0])


class TestFailures:
    def test_non_positive_curvature(self):
        res = tr.cpo_step(np.ones(2), np.ones(2), 0.0, lambda u: -u, 0.1)
        assert res.status is Status.NEGATIVE_CURVATURE
        assert not np.any(res.step) and "damping" in res.message

    def test_non_finite_hvp(self):
        res = tr.cpo_step(np.ones(2), np.ones(2), 0.0, lambda u: u * np.nan, 0.1)
        assert res.status is Status.NON_FINITE
        assert not np.any(res.step)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"delta": 0.0}, ValueError, "delta"),
        ({"delta": -0.1}, ValueError, "delta"),
        ({"g": [np.nan, 1.0]}, ValueError, "g must be finite"),
        ({"b": [1.0, 2.0, 3.0]}, ValueError, "b must have shape"),
        ({"c": np.nan}, ValueError, "c must be finite"),
        ({"c": "high"}, TypeError, "c must be a real number"),
        ({"hvp": lambda u: np.ones(3)}, ValueError, "hvp returned shape"),
        ({"hvp": np.eye(2)}, TypeError, "hvp must be callable"),
        ({"cg_iters": 0}, ValueError, "cg_iters"),
    ],
)
def test_misuse_raises_naming_the_argument(kwargs, error, match):
    call = {"g": np.ones(2), "b": np.array([1.0, 0.0]), "c": -0.1, "hvp": np.eye(2).dot,
            "delta": 0.1, **kwargs}  # fmt: skip
    with pytest.raises(error, match=match):
        tr.cpo_step(
            call.pop("g"),
            call.pop("b"),
            call.pop("c"),
            call.pop("hvp"),
            call.pop("delta"),
            **call,
        )


class TestExtremeScales:
    """Badly scaled problems: the step of the same problem rescaled (powers of two, exact),
    or a non-success status; never a wrong success, a NaN or a raw arithmetic error."""

    H = np.diag([1.0, 4.0])
    g = np.array([1.0, 1.0])
    b = np.array([1.0, 0.0])

    def test_subnormal_operator_is_the_rescaled_step_not_a_clipped_one(self):
        # CG's H^-1 g overflowed (OUT_OF_RANGE, clipped) and was used: ACTIVE, step [100, 0]
        k = 1e-310
        res = tr.cpo_step(self.g, self.b, -100.0, lambda u: k * (self.H @ u), 0.02)
        reference = tr.cpo_step(self.g, self.b, -100.0 * np.sqrt(k), self.H.dot, 0.02)
        assert res.status is reference.status is Status.ACTIVE and res.success
        np.testing.assert_allclose(res.step, reference.step / np.sqrt(k), rtol=1e-10)

    def test_subnormal_operator_with_tiny_delta_is_the_trpo_step(self):
        # was INACTIVE "success" with lambda = inf and a zero step
        res = tr.cpo_step(np.full(3, 1e-100), np.ones(3), -1e299, lambda u: 4e-307 * u, 1e-300)
        assert res.status is Status.INACTIVE and np.isfinite(res.lam) and res.lam > 0
        # sqrt(2 delta / h) g / |g| for H = h I
        np.testing.assert_allclose(res.step, np.sqrt(2e-300 / 4e-307 / 3), rtol=1e-10)

    def test_subnormal_delta_is_the_rescaled_step_not_an_overflow_error(self):
        # lambda**2 raised OverflowError; x = 2^-537 y for delta' = 2^1074 delta = 1
        res = tr.cpo_step(self.g, self.b, -1e-200, self.H.dot, 5e-324)
        scaled = tr.cpo_step(self.g, self.b, math.ldexp(-1e-200, 537), self.H.dot, 1.0)
        assert res.status is scaled.status is Status.ACTIVE
        np.testing.assert_allclose(res.step, np.ldexp(scaled.step, -537), rtol=1e-12)

    def test_lambda_underflow_is_not_a_zero_division(self):
        # lambda = sqrt(q / 2 delta) underflowed to 0: ZeroDivisionError in the dual
        res = tr.cpo_step([2e-300], [0.3], 1e-300, lambda u: 1e300 * u, 1e100)
        assert res.status is Status.ACTIVE  # 0.3 x + 1e-300 <= 0 binds, the region does not
        np.testing.assert_allclose(res.step, [-1e-300 / 0.3], rtol=1e-12)

    def test_lambda_underflow_is_not_an_infinite_step(self):
        # was INACTIVE "success" with step [inf, inf] and lambda = 0
        res = tr.cpo_step(np.full(2, 1e-100), np.full(2, 1e-300), -0.02,
                          lambda u: 1e304 * u, 1e100)  # fmt: skip
        assert res.status is Status.INACTIVE and res.success
        np.testing.assert_allclose(res.step, [1e-102, 1e-102], rtol=1e-12)

    def test_finite_c_is_not_blamed_when_its_rescaled_copy_overflows(self):
        # c / |b| overflowed: "ValueError: c must be finite, got inf" for the user's c = 1e300
        res = tr.cpo_step(np.ones(2), [1e-310, 0.0], 1e300, lambda u: u, 0.01)
        assert res.status is Status.RECOVERY and res.success
        np.testing.assert_allclose(res.step, [-np.sqrt(0.02), 0.0], rtol=1e-12)

    def test_a_step_that_does_not_fit_is_out_of_range(self):
        # |x| ~ sqrt(2 delta / h) ~ 1e315
        res = tr.cpo_step(self.g, self.b, -1.0, lambda u: np.ldexp(u, -1070), 1e308)
        assert res.status is Status.OUT_OF_RANGE and not res.success
        assert not np.any(res.step) and "rescale" in res.message


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 5),
    case=st.sampled_from(CASES),
    u=st.floats(0.0, 1.0),
    e_g=st.integers(-1000, 1000),
    e_b=st.integers(-1000, 1000),
    e_h=st.integers(-1000, 1000),
    e_x=st.integers(-1000, 1000),
)
def test_power_of_two_rescaling_gives_the_rescaled_step(seed, n, case, u, e_g, e_b, e_h, e_x):
    """g -> 2^e_g g, (b, c) -> 2^e_b (b, c), (H, delta) -> 2^e_h (H, delta) leave the step
    unchanged, and x -> 2^e_x x is (c, delta) -> (2^e_x c, 2^(2 e_x) delta): a success is the
    ordinary problem's step times 2^e_x, to rounding."""
    H, g, b, delta, _ = random_problem(seed, n)
    c = c_for_case(case, H, g, b, delta, u)
    reference = tr.cpo_step(g, b, c, H.dot, delta, cg_iters=n)
    e_c, e_d = e_b + e_x, e_h + 2 * e_x
    assume(abs(e_c) <= 1000 and abs(e_d) <= 1000)  # inputs of normal magnitude
    res = tr.cpo_step(
        np.ldexp(g, e_g), np.ldexp(b, e_b), math.ldexp(c, e_c),
        lambda v: np.ldexp(H @ v, e_h), math.ldexp(delta, e_d), cg_iters=n,
    )  # fmt: skip
    if not res.success:
        assert res.status is Status.OUT_OF_RANGE and not np.any(res.step), res.message
        return
    assert res.status is reference.status, res.message
    assert np.all(np.isfinite(res.step))
    expected = np.ldexp(reference.step, e_x)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(res.step, expected, rtol=1e-7, atol=1e-7 * scale)
