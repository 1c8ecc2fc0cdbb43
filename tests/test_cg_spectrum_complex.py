"""Issue 13 for CG: complex Hermitian systems against scipy, scipy's b = 0 and inf-tolerance
conventions, and the spectral information carried by CG's coefficients (Lanczos)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.linalg import cg as scipy_cg

import trustregion as tr
from trustregion import Status
from trustregion.core.cg import CGSpectrum


def with_spectrum(eigs: np.ndarray, seed: int, complex_: bool = False) -> np.ndarray:
    """A (Hermitian) matrix with exactly the eigenvalues ``eigs`` (to rounding)."""
    rng = np.random.default_rng(seed)
    n = eigs.shape[0]
    X = rng.standard_normal((n, n))
    if complex_:
        X = X + 1j * rng.standard_normal((n, n))
    Q, _ = np.linalg.qr(X)
    A = (Q * eigs) @ Q.conj().T
    return (A + A.conj().T) / 2


# -- complex Hermitian systems --------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "rtol", "tol"), [(np.complex128, 1e-10, 1e-8),
                                                    (np.complex64, 1e-5, 1e-3)])
@pytest.mark.parametrize("form", ["array", "callable", "sparse"])
def test_complex_hermitian_matches_scipy(dtype, rtol, tol, form):
    import scipy.sparse as sp

    eigs = np.logspace(0, 2, 30)
    A = with_spectrum(eigs, 1, complex_=True).astype(dtype)
    rng = np.random.default_rng(2)
    b = (rng.standard_normal(30) + 1j * rng.standard_normal(30)).astype(dtype)
    op = {"array": A, "callable": lambda v: A @ v, "sparse": sp.csr_matrix(A)}[form]
    res = tr.cg(op, b, rtol=rtol, maxiter=300)
    ref, info = scipy_cg(A, b, rtol=rtol, maxiter=300)
    assert res.status is Status.CONVERGED and info == 0
    assert res.x.dtype == dtype
    x_exact = np.linalg.solve(A.astype(np.complex128), b.astype(np.complex128))
    scale = np.linalg.norm(x_exact)
    assert np.linalg.norm(res.x - ref) <= tol * scale
    assert np.linalg.norm(res.x - x_exact) <= tol * scale


def test_real_matrix_with_complex_rhs_and_complex_matrix_with_real_rhs():
    A = with_spectrum(np.array([1.0, 2.0, 4.0, 8.0]), 3)
    b = np.array([1.0, 1j, -1.0, 2.0 - 1j])
    res = tr.cg(A, b, rtol=1e-12)
    assert res.success and res.x.dtype == np.complex128
    np.testing.assert_allclose(res.x, np.linalg.solve(A, b), rtol=1e-9)
    Ac = with_spectrum(np.array([1.0, 2.0, 4.0, 8.0]), 3, complex_=True)
    res = tr.cg(Ac, np.ones(4), rtol=1e-12)  # scipy upcasts to complex too
    assert res.success and res.x.dtype == np.complex128
    np.testing.assert_allclose(res.x, np.linalg.solve(Ac, np.ones(4)), rtol=1e-9)


def test_complex_preconditioned_and_damped():
    A = with_spectrum(np.logspace(0, 3, 20), 4, complex_=True)
    b = np.exp(1j * np.arange(20.0))
    M = np.diag(1.0 / np.diag(A).real)
    res = tr.cg(A, b, M=M, damping=0.5, rtol=1e-11, maxiter=200)
    assert res.success, res.message
    np.testing.assert_allclose(res.x, np.linalg.solve(A + 0.5 * np.eye(20), b), rtol=1e-8)


# -- scipy's conventions --------------------------------------------------------------------


def test_zero_rhs_returns_exact_zero_even_with_a_warm_start():
    calls = []

    def matvec(v):
        calls.append(1)
        return 2.0 * v

    res = tr.cg(matvec, np.zeros(10), x0=np.arange(10.0))
    assert res.status is Status.CONVERGED and res.nit == 0 and res.n_matvec == 0 and not calls
    assert np.array_equal(res.x, np.zeros(10))
    ref, info = scipy_cg(np.eye(10) * 2, np.zeros(10), x0=np.arange(10.0))
    assert info == 0 and np.array_equal(ref, res.x)


@pytest.mark.parametrize("tolerances", [dict(rtol=np.inf), dict(atol=np.inf),
                                        dict(rtol=np.inf, atol=0.0)])
def test_infinite_tolerance_converges_at_once(tolerances):
    A = with_spectrum(np.array([1.0, 3.0, 9.0]), 5)
    res = tr.cg(A, np.ones(3), **tolerances)
    assert res.status is Status.CONVERGED and res.nit == 0
    assert np.array_equal(res.x, np.zeros(3))
    ref, info = scipy_cg(A, np.ones(3), **tolerances)
    assert info == 0 and np.array_equal(ref, res.x)


# -- spectrum (Lanczos) ---------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 60), log_cond=st.floats(0.0, 5.0), seed=st.integers(0, 2**16),
       iters=st.integers(1, 40))
def test_ritz_values_lie_inside_the_spectrum_and_move_outward(n, log_cond, seed, iters):
    rng = np.random.default_rng(seed)
    eigs = np.sort(10.0 ** rng.uniform(0.0, log_cond, n))
    A = with_spectrum(eigs, seed)
    true = np.linalg.eigvalsh(A)
    b = rng.standard_normal(n)
    res = tr.cg(A, b, rtol=0.0, maxiter=iters)
    if res.nit == 0:
        return
    spec = res.spectrum
    slack = 1e-8 * true[-1]  # rounding
    assert true[0] - slack <= spec.eig_min <= spec.eig_max <= true[-1] + slack
    assert np.all(spec.ritz_values >= true[0] - slack)
    assert np.all(spec.ritz_values <= true[-1] + slack)
    assert spec.condition <= true[-1] / true[0] * (1 + 1e-6)
    # interlacing: with more iterations the extreme Ritz values move toward the extremes
    prev = tr.cg(A, b, rtol=0.0, maxiter=res.nit - 1).spectrum if res.nit > 1 else None
    if prev is not None:
        assert spec.eig_max >= prev.eig_max - slack
        assert spec.eig_min <= prev.eig_min + slack


def test_extreme_ritz_values_converge_to_the_extreme_eigenvalues():
    eigs = np.linspace(1.0, 100.0, 200)
    A = with_spectrum(eigs, 7)
    b = np.random.default_rng(7).standard_normal(200)
    errors = []
    for iters in (5, 10, 20, 40):
        spec = tr.cg(A, b, rtol=0.0, maxiter=iters).spectrum
        errors.append((100.0 - spec.eig_max, spec.eig_min - 1.0))
        assert spec.eig_max <= 100.0 * (1 + 1e-12) and spec.eig_min >= 1.0 * (1 - 1e-12)
    top, bottom = np.array(errors).T
    assert np.all(np.diff(top) <= 1e-9) and np.all(np.diff(bottom) <= 1e-9)
    assert top[-1] < 1e-3 * 100.0 and bottom[-1] < 0.05


def test_full_krylov_space_recovers_every_eigenvalue():
    eigs = np.array([0.5, 1.0, 3.0, 7.0, 20.0])
    res = tr.cg(np.diag(eigs), np.ones(5), rtol=0.0, maxiter=5, spectrum=True)
    np.testing.assert_allclose(res.ritz_values, eigs, rtol=1e-9)
    assert np.isclose(res.spectrum.condition, 40.0, rtol=1e-9)


def test_spectrum_is_that_of_the_preconditioned_damped_operator():
    A = with_spectrum(np.logspace(0, 4, 30), 8)
    d = np.diag(A)
    damping = 2.0
    res = tr.cg(A, np.ones(30), M=np.diag(1.0 / (d + damping)), damping=damping, rtol=1e-13,
                maxiter=200)
    assert res.success
    s = 1.0 / np.sqrt(d + damping)
    true = np.linalg.eigvalsh(s[:, None] * (A + damping * np.eye(30)) * s[None, :])
    spec = res.spectrum
    assert np.isclose(spec.eig_max, true[-1], rtol=1e-6)
    assert np.isclose(spec.eig_min, true[0], rtol=1e-6)
    assert true[0] * (1 - 1e-9) <= spec.eig_min and spec.eig_max <= true[-1] * (1 + 1e-9)


def test_spectrum_of_a_rescaled_problem_is_in_the_callers_units():
    eigs = np.array([1.0, 2.0, 5.0, 10.0])
    A = with_spectrum(eigs, 9) * 1e-250
    res = tr.cg(A, np.ones(4) * 1e-100, rtol=1e-13)
    assert res.success
    np.testing.assert_allclose(res.ritz_values, eigs * 1e-250, rtol=1e-9)


def test_complex_spectrum_is_real_and_inside():
    eigs = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    A = with_spectrum(eigs, 10, complex_=True)
    res = tr.cg(A, np.ones(5) + 1j, rtol=1e-14)
    assert res.ritz_values.dtype == np.float64
    np.testing.assert_allclose(res.ritz_values, eigs, rtol=1e-8)


def test_spectrum_lazy_and_eager_agree_and_empty_without_iterations():
    A = with_spectrum(np.array([1.0, 4.0, 9.0]), 11)
    lazy = tr.cg(A, np.ones(3), rtol=1e-12)
    eager = tr.cg(A, np.ones(3), rtol=1e-12, spectrum=True)
    assert "spectrum" in eager.__dict__ and "spectrum" not in lazy.__dict__
    np.testing.assert_array_equal(lazy.spectrum.ritz_values, eager.spectrum.ritz_values)
    none = tr.cg(A, np.zeros(3)).spectrum
    assert none.ritz_values.size == 0 and none.eig_min is none.eig_max is none.condition is None


@pytest.mark.parametrize("eager", [False, True])
def test_spectrum_is_an_immutable_record_of_the_same_values(eager):
    """The eager spectrum (read from the fused kernel's state) and the lazy one are the same
    record: the same fields, immutable, the Ritz values computed once."""
    A = with_spectrum(np.linspace(1.0, 50.0, 12), 5)
    res = tr.cg(A, np.ones(12), rtol=0.0, maxiter=8, spectrum=eager)
    spec = res.spectrum
    assert isinstance(spec, CGSpectrum)
    assert spec.lanczos_kept == 8 and type(spec.lanczos_kept) is int and spec.scale == 1.0
    assert spec.condition == spec.eig_max / spec.eig_min
    ritz = spec.ritz_values
    assert ritz is spec.ritz_values  # cached
    assert (spec.eig_min, spec.eig_max) == pytest.approx((ritz[0], ritz[-1]), rel=1e-13)
    with pytest.raises(AttributeError):
        spec.eig_min = 0.0  # type: ignore[misc]
    assert repr(spec) == (f"CGSpectrum(eig_min={spec.eig_min!r}, eig_max={spec.eig_max!r}, "
                          f"condition={spec.condition!r})")


def test_negative_curvature_spectrum_uses_completed_iterations_only():
    res = tr.cg(np.diag([1.0, 2.0, -1.0]), np.ones(3), rtol=1e-12)
    assert res.status is Status.NEGATIVE_CURVATURE
    assert res.spectrum.ritz_values.size == res.nit


def test_natural_gradient_step_reports_the_damped_fisher_spectrum():
    eigs = np.logspace(-2, 2, 40)
    F = with_spectrum(eigs, 12)
    g = np.random.default_rng(12).standard_normal(40)
    res = tr.natural_gradient_step(g, F.dot, delta=0.01, cg_iters=10, damping=0.1)
    spec = res.spectrum
    assert spec is res.cg.spectrum
    assert spec.ritz_values.size == res.cg.nit == 10
    assert 0.1 + eigs[0] <= spec.eig_min * (1 + 1e-12)
    assert spec.eig_max <= (eigs[-1] + 0.1) * (1 + 1e-12)
    assert spec.eig_max > 0.5 * eigs[-1]  # ten iterations find the top of the spectrum


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 60), seed=st.integers(0, 2**32 - 1), ghosts=st.booleans())
def test_ritz_kernels_match_lapack(k, seed, ghosts):
    """The Numba kernels against scipy's LAPACK (stemr) on CG coefficients of any shape,
    including runs longer than n (repeated, "ghost" Ritz values)."""
    from scipy.linalg import eigvalsh_tridiagonal

    from trustregion.core.cg import lanczos_tridiagonal
    from trustregion.kernels.linalg import cg_extreme_ritz_values, cg_ritz_values

    rng = np.random.default_rng(seed)
    if ghosts:
        n = max(1, k // 2)
        res = tr.cg(np.diag(rng.uniform(1.0, 50.0, n)), rng.standard_normal(n), rtol=0.0,
                    maxiter=k)
        alphas = np.array(res.lanczos_alphas)
        rhos = np.array(res.lanczos_rhos[: alphas.shape[0]])
        if alphas.shape[0] == 0:
            return
    else:
        alphas = 10.0 ** rng.uniform(-3, 3, k)
        rhos = np.cumprod(10.0 ** rng.uniform(-3, 1, k))
    diag, off = lanczos_tridiagonal(alphas, rhos)
    ref = eigvalsh_tridiagonal(diag, off) if diag.shape[0] > 1 else diag
    scale = np.abs(ref).max()
    np.testing.assert_allclose(cg_ritz_values(alphas, rhos), ref, rtol=0, atol=1e-13 * scale)
    lo, hi = cg_extreme_ritz_values(alphas, rhos)
    assert abs(lo - ref[0]) <= 1e-13 * scale and abs(hi - ref[-1]) <= 1e-13 * scale


@settings(max_examples=80, deadline=None)
@given(k=st.integers(1, 60), seed=st.integers(0, 2**32 - 1), spread=st.floats(0.0, 12.0))
def test_collatz_wielandt_start_bounds_the_largest_ritz_value(k, seed, spread):
    """The upper Laguerre chain starts at the Collatz-Wielandt bound of one power step: never
    below the largest eigenvalue of the Lanczos matrix (LAPACK's), never above Gershgorin's
    bound (beyond its rounding margin), and the extremes found from it are LAPACK's."""
    from scipy.linalg import eigvalsh_tridiagonal

    from trustregion.core.cg import lanczos_tridiagonal
    from trustregion.kernels.linalg import _collatz_wielandt_bound, cg_extreme_ritz_values

    rng = np.random.default_rng(seed)
    alphas = 10.0 ** rng.uniform(-spread / 2, spread / 2, k)
    rhos = np.cumprod(10.0 ** rng.uniform(-spread / 2, spread / 4, k))
    diag, off = lanczos_tridiagonal(alphas, rhos)
    ref = eigvalsh_tridiagonal(diag, off) if k > 1 else diag
    e = np.append(off, 0.0)
    bound = _collatz_wielandt_bound(diag, e)
    gershgorin = np.max(diag + e + np.append(0.0, off))
    assert ref[-1] <= bound <= gershgorin * (1 + 1e-14)
    lo, hi = cg_extreme_ritz_values(alphas, rhos)
    scale = np.abs(ref).max()
    assert abs(lo - ref[0]) <= 1e-13 * scale and abs(hi - ref[-1]) <= 1e-13 * scale


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 40), seed=st.integers(0, 2**32 - 1), where=st.floats(-0.5, 1.5))
def test_one_point_sums_are_the_two_point_sums(k, seed, where):
    """After one Laguerre chain is done the other is evaluated alone: the same sums and Sturm
    count, bit for bit, as in the two-point pass (so the extremes do not depend on which
    chain finished first)."""
    from trustregion.core.cg import lanczos_tridiagonal
    from trustregion.kernels.linalg import _inertia_sum, _inertia_sums

    rng = np.random.default_rng(seed)
    diag, off = lanczos_tridiagonal(10.0 ** rng.uniform(-2, 2, k),
                                    np.cumprod(10.0 ** rng.uniform(-2, 1, k)))
    e = np.append(off, 0.0)
    x = where * float(np.max(diag + e + np.append(0.0, off)))
    both = _inertia_sums(diag, e, x, 0.5 * x)
    assert _inertia_sum(diag, e, x) == both[:4]
    assert _inertia_sum(diag, e, 0.5 * x) == both[4:]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 8), runs=st.integers(2, 15), seed=st.integers(0, 2**32 - 1))
