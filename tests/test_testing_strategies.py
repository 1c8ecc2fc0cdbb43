"""trustregion.testing strategies: every case's oracle is right, and cases are what they claim."""

import math

import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.linalg import LinearOperator

from trustregion import distributions as dist
from trustregion import testing as tt

SIZES = st.integers(1, 8)
DTYPES = st.sampled_from([np.float32, np.float64])
# the oracles are exact by construction: a few dozen cases per property keep the suite fast
FEW = settings(max_examples=20)


def assert_eigenpairs(case, rtol):
    A = case.matrix.astype(np.float64)
    Q, lam = case.eigenvectors, case.eigenvalues
    tt.assert_close(Q.T @ Q, np.eye(case.n), atol=1e-12, what="Q^T Q")
    scale = max(float(np.max(np.abs(lam))), 1e-300)
    tt.assert_close(A @ Q, Q * lam, atol=rtol * scale, what="A Q = Q diag(lambda)")
    assert np.all(np.diff(lam) >= 0)
    tt.assert_close(A, A.T, atol=0.0, what="A symmetric")


@FEW
@given(case=tt.spd_matrices(SIZES, cond=(1, 1e6), dtype=DTYPES))
def test_spd_matrices_carry_their_eigenpairs_and_an_exact_condition_number(case):
    rtol = 1e-6 if case.matrix.dtype == np.float32 else 1e-13
    assert_eigenpairs(case, rtol)
    assert np.all(case.eigenvalues > 0)
    assert 1.0 <= case.cond <= 1e6 * (1 + 1e-12)
    eigs = np.linalg.eigvalsh(case.matrix.astype(np.float64))
    tt.assert_close(eigs, case.eigenvalues, atol=rtol * 10 * case.eigenvalues[-1])


@FEW
@given(data=st.data(), n=st.integers(2, 8), cond=st.floats(1, 1e6))
def test_a_fixed_condition_number_is_drawn_exactly(data, n, cond):
    case = data.draw(tt.spd_matrices(n, cond=(cond, cond)))
    assert case.cond == pytest.approx(cond, rel=1e-12)


@FEW
@given(case=tt.psd_matrices(SIZES, dtype=DTYPES))
def test_psd_matrices_have_exact_zero_eigenvalues(case):
    assert_eigenpairs(case, 1e-6 if case.matrix.dtype == np.float32 else 1e-13)
    assert np.all(case.eigenvalues >= 0)


@FEW
@given(data=st.data(), n=SIZES)
def test_psd_rank_and_indefinite_inertia_are_as_asked(data, n):
    rank = data.draw(st.integers(0, n))
    case = data.draw(tt.psd_matrices(n, rank))
    assert int(np.sum(case.eigenvalues > 0)) == rank
    negatives = data.draw(st.integers(0, n))
    case = data.draw(tt.symmetric_indefinite(n, negatives))
    assert int(np.sum(case.eigenvalues < 0)) == negatives
    assert int(np.sum(case.eigenvalues > 0)) == n - negatives
    assert_eigenpairs(case, 1e-13)


@FEW
@given(Q=tt.orthogonal_matrices(SIZES))
def test_orthogonal_matrices_are_orthogonal(Q):
    tt.assert_close(Q @ Q.T, np.eye(Q.shape[0]), atol=1e-13)


@FEW
@given(case=tt.linear_operators(SIZES, dtype=DTYPES))
def test_linear_operators_apply_their_matrix_in_every_form(case):
    n = case.matrix.shape[0]
    v = np.linspace(-1, 1, n).astype(case.matrix.dtype)
    if case.form == "array":
        assert isinstance(case.operator, np.ndarray)
        out = case.operator @ v
    elif case.form == "linear_operator":
        assert isinstance(case.operator, LinearOperator)
        out = case.operator.matvec(v)
    else:
        out = case.operator(v)
    np.testing.assert_array_equal(out, case.matrix @ v)
    A = case.matrix.astype(np.float64)
    scale = float(np.max(np.abs(case.spectrum)))
    tol = (1e-5 if case.matrix.dtype == np.float32 else 1e-12) * scale
    if case.kind == "nonsymmetric":
        tt.assert_close(np.linalg.svd(A, compute_uv=False)[::-1], case.spectrum, atol=tol)
    else:
        tt.assert_close(np.linalg.eigvalsh(A), case.spectrum, atol=tol)
        assert {"spd": case.spectrum[0] > 0, "psd": case.spectrum[0] >= 0,
                "indefinite": case.spectrum[0] < 0}[case.kind]


@FEW
@given(case=tt.logits(st.integers(1, 5), st.integers(1, 6), dtype=DTYPES))
def test_logits_oracle_matches_the_core_and_keeps_one_finite_entry_per_row(case):
    assert np.all(np.any(np.isfinite(case.logits), axis=1))
    assert not np.any(np.isnan(case.logits)) and not np.any(case.logits == np.inf)
    tt.assert_close(case.probs.sum(axis=1), np.ones(case.logits.shape[0]), rtol=1e-14)
    rtol = 2e-6 if case.logits.dtype == np.float32 else 1e-12
    atol = 1e-37 if case.logits.dtype == np.float32 else 1e-300  # float32 underflows first
    tt.assert_close(dist.categorical_probs(case.logits), case.probs, rtol=rtol, atol=atol)


def test_logits_with_extremes_reach_every_extreme():
    seen = set()

    @given(case=tt.logits(3, 4))
    def collect(case):
        finite = case.logits[np.isfinite(case.logits)]
        if np.any(np.isinf(case.logits)):
            seen.add("mask")
        if finite.size and np.ptp(finite) > 1e3:
            seen.add("spread")
        if finite.size and np.min(np.abs(finite)) > 100:
            seen.add("shift")

    collect()
    assert seen == {"mask", "spread", "shift"}


