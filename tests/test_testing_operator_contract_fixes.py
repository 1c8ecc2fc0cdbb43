"""Regressions for check_symmetric_operator, check_kl and the solver-contract checks."""

from typing import NamedTuple

import numpy as np
import pytest
import scipy.special

import trustregion as tr
import trustregion.testing as tt


class CGResult(NamedTuple):
    x: np.ndarray
    success: bool


INDEFINITE = np.array([[1.0, 2.0], [2.0, 1.0]])
B = np.array([1.0, 0.0])


def _cg_giving_up(success):
    def solve(A, b, *, rtol, maxiter, M):
        A(b)
        return CGResult(x=np.zeros_like(b), success=success)

    return solve


# ------------------------------------------------------------ bug 1: NamedTuple results


def test_named_tuple_claiming_success_with_a_useless_x_fails():
    with pytest.raises(AssertionError, match="residual of a claimed success"):
        tt.check_cg_contract(_cg_giving_up(True), INDEFINITE, B)


def test_named_tuple_honestly_reporting_failure_passes():
    tt.check_cg_contract(_cg_giving_up(False), INDEFINITE, B)


def test_plain_scipy_tuple_is_still_read_as_x_info():
    import scipy.sparse.linalg

    A = np.array([[4.0, 1.0], [1.0, 3.0]])
    tt.check_cg_contract(scipy.sparse.linalg.cg, A, np.array([1.0, 2.0]), non_finite=False)

    def lying(A, b, *, rtol, maxiter, M):
        A(b)
        return np.zeros_like(b), 0  # info = 0 claims success

    with pytest.raises(AssertionError, match="residual of a claimed success"):
        tt.check_cg_contract(lying, INDEFINITE, B)


# ------------------------------------------------------------ bug 2: tolerance above max_dense


def test_float32_operator_with_clear_asymmetry_fails_above_max_dense():
    n = 300
    rng = np.random.default_rng(5)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    S = (Q * np.logspace(0, -2, n)) @ Q.T
    S = 0.5 * (S + S.T)
    P = rng.standard_normal((n, n))
    A = (S + 3e-3 * np.linalg.norm(S, 2) * P / np.linalg.norm(P, 2)).astype(np.float32)
    with pytest.raises(AssertionError, match="random pair"):
        tt.check_symmetric_operator(lambda v: A @ v, n, dtype=np.float32, max_dense=256)


@pytest.mark.parametrize("n", [10_000, 600_000])
def test_cyclic_shift_fails_at_large_n_in_float32(n):
    with pytest.raises(AssertionError, match="random pair"):
        tt.check_symmetric_operator(lambda v: np.roll(v, 1), n, dtype=np.float32)


def test_minus_identity_is_not_psd_at_large_n_in_float32():
    with pytest.raises(AssertionError, match="Ritz value -1"):
        tt.check_symmetric_operator(lambda v: -v, 600_000, psd=True, dtype=np.float32)


def test_default_tolerances_stay_well_below_one():
    report = tt.check_symmetric_operator(lambda v: 2 * v, 600_000, psd=True, dtype=np.float32)
    assert report.comparisons[-1].tolerance <= 1e-2 * 2  # the Lanczos test, top Ritz value 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1e-8, 1.0, 1e8])
@pytest.mark.parametrize("n", [300, 3000])
def test_correct_random_operators_pass_above_max_dense(dtype, scale, n):
    rng = np.random.default_rng(n)
    G = rng.standard_normal((n, n))
    sym = ((G + G.T) * (scale / np.sqrt(n))).astype(dtype)
    low = (G[:, :20] * np.sqrt(scale)).astype(dtype)  # rank 20: Lanczos reaches the null space
    for seed in range(2):
        tt.check_symmetric_operator(lambda v: sym @ v, n, dtype=dtype, seed=seed)
        tt.check_symmetric_operator(lambda v: low @ (low.T @ v), n, psd=True, dtype=dtype, seed=seed)


def test_recursively_summed_psd_operator_passes_in_float32():
    # a column-by-column sum rounds like sqrt(n) eps, more than numpy's blocked products
    n = 2000
    rng = np.random.default_rng(0)
    low = rng.standard_normal((n, 20))
    A = (low @ low.T).astype(np.float32)

    def matvec(v):
        out = np.zeros(n, dtype=np.float32)
        for j in range(n):
            out += A[:, j] * v[j]
        return out

    tt.check_symmetric_operator(matvec, n, psd=True, dtype=np.float32)


# ------------------------------------------------------------ bug 3: atol above max_dense


def _one_hot_fisher(n):
    z = np.zeros(n)
    z[0] = 25.0
    p = scipy.special.softmax(z)
    return lambda v: p * v - p * (p @ v)


@pytest.mark.parametrize("max_dense", [256, 300])
def test_atol_is_honoured_on_both_paths(max_dense):
    tt.check_symmetric_operator(_one_hot_fisher(300), 300, psd=True, atol=1e-12, max_dense=max_dense)
    tt.check_symmetric_operator(_one_hot_fisher(300), 300, psd=True, atol=1e-6, max_dense=max_dense)