def test_extreme_ritz_values_of_long_runs_with_many_ghosts_match_lapack(n, runs, seed):
    """CG run many times past n repeats each Ritz value ("ghosts"): extremes that are tight
    clusters, towards which plain Laguerre steps converge only linearly (the accelerated
    steps must still land on the extreme root, to rounding)."""
    from scipy.linalg import eigvalsh_tridiagonal

    from trustregion.core.cg import lanczos_tridiagonal
    from trustregion.kernels.linalg import cg_extreme_ritz_values

    rng = np.random.default_rng(seed)
    d = rng.uniform(1.0, 10.0 ** rng.uniform(0.5, 4.0), n)
    res = tr.cg(lambda v: d * v, rng.standard_normal(n), rtol=0.0, maxiter=runs * n)
    alphas = np.array(res.lanczos_alphas)
    rhos = np.array(res.lanczos_rhos[: alphas.shape[0]])
    if alphas.shape[0] < 2:
        return
    ref = eigvalsh_tridiagonal(*lanczos_tridiagonal(alphas, rhos))
    scale = np.abs(ref).max()
    lo, hi = cg_extreme_ritz_values(alphas, rhos)
    assert abs(lo - ref[0]) <= 1e-12 * scale and abs(hi - ref[-1]) <= 1e-12 * scale


