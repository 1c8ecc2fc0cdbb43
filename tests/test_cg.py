"""Conjugate gradient against numpy.linalg.solve and scipy.sparse.linalg.cg."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.linalg import LinearOperator
from scipy.sparse.linalg import cg as scipy_cg

import trustregion as tr
from trustregion import Status


def spd_matrix(n: int, cond: float, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    """A random SPD matrix with eigenvalues log-spaced in [1, cond]."""
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eigs = np.logspace(0, np.log10(cond), n)
    return ((Q * eigs) @ Q.T).astype(dtype)


@settings(max_examples=30)
@given(
    n=st.integers(1, 200),
    log_cond=st.floats(0.0, 6.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_solves_spd_systems_like_numpy(n, log_cond, seed):
    rng = np.random.default_rng(seed)
    cond = 10.0**log_cond
    A = spd_matrix(n, cond, rng)
    b = rng.standard_normal(n)
    res = tr.cg(A, b, rtol=1e-10, maxiter=50 * n)
    assert res.status is Status.CONVERGED, res.message
    # The recurrence residual drifts from the true one by about eps * cond(A) * ||b||.
    true_residual = np.linalg.norm(A @ res.x - b)
    assert true_residual <= (1e-10 + 1e-14 * cond) * np.linalg.norm(b) * 10
    x_ref = np.linalg.solve(A, b)
    assert np.linalg.norm(res.x - x_ref) <= cond * (1e-10 + 1e-14 * cond) * 10 * np.linalg.norm(x_ref)
    assert res.residual_history.shape == (res.nit + 1,)
    assert res.residual_history[-1] == res.residual_norm


@pytest.mark.parametrize("n", [5, 50, 200])
def test_iterates_match_scipy(n):
    rng = np.random.default_rng(n)
    A = spd_matrix(n, 1e3, rng)
    b = rng.standard_normal(n)
    ours: list[np.ndarray] = []
    theirs: list[np.ndarray] = []
    tr.cg(A, b, rtol=1e-10, maxiter=30, callback=lambda x: ours.append(x.copy()))
    scipy_cg(A, b, rtol=1e-10, maxiter=30, callback=lambda x: theirs.append(x.copy()))
    assert len(ours) == len(theirs) or len(ours) == len(theirs) - 1
    for k, (x_ours, x_theirs) in enumerate(zip(ours, theirs, strict=False)):
        scale = np.linalg.norm(x_theirs)
        assert np.linalg.norm(x_ours - x_theirs) <= 1e-10 * scale, f"iterate {k}"


@pytest.mark.parametrize("n", [5, 50, 300])
@pytest.mark.parametrize("kind", ["dense", "diagonal"])
@pytest.mark.parametrize("warm", [False, True])
def test_float64_iterates_are_scipys_bit_for_bit(n, kind, warm):
    # without a preconditioner a float64 solve does scipy's operations in scipy's order, with
    # NumPy's own dot products: every iterate is scipy's to the bit, however the loop is run
    # (fused kernels, first iteration, result building), which guards the float64 results
    # against changes of the implementation
    rng = np.random.default_rng(1000 * n + 2 * warm + (kind == "dense"))
    if kind == "dense":
        A = spd_matrix(n, 1e3, rng)
        matvec = A.dot
    else:
        d = rng.uniform(0.5, 80.0, n)
        matvec = lambda v: d * v  # noqa: E731
    b = rng.standard_normal(n)
    x0 = rng.standard_normal(n) if warm else None
    ours: list[np.ndarray] = []
    theirs: list[np.ndarray] = []
    res = tr.cg(matvec, b, x0=x0, rtol=1e-10, maxiter=60,
                callback=lambda x: ours.append(x.copy()))
    x, _ = scipy_cg(LinearOperator((n, n), matvec=matvec, dtype=np.float64), b, x0=x0,
                    rtol=1e-10, maxiter=60, callback=lambda x: theirs.append(x.copy()))
    assert len(ours) == len(theirs) == res.nit > 0
    assert all(u.tobytes() == w.tobytes() for u, w in zip(ours, theirs, strict=True))
    assert res.x.tobytes() == x.tobytes()


def test_preconditioned_iterates_match_scipy():
    rng = np.random.default_rng(7)
    n = 60
    A = spd_matrix(n, 1e4, rng)
    M = np.diag(1.0 / np.diag(A))  # Jacobi
    b = rng.standard_normal(n)
    ours: list[np.ndarray] = []
    theirs: list[np.ndarray] = []
    tr.cg(A, b, M=M, rtol=1e-9, maxiter=40, callback=lambda x: ours.append(x.copy()))
    scipy_cg(A, b, M=M, rtol=1e-9, maxiter=40, callback=lambda x: theirs.append(x.copy()))
    for x_ours, x_theirs in zip(ours, theirs, strict=False):
        assert np.allclose(x_ours, x_theirs, rtol=1e-9, atol=1e-12)


def test_preconditioning_reduces_iterations_and_still_solves():
    rng = np.random.default_rng(3)
    n = 100
    d = np.logspace(0, 6, n)
    A = np.diag(d) + 1e-3 * np.ones((n, n))
    b = rng.standard_normal(n)
    plain = tr.cg(A, b, rtol=1e-10, maxiter=10 * n)
    jacobi = tr.cg(A, b, rtol=1e-10, maxiter=10 * n, M=lambda r: r / np.diag(A))
    assert jacobi.success, jacobi.message
    assert jacobi.nit < plain.nit / 5
    assert np.allclose(jacobi.x, np.linalg.solve(A, b), rtol=1e-6)


@pytest.mark.parametrize("damping", [1e-3, 0.1, 10.0])
def test_damping_solves_shifted_system(damping):
    rng = np.random.default_rng(1)
    A = spd_matrix(30, 100.0, rng)
    b = rng.standard_normal(30)
    res = tr.cg(A, b, damping=damping, rtol=1e-12)
    assert res.success
    assert np.allclose(res.x, np.linalg.solve(A + damping * np.eye(30), b), rtol=1e-9)


def test_damping_makes_a_singular_psd_matrix_solvable():
    A = np.diag([1.0, 0.0, 2.0])
    b = np.ones(3)
    assert tr.cg(A, b).status is Status.NEGATIVE_CURVATURE
    res = tr.cg(A, b, damping=0.5, rtol=1e-12)
    assert res.success
    assert np.allclose(res.x, [1 / 1.5, 1 / 0.5, 1 / 2.5])


@pytest.mark.parametrize(
    "form",
    ["array", "callable", "sparse", "linear_operator"],
)
def test_operator_forms_agree(form):
    rng = np.random.default_rng(5)
    A = spd_matrix(20, 50.0, rng)
    b = rng.standard_normal(20)
    op = {
        "array": A,
        "callable": lambda v: A @ v,
        "sparse": sp.csr_matrix(A),
        "linear_operator": LinearOperator(A.shape, matvec=lambda v: A @ v, dtype=A.dtype),
    }[form]
    res = tr.cg(op, b, rtol=1e-12)
    assert res.success
    assert np.allclose(res.x, np.linalg.solve(A, b), rtol=1e-9)


def test_indefinite_matrix_reports_negative_curvature_with_direction():
    A = np.diag([3.0, 1.0, -2.0])
    b = np.array([1.0, 1.0, 1.0])
    res = tr.cg(A, b)
    assert res.status is Status.NEGATIVE_CURVATURE
    assert not res.success
    assert res.direction is not None and res.curvature is not None
    assert res.direction @ A @ res.direction <= 0
    assert res.curvature == pytest.approx(res.direction @ A @ res.direction)
    assert np.all(np.isfinite(res.x))
    assert "positive definite" in res.message


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 40))
def test_random_indefinite_is_detected_or_solved_exactly(seed, n):
    """CG on an indefinite matrix either detects it or happens to solve the system."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eigs = rng.uniform(0.5, 2.0, n) * rng.choice([-1.0, 1.0], n)
    eigs[0] = -1.0
    A = (Q * eigs) @ Q.T
    b = rng.standard_normal(n)
    res = tr.cg(A, b, rtol=1e-10, maxiter=5 * n)
    assert np.all(np.isfinite(res.x))
    if res.status is Status.NEGATIVE_CURVATURE:
        assert res.direction @ A @ res.direction <= 1e-12 * (res.direction @ res.direction)
    else:
        assert res.status in (Status.CONVERGED, Status.MAX_ITER)