# ------------------------------------------------------------ bug 4: argument validation


S = np.array([[2.0, 1.0], [1.0, 2.0]])


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"rtol": -1.0}, ValueError, "rtol"),
        ({"rtol": float("nan")}, ValueError, "rtol"),
        ({"rtol": 1.0}, ValueError, "rtol"),
        ({"atol": float("nan")}, ValueError, "atol"),
        ({"atol": -1e-3}, ValueError, "atol"),
        ({"atol": float("inf")}, ValueError, "atol"),
        ({"atol": "0"}, TypeError, "atol"),
        ({"seed": 1.5}, ValueError, "seed"),
        ({"seed": -1}, ValueError, "seed"),
        ({"max_dense": 2.5}, ValueError, "max_dense"),
        ({"max_dense": -1}, ValueError, "max_dense"),
    ],
)
def test_symmetric_operator_rejects_bad_arguments(kwargs, error, name):
    with pytest.raises(error, match=name):
        tt.check_symmetric_operator(S.dot, 2, **kwargs)


def test_symmetric_operator_accepts_numpy_integers_and_zero_max_dense():
    tt.check_symmetric_operator(S.dot, 2, seed=np.int64(3), max_dense=np.int64(0), psd=True)


def _categorical_kl(p, q):
    lp, lq = scipy.special.log_softmax(p, axis=1), scipy.special.log_softmax(q, axis=1)
    return np.sum(np.exp(lp) * (lp - lq), axis=1)


P = np.array([[0.0, 1.0, 2.0]])
Q = np.array([[1.0, 0.0, -1.0]])


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [
        ((P, Q), {"accuracy": -1.0}, "accuracy"),
        ((P, Q), {"accuracy": float("nan")}, "accuracy"),
        ((P[:0], Q[:0]), {}, "at least one row"),
        ((np.full((1, 3), np.nan), Q), {}, "NaN"),
        ((P, Q), {"seed": -1}, "seed"),
        ((P, Q), {"seed": 0.5}, "seed"),
    ],
)
def test_kl_rejects_bad_arguments(args, kwargs, name):
    with pytest.raises(ValueError, match=name):
        tt.check_kl(lambda p, q: np.nan_to_num(_categorical_kl(p, q)), *args, **kwargs)


def _core_cg(A, b, **kwargs):
    return tr.cg(A, b, **kwargs)


@pytest.mark.parametrize("A", [np.full((2, 2), np.inf), np.array([[4.0, np.nan], [1.0, 3.0]])])
def test_cg_contract_rejects_a_non_finite_oracle(A):
    with pytest.raises(ValueError, match="A must be finite"):
        tt.check_cg_contract(_core_cg, A, np.array([1.0, 2.0]))


@pytest.mark.parametrize("rtol", [float("nan"), -1e-6, float("inf")])
def test_cg_contract_rejects_a_bad_rtol(rtol):
    with pytest.raises(ValueError, match="rtol"):
        tt.check_cg_contract(_core_cg, np.eye(2), np.array([1.0, 2.0]), rtol=rtol)


def _steihaug(hessp, g, r):
    return tr.steihaug_cg(hessp, g, r)


@pytest.mark.parametrize("H", [np.full((2, 2), np.inf), np.array([[4.0, np.nan], [1.0, 3.0]])])
def test_steihaug_contract_rejects_a_non_finite_oracle(H):
    with pytest.raises(ValueError, match="H must be finite"):
        tt.check_steihaug_contract(_steihaug, np.array([1.0, 2.0]), H, 0.5)


@pytest.mark.parametrize("optimal_value", [float("nan"), 1.0, -float("inf")])
def test_steihaug_contract_rejects_an_impossible_optimal_value(optimal_value):
    H = np.array([[4.0, 1.0], [1.0, 3.0]])
    with pytest.raises(ValueError, match="optimal_value"):
        tt.check_steihaug_contract(_steihaug, np.array([1.0, 2.0]), H, 0.5, optimal_value=optimal_value)


class _Problem:
    x0 = np.zeros(2)
    full_step = np.ones(2)
    expected_improvement = 1.0
    max_constraint = 1.0
    shrink = 0.5
    max_backtracks = 3

    @staticmethod
    def evaluate(x):
        return float(np.sum(x)), 0.0


@pytest.mark.parametrize("constraint_rtol", [float("nan"), -1.0, float("inf")])
def test_line_search_contract_rejects_a_bad_constraint_rtol(constraint_rtol):
    with pytest.raises(ValueError, match="constraint_rtol"):
        tt.check_line_search_contract(
            lambda ev, x0, s, **kw: tr.backtracking_line_search(ev, x0, s, **kw),
            _Problem(),
            constraint_rtol=constraint_rtol,
        )


def test_line_search_contract_still_passes_the_core_search():
    tt.check_line_search_contract(
        lambda ev, x0, s, **kw: tr.backtracking_line_search(ev, x0, s, **kw), _Problem()
    )
