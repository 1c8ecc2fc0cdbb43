"""cg's CONVERGED means the true residual ``b - (A + damping I) x`` meets the tolerance.

CG updates its residual by a recurrence, ``r_{k+1} = r_k - alpha_k A p_k``, which drifts from
the true residual by the rounding of the updates of ``x`` and ``r`` (the "residual gap",
Greenbaum 1997), most when ``x`` is far larger than the solution and cancels as it converges
(a warm start ``x0 = s x*`` with ``s >> 1``), and on ill-conditioned systems with tolerances
near ``eps cond(A)``. scipy's cg reports these as converged; trustregion.cg checks the true
residual and restarts from it, or reports why it cannot meet the tolerance.

The residuals here are computed in extended precision (``np.longdouble``) from the matrix
cg was given, so that the test does not share cg's own rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trustregion as tr
from trustregion import Status
from trustregion.kernels import cg as kc


def _exact_residual(A: np.ndarray, b: np.ndarray, x: np.ndarray, damping: float = 0.0):
    """``||b - (A + damping I) x||`` in extended precision, and ``|| |b| + |A| |x| ||``."""
    wide = np.clongdouble if np.iscomplexobj(A) or np.iscomplexobj(x) else np.longdouble
    Aw, bw, xw = A.astype(wide), b.astype(wide), x.astype(wide)
    r = bw - Aw @ xw - wide(damping) * xw
    scale = np.abs(bw) + np.abs(Aw) @ np.abs(xw) + damping * np.abs(xw)
    return float(np.sqrt(np.sum(np.abs(r) ** 2))), float(np.sqrt(np.sum(scale**2)))


def _allowance(n: int, dtype, scale: float) -> float:
    """How far cg's own evaluation of ``||b - A x||`` may be from the exact value.

    cg decides on ``fl(b - fl(A x))`` in the working precision, whose error is componentwise
    at most ``gamma_{n+1} (|b| + |A| |x|)``, ``gamma_m = m u / (1 - m u)`` with ``u`` the unit
    roundoff (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., eq. (3.11) and
    section 3.5; a complex product costs a factor sqrt(2) more, section 3.6, and the damped
    product ``+ damping x`` one more rounding, hence ``n + 2`` and the factor 2). This is the
    floor of evaluating the residual at all: no check in that precision can certify less.
    """
    u = float(np.finfo(dtype).eps) / 2
    m = n + 2
    return 2.0 * (m * u / (1 - m * u)) * scale


def _tolerance(b: np.ndarray, rtol: float, atol: float, dtype) -> float:
    """cg's tolerance ``max(rtol ||b||, atol)``, with ``||b||`` as cg computes it (in the
    working precision: relative rounding ``gamma_n``, allowed for here)."""
    n = b.shape[0]
    u = float(np.finfo(dtype).eps) / 2
    b_norm = float(np.linalg.norm(b.astype(np.clongdouble if np.iscomplexobj(b) else np.longdouble)))
    return max(rtol * b_norm, atol) * (1 + 2 * n * u)


def _warm_start_problem():
    """The reproduction from the report: a 5x5 SPD system and x0 = s x*."""
    rng = np.random.default_rng(0)
    M = rng.standard_normal((5, 5))
    A = M @ M.T + 5 * np.eye(5)
    b = rng.standard_normal(5)
    return A, b, np.linalg.solve(A, b)


# -- the key test: no wrong success -------------------------------------------------------


def test_a_warm_start_far_larger_than_the_solution_is_no_wrong_success():
    # x0 = 1e12 x*: x = x0 + sum alpha_j p_j cancels twelve digits; the recurrence residual
    # met rtol = 1e-5 while the true one was 2.3e-4 relative (23 times the tolerance), and the
    # code before this change said CONVERGED
    A, b, x_star = _warm_start_problem()
    res = tr.cg(A, b, x0=1e12 * x_star)
    true, scale = _exact_residual(A, b, res.x)
    tol = _tolerance(b, 1e-5, 0.0, np.float64)
    assert res.status is not Status.CONVERGED or true <= tol + _allowance(5, np.float64, scale), (
        f"wrong success: true residual {true:.3e} > tolerance {tol:.3e}"
    )
    # and it is a success now: one restart from the true residual regains the digits
    assert res.status is Status.CONVERGED, res.message
    assert res.true_residual_norm is not None and res.true_residual_norm <= tol
    np.testing.assert_allclose(res.x, x_star, rtol=1e-4)


@pytest.mark.parametrize("s", [1e10, 1e12, 1e14, 1e20, 1e100])
@pytest.mark.parametrize("maxiter", [None, 1000])
def test_warm_starts_of_every_size(s, maxiter):
    A, b, x_star = _warm_start_problem()
    res = tr.cg(A, b, x0=s * x_star, maxiter=maxiter)
    true, scale = _exact_residual(A, b, res.x)
    if res.status is Status.CONVERGED:
        assert true <= _tolerance(b, 1e-5, 0.0, np.float64) + _allowance(5, np.float64, scale)
    else:  # (1e100 with the default 50 iterations: six restarts need about 130)
        assert res.status is Status.MAX_ITER and s == 1e100 and maxiter is None, res.message
    if maxiter is not None:
        assert res.status is Status.CONVERGED, res.message  # iterative refinement gets there
    assert np.all(np.isfinite(res.x))
    assert res.residual_history.shape == (res.nit + 1,)
    assert res.residual_history[-1] == res.residual_norm


@pytest.mark.parametrize(
    "dtype, log_cond, rtol, n",
    [(np.float64, 12, 1e-13, 20), (np.float64, 14, 1e-13, 20), (np.float32, 6, 1e-6, 100),
     (np.float32, 5, 1e-6, 100)],
)
def test_ill_conditioned_systems_from_zero_are_no_wrong_success(dtype, log_cond, rtol, n):
    # x0 = 0: the gap grows as eps cond(A) ||b||; with these tolerances the code before said
    # CONVERGED at 58 (float64, cond 1e12), 21 (cond 1e14), 4.2 and 2.3 (float32) times the
    # tolerance
    d = np.logspace(0, log_cond, n).astype(dtype)
    b = np.ones(n, dtype=dtype)
    A = np.diag(d)
    res = tr.cg(A, b, rtol=rtol, maxiter=50 * n)
    assert res.status is Status.CONVERGED, res.message
    true, scale = _exact_residual(A, b, res.x)
    assert true <= _tolerance(b, rtol, 0.0, dtype) + _allowance(n, dtype, scale)


# -- the property ---------------------------------------------------------------------------


@st.composite
def _problems(draw):
    dtype = draw(st.sampled_from([np.float64, np.float32, np.complex128, np.complex64]))
    single = np.dtype(dtype).itemsize * (2 if np.dtype(dtype).kind == "f" else 1) == 8
    n = draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**32 - 1))
    # x0 = 10^k x* + noise: up to 10^300 in double precision; in single precision up to
    # where 10^k x* and A x0 still fit (float32's largest is 3.4e38)
    k = draw(st.integers(0, 30 if single else 300))
    log_cond = draw(st.floats(0.0, 3.0 if single else 6.0))
    eps = float(np.finfo(dtype).eps)
    log_rtol = draw(st.floats(np.log10(eps) + 1.0, -3.0))
    damping = draw(st.sampled_from([0.0, 0.0, 0.5]))
    maxiter = draw(st.sampled_from([None, 40 * n + 40]))
    rng = np.random.default_rng(seed)
    complex_ = np.dtype(dtype).kind == "c"
    G = rng.standard_normal((n, n)) + (1j * rng.standard_normal((n, n)) if complex_ else 0.0)
    Q, _ = np.linalg.qr(G)
    A = (Q * np.logspace(0, log_cond, n)) @ Q.conj().T
    A = ((A + A.conj().T) / 2).astype(dtype)  # (exactly Hermitian, also after the cast)
    x_star = rng.standard_normal(n) + (1j * rng.standard_normal(n) if complex_ else 0.0)
    b = (A.astype(np.complex128 if complex_ else np.float64) @ x_star).astype(dtype)
    noise = rng.standard_normal(n) + (1j * rng.standard_normal(n) if complex_ else 0.0)
    x0 = (10.0**k * x_star + noise).astype(dtype)
    return A, b, x0, 10.0**log_rtol, damping, maxiter, dtype


@settings(max_examples=300, deadline=None)
@given(problem=_problems(), fused=st.booleans())
def test_converged_means_the_true_residual_meets_the_tolerance(problem, fused):
    A, b, x0, rtol, damping, maxiter, dtype = problem
    n = b.shape[0]
    try:
        kc._FOUND = None if fused else False  # False: the unfused loops
        res = tr.cg(A, b, x0=x0, rtol=rtol, damping=damping, maxiter=maxiter)
    finally:
        kc._FOUND = None
    assert np.all(np.isfinite(res.x))
    true, scale = _exact_residual(A, b, res.x, damping)
    tol = _tolerance(b, rtol, 0.0, dtype)
    if res.status is Status.CONVERGED:
        assert true <= tol + _allowance(n, dtype, scale), (
            f"wrong success: ||b - A x|| = {true:.3e} > {tol:.3e} ({res.message})"
        )
    checked = getattr(res, "true_residual_norm", None)
    if checked is not None and res.status is not Status.CONVERGED:
        # the check failed: cg saw a true residual above the tolerance, and says so
        assert checked > rtol * np.linalg.norm(b) * (1 - 1e-6)
        assert "true residual" in res.message
    assert res.residual_history.shape == (res.nit + 1,)


# -- what a restart does and reports --------------------------------------------------------


def test_a_solve_that_needs_no_restart_pays_one_operator_call_and_reports_the_true_residual():
    A, b, _ = _warm_start_problem()
    calls = []
    res = tr.cg(lambda v: calls.append(1) or A @ v, b, rtol=1e-8)
    assert res.status is Status.CONVERGED and res.nit > 0
    assert len(calls) == res.n_matvec == res.nit + 1  # the iterations and the check
    assert res.true_residual_norm == pytest.approx(np.linalg.norm(b - A @ res.x), rel=1e-12)
    assert res.true_residual_norm <= 1e-8 * np.linalg.norm(b)
    # no iteration: nothing to check (r_0 is computed from its definition), no extra call
    calls.clear()
    res = tr.cg(lambda v: calls.append(1) or A @ v, b, x0=np.linalg.solve(A, b), rtol=1e-8)
    assert res.nit == 0 and len(calls) == res.n_matvec == 1 and res.true_residual_norm is None
    # statuses other than CONVERGED are not checked
    res = tr.cg(A, b, rtol=1e-12, maxiter=2)
    assert res.status is Status.MAX_ITER and res.n_matvec == 2 and res.true_residual_norm is None


def test_a_restart_continues_the_count_the_history_and_the_callback():
    A, b, x_star = _warm_start_problem()
    seen = []
    calls = []
    res = tr.cg(lambda v: calls.append(1) or A @ v, b, x0=1e12 * x_star,
                callback=lambda xk: seen.append(xk.copy()))
    assert res.status is Status.CONVERGED
    assert "after 1 restart from the true residual" in res.message
    assert len(seen) == res.nit  # every iteration of every cycle
    np.testing.assert_array_equal(seen[-1], res.x)
    # x0's product, the iterations, and a check at the end of each of the two cycles; the
    # restart reuses the residual the check computed
    assert len(calls) == res.n_matvec == 1 + res.nit + 2
    first = tr.cg(A, b, x0=1e12 * x_star, maxiter=len(res.lanczos_alphas))
    # the first cycle alone: the same iterations, its check fails on the last allowed one
    assert first.status is Status.MAX_ITER and first.true_residual_norm is not None
    assert "met the tolerance" in first.message and "true residual" in first.message
    assert first.message.endswith(Status.MAX_ITER.remedy)
    np.testing.assert_array_equal(first.lanczos_alphas, res.lanczos_alphas)
    # the history: the first cycle's norms, then the second's, starting from the true one
    k = first.nit
    np.testing.assert_array_equal(res.residual_history[:k], first.residual_history[:k])
    assert res.residual_history[k] == pytest.approx(first.true_residual_norm, rel=1e-12)
    assert res.residual_history.shape == (res.nit + 1,)


@pytest.mark.parametrize("eager", [False, True])
def test_the_spectrum_after_a_restart_is_the_first_cycles(eager):
    A, b, x_star = _warm_start_problem()
    res = tr.cg(A, b, x0=1e12 * x_star, spectrum=eager)
    first = tr.cg(A, b, x0=1e12 * x_star, maxiter=len(res.lanczos_alphas), spectrum=eager)
    assert res.nit > len(res.lanczos_alphas) == first.nit
    assert (res.spectrum.eig_min, res.spectrum.eig_max) == (
        first.spectrum.eig_min, first.spectrum.eig_max)
    eigs = np.linalg.eigvalsh(A)
    assert eigs[0] * (1 - 1e-9) <= res.spectrum.eig_min <= res.spectrum.eig_max
    assert res.spectrum.eig_max <= eigs[-1] * (1 + 1e-9)


def test_a_tolerance_below_the_rounding_floor_stagnates_instead_of_succeeding():
    # an operator rounded to float32: the true residual cannot go below float32's rounding,
    # the recurrence residual can (the code before reported CONVERGED)
    rng = np.random.default_rng(5)
    Q = rng.standard_normal((50, 50))
    A = Q @ Q.T / 50 + 0.05 * np.eye(50)
    b = rng.standard_normal(50)
    res = tr.cg(lambda v: (A @ v).astype(np.float32), b, rtol=1e-10)
    assert res.status is Status.STAGNATED and not res.success
    assert res.true_residual_norm > 1e-10 * np.linalg.norm(b)
    assert res.message.endswith(Status.STAGNATED.remedy)
    assert "true residual" in res.message and "restarting no longer reduces it" in res.message
    assert res.n_matvec < 10 * 50  # stopped early, not at the iteration limit
    # a tolerance within its reach converges
    assert tr.cg(lambda v: (A @ v).astype(np.float32), b, rtol=1e-4).success


def _variants():
    A, b, x_star = _warm_start_problem()
    Ac = A + 1j * (np.triu(np.ones((5, 5)), 1) - np.tril(np.ones((5, 5)), -1))
    xc = np.linalg.solve(Ac, b.astype(complex))
    return [
        dict(A=A, b=b, x0=1e12 * x_star),
        dict(A=A, b=b, x0=1e12 * x_star, damping=0.5),
        dict(A=A, b=b, x0=1e12 * x_star, spectrum=True),
        dict(A=A, b=b, x0=1e100 * x_star, maxiter=1000),
        dict(A=Ac, b=b.astype(complex), x0=1e12 * xc),
        dict(A=A.astype(np.float32), b=b.astype(np.float32),
             x0=(1e6 * x_star).astype(np.float32)),
        dict(A=A, b=b, x0=1e12 * x_star, M=np.diag(1.0 / np.diag(A))),
        # rescaled (operator and residual): checked in the units the iteration ran in
        dict(A=A * 2.0**-330, b=b * 2.0**-330, x0=1e12 * x_star),
        dict(A=A * 2.0**40, b=b * 2.0**-1000, x0=x_star * 2.0**-1015),
    ]


@pytest.mark.parametrize("case", range(len(_variants())))
def test_restarts_behave_the_same_on_the_fused_and_unfused_paths(case):
    kwargs = _variants()[case]
    A, b = kwargs.pop("A"), kwargs.pop("b")
    results = []
    try:
        for found in (True, False):
            kc._FOUND = found
            seen: list[np.ndarray] = []
            res = tr.cg(A, b, callback=lambda xk, s=seen: s.append(xk.copy()), **kwargs)
            results.append((res, seen))
    finally:
        kc._FOUND = None
    (a, seen_a), (u, seen_u) = results
    assert (a.status, a.nit, a.n_matvec) == (u.status, u.nit, u.n_matvec)
    assert a.x.tobytes() == u.x.tobytes()
    assert a.residual_history.tobytes() == u.residual_history.tobytes()
    assert a.true_residual_norm == u.true_residual_norm and a.message == u.message
    assert all(p.tobytes() == q.tobytes() for p, q in zip(seen_a, seen_u, strict=True))
    assert (a.spectrum.eig_min, a.spectrum.eig_max) == (u.spectrum.eig_min, u.spectrum.eig_max)
    assert a.status is Status.CONVERGED, a.message
    true, scale = _exact_residual(A, b, a.x, kwargs.get("damping", 0.0))
    tol = _tolerance(b, 1e-5, 0.0, b.dtype)
    assert true <= tol + _allowance(b.shape[0], b.dtype, scale)


# -- rescaled problems: checked in the units the iteration ran in ---------------------------
#
# Far from unit scale cg iterates on a copy rescaled by powers of two and scales the answer
# back (see "Scale safety" in cg's Notes). The true residual is checked on that copy: in the
# caller's units the answer may be subnormal (digits the dtype cannot hold, which no answer
# avoids) or so large that the caller's own product A x overflows. The scales below are
# powers of two, so that the answer maps back to the unit problem exactly.


def _rescaled(k_A: int, k_b: int):
    A, b, x_star = _warm_start_problem()
    return A, b, x_star, A * 2.0**k_A, b * 2.0**k_b


@pytest.mark.parametrize("warm", [None, 25, 40])
def test_a_rescaled_problem_whose_answer_is_subnormal_converges(warm):
    k_A, k_b = 40, -1000  # x ~ 2^-1040 ~ 1e-313: subnormal
    A, b, x_star, As, bs = _rescaled(k_A, k_b)
    # A warm start 2^warm times the answer (normal) drifts: a restart from the x returned,
    # subnormal. With 2^25 that x lost digits its residual needs: the restart starts from x's
    # own residual, not the one checked (of the unrounded iterate), or it stagnates.
    x0 = None if warm is None else x_star * 2.0 ** (k_b - k_A + warm)
    res = tr.cg(As, bs, x0=x0, rtol=1e-10, maxiter=200)
    assert res.status is Status.CONVERGED, res.message
    assert ("restart" in res.message) is (warm is not None)
    assert np.abs(res.x).max() < np.finfo(np.float64).tiny  # (subnormal indeed)
    tol = 1e-10 * np.linalg.norm(b) * 2.0**k_b
    assert res.true_residual_norm is not None and res.true_residual_norm <= tol
    # the answer is the unit problem's, to its tolerance and to the rounding of x to a
    # subnormal (at most half its spacing 2^-1074, here 2^-35 in the unit problem's units)
    x_unit = res.x * 2.0**k_A * 2.0**-k_b  # (exact)
    spacing = np.full(5, 2.0 ** (-1075 + k_A - k_b))
    true, scale = _exact_residual(A, b, x_unit)
    assert true <= _tolerance(b, 1e-10, 0.0, np.float64) + _allowance(5, np.float64, scale) + (
        np.linalg.norm(np.abs(A) @ spacing))


def test_a_rescaled_problem_whose_answer_is_near_overflow_converges():
    # x ~ 2^1019 ~ 1e307, and A's products with it cancel: in the caller's units A x
    # overflows (a check there reported NON_FINITE), in the iteration's it is b
    A = np.array([[101.0, -99.0], [-99.0, 101.0]])
    b = np.array([1.0, 1.25])
    k_b = 1020
    bs = b * 2.0**k_b
    res = tr.cg(A, bs, rtol=1e-10)
    assert res.status is Status.CONVERGED, res.message
    with np.errstate(over="ignore", invalid="ignore"):
        assert not np.all(np.isfinite(bs - A @ res.x))  # (what the caller's units give)
    assert res.true_residual_norm is not None
    assert res.true_residual_norm <= 1e-10 * np.linalg.norm(b) * 2.0**k_b
    x_unit = res.x * 2.0**-k_b  # (exact)
    true, scale = _exact_residual(A, b, x_unit)
    assert true <= _tolerance(b, 1e-10, 0.0, np.float64) + _allowance(2, np.float64, scale)


@pytest.mark.parametrize("k_b", [-330, 0])  # the right-hand side rescaled too, or not
@pytest.mark.parametrize("damping", [0.0, 0.5])
def test_a_rescaled_warm_start_is_checked_at_the_scale_of_x_not_of_x0(k_b, damping):
    # Rescaled with a warm start, the iteration solves for the correction y to x0:
    # c_A (A + damping I) y = c_b r0. That system's residual rounds at the scale of r0, here
    # 2^40 times the answer's, and could come out below the tolerance with x a million times
    # over it (a wrong success): the check is on x's own residual, in the iteration's units.
    k_A = -330  # (A ~ 1e-99: the operator is rescaled; with k_b = -330 the residual too)
    A, b, _, As, bs = _rescaled(k_A, k_b)
    damping_s = damping * 2.0**k_A  # (A + damping I) in the unit problem
    x_star = np.linalg.solve(As + damping_s * np.eye(5), bs)
    res = tr.cg(As, bs, x0=2.0**40 * x_star, damping=damping_s, rtol=1e-10, maxiter=200)
    assert res.status is Status.CONVERGED, res.message
    assert "restart" in res.message
    # (As + damping_s I) x = bs is (A + damping I) x 2^(k_A - k_b) = b: exactly scaled
    x_unit = res.x * 2.0 ** (k_A - k_b)
    true, scale = _exact_residual(A, b, x_unit, damping)
    assert true <= _tolerance(b, 1e-10, 0.0, np.float64) + _allowance(5, np.float64, scale)


@pytest.mark.parametrize("k_b", [-612, -611])  # (c_A / c_b = 2^e with |e| >= 900, e even and odd)
def test_a_warm_started_copy_scaled_by_a_power_of_two_gives_the_scaled_answer_bit_for_bit(k_b):
    # x ~ 2^-950 is scaled back from the iteration's units by 2^e, |e| >= 900: exactly (two
    # powers of two), not by the square root of 2^e twice, which rounds for an odd e, and
    # x = x0 + (the correction scaled back) cancels that rounding up to 2.5e-10 relative
    # here, beyond what the check, made before scaling back, sees
    A, b, x_star = _warm_start_problem()
    k_A, s = 338, 300
    x0 = x_star * 2.0**k_b * 2.0 ** (20 - k_A)  # 2^20 times the answer
    far = tr.cg(A * 2.0**k_A, b * 2.0**k_b, x0=x0, rtol=1e-9)
    near = tr.cg(A * 2.0**k_A, b * 2.0 ** (k_b + s), x0=x0 * 2.0**s, rtol=1e-9)
    assert far.status is near.status is Status.CONVERGED, far.message
    assert far.nit == near.nit
    np.testing.assert_array_equal(far.x * 2.0**s, near.x)