def test_singular_matrix_with_b_outside_range_is_detected():
    A = np.diag([1.0, 0.0])
    res = tr.cg(A, np.array([1.0, 1.0]))
    assert res.status is Status.NEGATIVE_CURVATURE
    assert res.curvature == pytest.approx(0.0, abs=1e-14)


def test_singular_matrix_with_b_in_range_converges():
    A = np.diag([1.0, 0.0, 4.0])
    res = tr.cg(A, np.array([1.0, 0.0, 2.0]), rtol=1e-12)
    assert res.success
    assert np.allclose(res.x, [1.0, 0.0, 0.5])


def test_float32_stays_float32_and_solves():
    rng = np.random.default_rng(2)
    A = spd_matrix(40, 100.0, rng, dtype=np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    res = tr.cg(A, b, rtol=1e-5)
    assert res.x.dtype == np.float32
    assert res.success
    assert np.allclose(res.x, np.linalg.solve(A.astype(np.float64), b), rtol=1e-3, atol=1e-4)


def test_float32_kept_when_callable_returns_float64():
    b = np.ones(3, dtype=np.float32)
    res = tr.cg(lambda v: 2.0 * v.astype(np.float64), b, rtol=1e-6)
    assert res.x.dtype == np.float32
    assert np.allclose(res.x, 0.5)


def test_converging_on_last_allowed_iteration_counts_as_converged():
    A = np.diag([1.0, 2.0, 3.0])
    b = np.ones(3)
    res = tr.cg(A, b, rtol=1e-12, maxiter=3)
    assert res.status is Status.CONVERGED and res.nit == 3
    _, info = scipy_cg(A, b, rtol=1e-12, maxiter=3)
    assert info == 3  # scipy reports this case as a failure


def test_iteration_limit_reports_max_iter_and_keeps_progress():
    rng = np.random.default_rng(4)
    A = spd_matrix(50, 1e4, rng)
    b = rng.standard_normal(50)
    res = tr.cg(A, b, rtol=1e-12, maxiter=5)
    assert res.status is Status.MAX_ITER and res.nit == 5
    # CG minimizes the A-norm of the error over the Krylov space: progress is monotone there
    # (the residual norm itself need not be).
    e0 = np.linalg.solve(A, b)
    e5 = e0 - res.x
    assert e5 @ A @ e5 < e0 @ A @ e0
    assert np.isclose(res.residual_norm, np.linalg.norm(b - A @ res.x), rtol=1e-6)
    assert "iteration limit 5" in res.message and res.message.endswith(Status.MAX_ITER.remedy)


def test_zero_rhs_returns_zero_without_matvec():
    calls = []
    res = tr.cg(lambda v: calls.append(1) or v, np.zeros(4))
    assert res.success and res.nit == 0 and not calls
    assert np.array_equal(res.x, np.zeros(4))


def test_x0_warm_start():
    rng = np.random.default_rng(9)
    A = spd_matrix(10, 10.0, rng)
    b = rng.standard_normal(10)
    x_ref = np.linalg.solve(A, b)
    res = tr.cg(A, b, x0=x_ref, rtol=1e-8)
    assert res.nit == 0 and res.success


def test_atol_stops_earlier_than_rtol():
    rng = np.random.default_rng(11)
    A = spd_matrix(80, 1e3, rng)
    b = rng.standard_normal(80)
    loose = tr.cg(A, b, rtol=0.0, atol=1e-1 * np.linalg.norm(b))
    tight = tr.cg(A, b, rtol=1e-10)
    assert loose.success and loose.nit < tight.nit
    assert loose.residual_norm <= 1e-1 * np.linalg.norm(b)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_matvec_is_a_status_not_nan(bad):
    def matvec(v):
        out = 2.0 * v
        out[0] = bad
        return out

    res = tr.cg(matvec, np.ones(3))
    assert res.status is Status.NON_FINITE
    assert np.all(np.isfinite(res.x))
    assert "non-finite" in res.message


def test_non_finite_matvec_after_some_iterations_keeps_last_good_iterate():
    A = np.diag([1.0, 2.0, 3.0, 4.0])
    calls = [0]

    def matvec(v):
        calls[0] += 1
        return A @ v if calls[0] < 3 else np.full(4, np.nan)

    res = tr.cg(matvec, np.ones(4), rtol=1e-14)
    assert res.status is Status.NON_FINITE and res.nit == 2
    assert np.all(np.isfinite(res.x)) and np.any(res.x)


def test_indefinite_preconditioner_is_reported():
    res = tr.cg(np.eye(3), np.ones(3), M=-np.eye(3))
    assert res.status is Status.INDEFINITE_PRECONDITIONER


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(b=np.ones((2, 2))), ValueError, "b must be 1-D"),
        (dict(b=np.array([1.0, np.nan])), ValueError, r"b must be finite, got b\[1\] = nan"),
        (dict(b=np.array([1.0, 2.0], dtype=object)), TypeError, "dtype object"),
        (dict(rtol=-1.0), ValueError, r"rtol must be a number >= 0 \(inf allowed\), got -1.0"),
        (dict(atol=np.nan), ValueError, "atol"),
        (dict(damping=-0.1), ValueError, "damping must be finite and >= 0, got -0.1"),
        (dict(maxiter=-1), ValueError, "maxiter must be >= 0, got -1"),
        (dict(maxiter=2.5), TypeError, "maxiter must be an integer"),
        (dict(A=np.eye(3)), ValueError, r"A must have shape \(2, 2\)"),
        (dict(A="matrix"), TypeError, "A must be a callable"),
        (dict(A=lambda v: np.ones(3)), ValueError, r"A returned shape \(3,\), expected \(2,\)"),
        (dict(x0=np.ones(3)), ValueError, "x0 must have shape"),
        (dict(M=np.eye(5)), ValueError, r"M must have shape \(2, 2\)"),
        # values the fast paths for already-valid arguments must still send to the checks
        (dict(b=np.array([np.inf, 1.0])), ValueError, r"b must be finite, got b\[0\] = inf"),
        (dict(b=np.array([1.0, np.nan], dtype=np.float32)), ValueError, "b must be finite"),
        (dict(b=np.array([])), ValueError, "b must not be empty"),
        (dict(b=np.array([1e200, 1e200])), None, None),  # finite: b^T b overflows, still valid
        (dict(rtol=float("nan")), ValueError, "rtol must be a number >= 0"),
        (dict(atol=-0.0), None, None),
        (dict(damping=float("inf")), ValueError, "damping must be finite and >= 0, got inf"),
        (dict(maxiter=True), TypeError, "maxiter must be an integer, got True"),
        (dict(maxiter=np.int64(3)), None, None),
    ],
)
def test_bad_input_raises_with_a_precise_message(kwargs, error, match):
    args = dict(A=np.eye(2), b=np.ones(2))
    args.update(kwargs)
    A = args.pop("A")
    b = args.pop("b")
    if error is None:
        assert tr.cg(A, b, **args).success
        return
    with pytest.raises(error, match=match):
        tr.cg(A, b, **args)