@FEW
@given(case=tt.simplices(SIZES))
def test_simplices_sum_to_one(case):
    assert np.all(case.probs >= 0)
    assert math.isclose(case.probs.sum(), 1.0, rel_tol=1e-14)
    tt.assert_close(np.exp(case.log_probs), case.probs, rtol=1e-13, atol=1e-300)


@FEW
@given(case=tt.diag_gaussians(st.integers(1, 4), st.integers(1, 3), log_std=(-10, 3), dtype=DTYPES))
def test_diag_gaussians_respect_the_log_std_range(case):
    assert np.all((case.log_std >= -10) & (case.log_std <= 3))
    assert case.log_std.shape in ((case.mean.shape[1],), case.mean.shape)
    tt.assert_close(case.std, np.exp(case.log_std.astype(np.float64)), rtol=1e-15)


@FEW
@given(pair=tt.categorical_pairs(st.integers(1, 4), st.integers(1, 6), extremes=True, dtype=DTYPES))
def test_categorical_pair_kl_oracle_matches_the_core(pair):
    rtol = 1e-5 if pair.p.dtype == np.float32 else 1e-9
    kl = dist.categorical_kl(pair.p, pair.q)
    scale = 1 + np.abs(np.where(np.isfinite(pair.p), pair.p, 0)).max()
    tt.assert_close(kl, pair.kl, rtol=rtol, atol=rtol * scale)
    if pair.relation == "equal":
        np.testing.assert_array_equal(pair.kl, 0.0)


@FEW
@given(pair=tt.diag_gaussian_pairs(st.integers(1, 4), st.integers(1, 3), dtype=DTYPES))
def test_gaussian_pair_kl_oracle_matches_the_core(pair):
    rtol = 1e-5 if pair.p[0].dtype == np.float32 else 1e-12
    tt.assert_close(dist.diag_gaussian_kl(*pair.p, *pair.q), pair.kl, rtol=rtol, atol=1e-30)
    if pair.relation == "far":
        backward = tt.gaussian_kl_reference(*pair.q, *pair.p)
        assert np.all(pair.kl - backward >= 1.6 * pair.p[0].shape[1] - 1e-9)


@FEW
@given(problem=tt.trust_region_problems(SIZES, cond=(1, 1e4)))
def test_trust_region_solutions_satisfy_the_optimality_conditions(problem):
    """(H + mu I) p = -g, H + mu I >= 0, ||p|| <= radius, mu (||p|| - radius) = 0."""
    H, g, p, mu = problem.H, problem.g, problem.solution, problem.multiplier
    n = g.size
    scale = float(np.max(np.abs(problem.eigenvalues)))
    tt.assert_close((H + mu * np.eye(n)) @ p, -g, atol=1e-10 * (1 + scale) * (1 + np.linalg.norm(p)))
    assert np.linalg.eigvalsh(H + mu * np.eye(n))[0] >= -1e-10 * scale
    norm = float(np.linalg.norm(p))
    assert norm <= problem.radius * (1 + 1e-12)
    if problem.regime != "interior":
        assert norm == pytest.approx(problem.radius, rel=1e-12)
        assert mu > 0 or problem.regime == "boundary"
    else:
        assert mu == 0.0 and norm < problem.radius
    assert problem.model(p) == pytest.approx(problem.model_value, rel=1e-9, abs=1e-12)
    # no random feasible point does better
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.standard_normal(n)
        q *= problem.radius * rng.random() ** (1 / n) / np.linalg.norm(q)
        assert problem.model(q) >= problem.model_value - 1e-9 * (1 + abs(problem.model_value))


@FEW
@given(problem=tt.trust_region_problems(SIZES, regime="hard_case"))
def test_the_hard_case_has_g_orthogonal_to_the_lowest_eigenvector(problem):
    q1 = problem.eigenvectors[:, 0]
    assert abs(problem.g @ q1) <= 1e-12 * (1 + np.linalg.norm(problem.g))
    assert problem.multiplier == pytest.approx(-problem.eigenvalues[0])
    assert problem.eigenvalues[1] > problem.eigenvalues[0]


@FEW
@given(problem=tt.line_search_problems(st.integers(1, 4)))
def test_line_search_problems_know_their_first_acceptable_trial(problem):
    f0, c0 = problem.evaluate(problem.x0)
    assert c0 == 0.0
    first = None
    for k in range(problem.max_backtracks + 1):
        f, c = problem.evaluate(problem.x0 + problem.shrink**k * problem.full_step)
        ok = np.isfinite(f) and np.isfinite(c) and f > f0 and c <= problem.max_constraint
        assert np.isfinite(f) == (k not in problem.non_finite_trials)
        if ok:
            first = k
            break
    assert first == problem.first_acceptable


@FEW
@given(st.data())
def test_sizes_can_be_strategies_and_bad_arguments_are_rejected(data):
    assert data.draw(tt.spd_matrices(st.just(3))).n == 3
    for bad in (
        lambda: data.draw(tt.spd_matrices(0)),
        lambda: data.draw(tt.spd_matrices(2, cond=(0.5, 2))),
        lambda: data.draw(tt.spd_matrices(2, dtype=np.int64)),
        lambda: data.draw(tt.linear_operators(2, kind="diagonal")),
        lambda: data.draw(tt.psd_matrices(2, 3)),
    ):
        with pytest.raises((ValueError, TypeError)):
            bad()


def test_logits_oracle_is_scipy_log_softmax_of_the_stored_values():
    @given(case=tt.logits(2, 3, dtype=np.float32))
    def inner(case):
        expected = scipy.special.log_softmax(case.logits.astype(np.float64), axis=1)
        np.testing.assert_array_equal(case.log_probs, expected)

    inner()