@settings(max_examples=40, deadline=None)
@given(k=st.integers(2, 40), seed=st.integers(0, 2**32 - 1))
def test_extreme_ritz_values_of_an_indefinite_tridiagonal(k, seed):
    """The lower chain starts at 0, below CG's positive definite Lanczos matrix; coefficients
    that do not come from CG (a negative step length) make T indefinite: the Sturm count
    at 0 says so and the chain starts from the Gershgorin bound instead."""
    from scipy.linalg import eigvalsh_tridiagonal

    from trustregion.core.cg import lanczos_tridiagonal
    from trustregion.kernels.linalg import cg_extreme_ritz_values

    rng = np.random.default_rng(seed)
    alphas = 10.0 ** rng.uniform(-2, 2, k) * np.where(rng.random(k) < 0.3, -1.0, 1.0)
    rhos = np.cumprod(10.0 ** rng.uniform(-2, 1, k))
    ref = eigvalsh_tridiagonal(*lanczos_tridiagonal(alphas, rhos))
    scale = np.abs(ref).max()
    lo, hi = cg_extreme_ritz_values(alphas, rhos)
    assert abs(lo - ref[0]) <= 1e-12 * scale and abs(hi - ref[-1]) <= 1e-12 * scale


def test_spectrum_kernel_cuts_at_the_rounding_floor_like_the_definition():
    from trustregion.kernels.linalg import cg_extreme_ritz_values, cg_spectrum_extremes

    alphas = np.array([0.5, 0.4, 0.3, 0.2, 0.1])
    rhos = np.array([1.0, 1e-3, 1e-6, 1e-29, 1e-31, 1e-33])  # rho_3 <= 1e-28 * rho_0
    kept, lo, hi = cg_spectrum_extremes(alphas, rhos, 1e-28)
    assert kept == 3
    assert (lo, hi) == cg_extreme_ritz_values(alphas[:3], rhos[:3])
    assert cg_spectrum_extremes(alphas, rhos * 1e-40, 0.0)[0] == 5  # nothing below 0
    assert cg_spectrum_extremes(alphas[:2], np.array([1.0, 0.0]), 1e-28)[:2] == (1, 2.0)