def test_operator_far_below_unit_scale_with_b_far_from_it_converges():
    """A 1e-255 operator times a 1e-60 right-hand side underflows (subnormal products lose
    their digits): the solve is redone with b at unit scale instead of reporting zero
    curvature. Found by hypothesis in tests/test_bad_input_scales.py."""
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    A = (Q * np.logspace(0, 2, 3)) @ Q.T
    b = np.random.default_rng(1).standard_normal(3)
    res = tr.cg(A * 1e-255, b * 1e-60, rtol=1e-10, maxiter=150)
    assert res.status is Status.CONVERGED, res.message
    x = np.linalg.solve(A, b)
    assert np.linalg.norm(res.x * 1e-195 - x) <= 1e-8 * np.linalg.norm(x)
    # the retry costs one matvec, and a power-of-two rescaling of b changes no iterate
    plain = tr.cg(A, b, rtol=1e-10, maxiter=150)
    assert res.n_matvec == plain.n_matvec + 1


def test_unit_scale_retry_leaves_the_iterates_exact():
    """The same problem with b scaled by a power of two: the same iterates, scaled exactly."""
    A = spd_matrix(8, 50.0, np.random.default_rng(3))
    b = np.random.default_rng(4).standard_normal(8)
    ref = tr.cg(A, b, rtol=1e-12)
    scaled = tr.cg(A * 2.0**-850, b * 2.0**-180, rtol=1e-12)
    assert scaled.nit == ref.nit
    np.testing.assert_array_equal(scaled.x, ref.x * 2.0**670)