@pytest.mark.parametrize(("dtype", "fused"), [(np.complex64, "update_iterate_sqnorm"),
                                              (np.complex128, "update_iterate_sqnorm"),
                                              (np.complex128, "update_iterate_sqnorm_z")])
@pytest.mark.parametrize("n", [1, 7, 50])
def test_fused_update_returns_the_new_residual_norm(dtype, fused, n):
    from trustregion.kernels import linalg

    rng = np.random.default_rng(13)
    x, r, p, q = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dtype)
                  for _ in range(4))
    x2, r2 = x.copy(), r.copy()
    rr = getattr(linalg, fused)(x, r, p, q, 0.3)
    linalg.update_iterate(x2, r2, p, q, 0.3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(r, r2)
    assert rr == pytest.approx(float(np.vdot(r2.astype(np.complex128), r2).real), rel=1e-13)


@pytest.mark.parametrize("n", [1, 7, 50])
def test_complex_direction_update_on_real_and_imaginary_parts(n):
    from trustregion.kernels.linalg import update_direction, update_direction_z

    rng = np.random.default_rng(14)
    p, z = (rng.standard_normal(n) + 1j * rng.standard_normal(n) for _ in range(2))
    p2 = p.copy()
    update_direction_z(p, z, 0.7)
    update_direction(p2, z, 0.7)
    np.testing.assert_array_equal(p, p2)


def test_complex64_preconditioned_run_into_underflow_solves_instead_of_raising():
    # rtol = 0 on a 1x1 system: the direction p shrinks until ||p||^2 underflows to 0 in
    # complex64 while p^H A p is still positive (it raised ZeroDivisionError before)
    rng = np.random.default_rng(1000)
    a = np.array([[6.7555714 + 0.0j]], dtype=np.complex64)
    b = (rng.standard_normal(1) + 1j * rng.standard_normal(1)).astype(np.complex64)
    M = np.array([[1.0 / 6.7555714]], dtype=np.complex64)
    res = tr.cg(a, b, M=M, damping=0.3, maxiter=20, rtol=0.0)
    assert res.x.dtype == np.complex64 and np.all(np.isfinite(res.x))
    expected = np.linalg.solve(a.astype(np.complex128) + 0.3 * np.eye(1), b)
    np.testing.assert_allclose(res.x, expected, rtol=1e-6)