def test_message_is_written_on_first_access_and_is_the_same():
    res = tr.cg(np.diag([1.0, 2.0, -1.0]), np.ones(3))
    assert "message" not in res.__dict__
    message = res.message
    assert message.startswith("non-positive curvature p^T A p = ")
    assert message.endswith(Status.NEGATIVE_CURVATURE.remedy)
    assert res.__dict__["message"] is message and res.message is message
    assert f"message={message!r}" in repr(tr.cg(np.diag([1.0, 2.0, -1.0]), np.ones(3)))
    import pickle

    assert pickle.loads(pickle.dumps(res)).message == message
    with pytest.raises(AttributeError, match="has no attribute 'mesage'"):
        res.mesage  # noqa: B018


@pytest.mark.parametrize("scale", [1.0, 2.0**-700])
@pytest.mark.parametrize("M", [None, "jacobi"])
def test_residual_history_is_computed_on_first_access_from_the_recorded_norms(scale, M):
    rng = np.random.default_rng(3)
    A = spd_matrix(30, 1e3, rng)
    b = rng.standard_normal(30) * scale  # (2^-700: b is rescaled inside, exactly)
    precond = None if M is None else np.diag(1.0 / np.diag(A))
    res = tr.cg(A, b, M=precond, rtol=1e-10)
    assert "residual_history" not in res.__dict__
    history = res.residual_history
    assert res.__dict__["residual_history"] is history and res.residual_history is history
    assert history.shape == (res.nit + 1,) and history[-1] == res.residual_norm
    # ||r_0|| = ||b|| (its square would underflow at 2^-700: scaled exactly), and the last
    # norm is the first within the tolerance
    b_norm = np.linalg.norm(b / scale) * scale
    np.testing.assert_allclose(history[0], b_norm, rtol=1e-14)
    assert history[-1] <= 1e-10 * b_norm < history[-2]
    import pickle

    copy = pickle.loads(pickle.dumps(tr.cg(A, b, M=precond, rtol=1e-10)))
    assert copy.residual_history.tobytes() == history.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_first_and_later_iterations_agree(dtype):
    """The plain loop (no preconditioner, after the first iteration) computes what the
    general loop does: the identity preconditioner takes the general loop all the way."""
    rng = np.random.default_rng(5)
    A = spd_matrix(12, 100.0, rng).astype(dtype)
    b = rng.standard_normal(12).astype(dtype)
    if np.dtype(dtype).kind == "c":
        A = (A + 1j * 0.0).astype(dtype)
        b = (b + 1j * rng.standard_normal(12)).astype(dtype)
    plain = tr.cg(lambda v: A @ v, b, rtol=1e-5, maxiter=40)
    general = tr.cg(lambda v: A @ v, b, rtol=1e-5, maxiter=40, M=lambda v: v)
    assert plain.status is general.status is Status.CONVERGED
    tol = 1e-3 if np.finfo(dtype).bits == 32 else 1e-9  # single or double precision
    np.testing.assert_allclose(plain.x, general.x, rtol=tol, atol=tol * np.abs(general.x).max())
    if np.dtype(dtype).kind == "f":
        assert plain.nit == general.nit
        np.testing.assert_array_equal(plain.x, general.x)


def test_non_hermitian_direction_found_after_the_first_iteration():
    """p_0 = b sees a Hermitian operator, p_1 does not: the plain complex loop checks too."""
    H = np.array([[2.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 4.0]], dtype=np.complex128)
    K = np.diag([0.0, 1.0, 1.0]) * 1j  # K b = 0 for b = e_0
    res = tr.cg(lambda v: (H + K) @ v, np.array([1.0, 0.0, 0.0], dtype=np.complex128))
    assert res.status is Status.NON_REAL_CURVATURE and res.nit == 1
    assert np.all(np.isfinite(res.x))


def test_a_list_or_tuple_right_hand_side_solves_as_its_array():
    # b is array_like: a list took the fast path's dtype lookup and raised AttributeError
    A = np.array([[4.0, 1.0], [1.0, 3.0]])
    ref = tr.cg(A, np.array([1.0, 2.0]), rtol=1e-12)
    for b in ([1.0, 2.0], (1.0, 2.0), [1, 2]):
        res = tr.cg(A, b, rtol=1e-12)
        assert res.status == ref.status and res.nit == ref.nit
        assert res.x.tobytes() == ref.x.tobytes()
    with pytest.raises(ValueError, match=r"b must be 1-D, got shape \(\)"):
        tr.cg(A, 1.0)
