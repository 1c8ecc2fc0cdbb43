"""Laguerre's iteration for the extreme Ritz values (trustregion.kernels.linalg) near clusters:
near-multiple extreme eigenvalues against LAPACK, the steps from inside the spectrum and the
pair step, and how many passes a "ghost" pair costs."""

import math
import struct
import types
from fractions import Fraction

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import eigvalsh_tridiagonal, hessenberg

import trustregion as tr
import trustregion.kernels.linalg as lk
from trustregion.core.cg import lanczos_tridiagonal


def cg_coefficients(d: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CG's step lengths and rho_j whose Lanczos matrix is the positive definite tridiagonal
    (d, e): the pivots of T = L D L^T are 1/alpha_j and e_j^2 = beta_j / alpha_j^2."""
    k = d.shape[0]
    alphas = np.empty(k)
    rhos = np.empty(k)
    pivot = d[0]
    alphas[0], rhos[0] = 1.0 / pivot, 1.0
    for j in range(1, k):
        rhos[j] = rhos[j - 1] * (e[j - 1] * alphas[j - 1]) ** 2  # rho_j = rho_{j-1} beta_{j-1}
        pivot = d[j] - e[j - 1] ** 2 / pivot
        alphas[j] = 1.0 / pivot
    return alphas, rhos


def tridiagonal_with_spectrum(eigs: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A symmetric tridiagonal (positive off-diagonal) with the eigenvalues ``eigs``."""
    rng = np.random.default_rng(seed)
    n = eigs.shape[0]
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    T = hessenberg((Q * eigs) @ Q.T)
    return np.diag(T).copy(), np.abs(np.diag(T, -1))  # (signs: a diagonal similarity)


def count_passes(
    alphas: np.ndarray, rhos: np.ndarray
) -> tuple[tuple[float, float], list[int], set[float]]:
    """The extremes by the kernels' own code run as Python (the compiled helpers called from
    it), counting the passes over the tridiagonal (both chains, one chain) and collecting the
    multiplicities the chains' steps assumed (1: plain, 0: from inside, else accelerated)."""
    counts = [0, 0]
    modes: set[float] = set()

    def advance(*args):
        out = lk._laguerre_advance(*args)
        modes.add(out[7])
        return out

    def two_points(*args):
        counts[0] += 1
        return lk._inertia_sums(*args)

    def one_point(*args):
        counts[1] += 1
        return lk._inertia_sum(*args)

    def four_points(*args):  # (the first pass: both chains and the lower chain's probes)
        counts[0] += 1
        return lk._inertia_sums4(*args)

    scope = dict(vars(lk), _inertia_sums=two_points, _inertia_sum=one_point,
                 _inertia_sums4=four_points, _laguerre_advance=advance)
    scope["_laguerre_extremes"] = types.FunctionType(
        lk._laguerre_extremes.py_func.__code__, scope
    )
    extremes = types.FunctionType(lk._gershgorin_extremes.py_func.__code__, scope)
    d, e = lk._lanczos_entries(alphas, rhos)
    return extremes(d, e), counts, modes


@settings(max_examples=80, deadline=None)
@given(k=st.integers(4, 40), seed=st.integers(0, 2**32 - 1), top=st.integers(1, 3),
       bottom=st.integers(1, 3), log_gap_top=st.floats(-13.0, -1.0),
       log_gap_bottom=st.floats(-13.0, -1.0), log_cond=st.floats(0.5, 8.0))
def test_near_multiple_extreme_eigenvalues_match_lapack(
    k, seed, top, bottom, log_gap_top, log_gap_bottom, log_cond
):
    """Clusters of two or three eigenvalues at either end, relative gaps from 1e-13 to 0.1:
    Laguerre's plain steps converge to them only linearly, the accelerated steps (pair,
    multiplicity) can pass the extreme root, and the chain then approaches it from inside;
    whichever path, the extremes are LAPACK's to rounding and within the spectrum."""
    rng = np.random.default_rng(seed)
    eigs = np.sort(10.0 ** rng.uniform(0.0, log_cond, k))
    hi, lo = eigs[-1], eigs[0]
    eigs[k - top:] = hi * (1.0 - np.arange(top) * 10.0**log_gap_top)
    eigs[:bottom] = lo * (1.0 + np.arange(bottom) * 10.0**log_gap_bottom)
    d, e = tridiagonal_with_spectrum(eigs, seed)
    alphas, rhos = cg_coefficients(d, e)
    ref = eigvalsh_tridiagonal(*lanczos_tridiagonal(alphas, rhos))
    scale = np.abs(ref).max()
    lo_found, hi_found = lk.cg_extreme_ritz_values(alphas, rhos)
    assert abs(lo_found - ref[0]) <= 1e-13 * scale
    assert abs(hi_found - ref[-1]) <= 1e-13 * scale


@pytest.mark.parametrize(("complex_", "passes"), [(True, (6, 0)), (False, (3, 1))])
def test_clustered_extremes_of_the_benchmark_problems(complex_, passes):
    """The dense n = 16 problems of benchmarks/bench_cg.py, 20 CG iterations.

    complex128: 17 iterations are kept (the rest is at the rounding floor) of a
    16-dimensional operator, and the two largest Ritz values are a ghost pair 7e-7 apart.
    Plain Laguerre steps converge to such a pair linearly; its accelerated steps passed the
    top root and went back out, 10 passes in all where the lower end takes 6. Now pair steps
    and one step back from inside: the upper chain ends with the lower one.

    float64: the three smallest Ritz values lie within 2% of each other. From Gershgorin's
    bound (0.67, a third below them) the lower chain's plain steps converge only linearly;
    its accelerated step then passed the smallest and came back from inside (7 passes, 8
    with plain steps only). The first pass's probes of [bound, smallest diagonal entry] find
    0.978 below the spectrum, from which plain steps take 4 passes in all."""
    rng = np.random.default_rng(0)
    Q = rng.standard_normal((16, 16)) / 4.0
    if complex_:
        Q = Q + 1j * rng.standard_normal((16, 16)) / 4.0
    A = Q @ Q.conj().T + np.eye(16)
    b = rng.standard_normal(16)
    if complex_:
        b = b + 1j * rng.standard_normal(16)
    spec = tr.cg(A.dot, b, rtol=0.0, maxiter=20, spectrum=True).spectrum
    kept = spec.lanczos_kept
    alphas, rhos = spec.lanczos_alphas[:kept], spec.lanczos_rhos[:kept]
    ref = eigvalsh_tridiagonal(*lanczos_tridiagonal(alphas, rhos))
    if complex_:
        assert kept == 17 and 0.0 < ref[-1] - ref[-2] < 1e-6 * ref[-1]  # the ghost pair
    (lo, hi), counts, modes = count_passes(alphas, rhos)
    assert (lo, hi) == (spec.eig_min, spec.eig_max)  # the compiled kernel's, bit for bit
    assert abs(lo - ref[0]) <= 1e-14 * ref[-1] and abs(hi - ref[-1]) <= 1e-14 * ref[-1]
    assert tuple(counts) == passes
    if complex_:
        assert 0.0 in modes  # (a chain came back from inside)
        assert any(1.25 < m < 2.5 for m in modes)  # pair steps
    else:
        assert modes == {1.0}  # plain steps only, from the probe


def roots_and_sums(roots: list[float], x: float) -> tuple[np.ndarray, float, float]:
    lam = np.sort(np.array(roots))
    g = float(np.sum(1.0 / (x - lam)))  # p'/p
    h = float(np.sum(1.0 / (x - lam) ** 2))  # (p'/p)^2 - p''/p
    return lam, g, h


@settings(max_examples=200, deadline=None)
@given(roots=st.lists(st.floats(-10.0, 10.0), min_size=2, max_size=30),
       which=st.integers(0, 28), where=st.floats(0.01, 0.99))
def test_laguerre_iterates_from_between_two_roots_stay_between_them(roots, which, where):
    """For a polynomial with real roots, the two Laguerre iterates from x bound an interval
    around x free of roots (Parlett 1964): from between two roots, the step towards either
    does not pass it. (What the chains rely on when they approach an extreme root from
    inside.)"""
    lam = np.unique(np.round(np.array(roots), 3))
    if lam.shape[0] < 2:
        return
    i = which % (lam.shape[0] - 1)
    x = lam[i] + where * (lam[i + 1] - lam[i])
    lam, g, h = roots_and_sums(list(lam), x)
    k = lam.shape[0]
    up = x - lk._laguerre_step_towards(k, g, h, False)
    down = x - lk._laguerre_step_towards(k, g, h, True)
    slack = 1e-9 * (1.0 + np.abs(lam).max())
    assert x < up <= lam[i + 1] + slack
    assert lam[i] - slack <= down < x


@settings(max_examples=200, deadline=None)
@given(roots=st.lists(st.floats(-10.0, 10.0), min_size=1, max_size=30),
       distance=st.floats(1e-6, 10.0), above=st.booleans())
def test_pair_step_from_outside_is_at_least_newtons(roots, distance, above):
    """The pair step (exact for two roots) never falls short of Newton's step 1/g from
    outside the spectrum, so the accelerated chain always progresses; Laguerre's own step
    never passes the extreme root."""
    lam = np.sort(np.array(roots))
    x = lam[-1] + distance if above else lam[0] - distance
    lam, g, h = roots_and_sums(roots, x)
    newton = 1.0 / g
    pair = lk._pair_step(g, h)
    laguerre = lk._laguerre_step(lam.shape[0], g, h, 1.0)
    assert abs(pair) >= abs(newton) * (1.0 - 1e-12)
    assert np.sign(pair) == np.sign(newton) == np.sign(laguerre)
    extreme = lam[-1] if above else lam[0]
    # Exactly, Laguerre's step lands on or short of the extreme root. In floating point
    # its discriminant (n-1)(n h - g^2) cancels when roots cluster at the end (it is ~0
    # for a double root, where the step is exact) and keeps an absolute error of about
    # n^2 g^2 eps, so the step may pass the root by about n sqrt(eps) of itself:
    # roots [0, 1.19e-7] from x = -3 step 3 (1 + 5e-10).
    n = lam.shape[0]
    assert abs(laguerre) <= abs(x - extreme) * (1.0 + n * math.sqrt(np.finfo(float).eps))


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 50), seed=st.integers(0, 2**32 - 1))
def test_kernel_lanczos_matrix_is_lanczos_tridiagonal_bit_for_bit(k, seed):
    """The kernels build T with the arithmetic of the public lanczos_tridiagonal (one
    reciprocal per step length), so the reference tridiagonal of these tests is theirs."""
    rng = np.random.default_rng(seed)
    alphas = 10.0 ** rng.uniform(-3, 3, k)
    rhos = np.cumprod(10.0 ** rng.uniform(-3, 1, k))
    d, e = lk._lanczos_entries(alphas, rhos)
    diag, off = lanczos_tridiagonal(alphas, rhos)
    assert d.tobytes() == diag.tobytes()
    assert e[:-1].tobytes() == off.tobytes() and e[-1] == 0.0


@numba.njit(cache=False)
def _fma_compiled(a: float, b: float, c: float) -> float:
    return lk._fma(a, b, c)


@settings(max_examples=200, deadline=None)
@given(a=st.floats(-1e150, 1e150), b=st.floats(-1e150, 1e150), c=st.floats(-1e290, 1e290))
def test_fma_rounds_once(a, b, c):
    """The passes' fused multiply-add is IEEE's (one rounding of the exact a b + c), on any
    processor (LLVM emulates it where the hardware has none): the same bits everywhere."""
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    assert _fma_compiled(a, b, c) == float(exact)  # (float() of a Fraction rounds to nearest)


@settings(max_examples=150, deadline=None)
@given(k=st.integers(1, 60), seed=st.integers(0, 2**32 - 1), log_scale=st.integers(-700, 700),
       at_entry=st.booleans())
def test_simd_pass_is_the_scalar_pass_bit_for_bit(k, seed, log_scale, at_entry):
    """The four-lane SIMD pass gives the scalar pass's sums, Sturm counts and hits bit for
    bit, at any scale: where a minor leaves the safe window it says so (``ok`` False) and
    the passes fall back to the scalar code, which rescales."""
    rng = np.random.default_rng(seed)
    d = 10.0 ** rng.uniform(-3, 3, k) * 2.0**log_scale
    e = np.append(10.0 ** rng.uniform(-3, 3, k - 1) * 2.0**log_scale, 0.0)
    xs = rng.uniform(-1.5, 1.5, 4) * np.abs(d).max() * 2.0
    if at_entry:
        xs[2] = d[0]  # P_1 = 0: a zero minor (rescaled by 1 in the scalar pass)
        xs[3] = d[-1]
    x, y, u, v = (float(t) for t in xs)
    ref = lk._inertia_sums_scalar(d, e, x, y) + lk._inertia_sums_scalar(d, e, u, v)
    assert same_bits(lk._inertia_sums4(d, e, x, y, u, v), ref)
    assert same_bits(lk._inertia_sums(d, e, x, y), ref[:8])


def same_bits(found: tuple, expected: tuple) -> bool:
    """Floats equal to the bit (NaN as NaN: overflowed minors of either pass), the rest
    equal."""
    return len(found) == len(expected) and all(
        (math.isnan(a) and math.isnan(b)) or struct.pack("d", a) == struct.pack("d", b)
        if isinstance(a, float) else a == b
        for a, b in zip(found, expected, strict=True)
    )


def test_simd_pass_runs_without_fallback_on_ordinary_problems():
    """On a well-scaled tridiagonal the SIMD pass needs no rescaling (``ok``), on one at
    2^700 it does (the scalar passes take over, as the test above checks for bits)."""

    @numba.njit(cache=False)
    def ok_flag(d, e, x, y, u, v):
        return lk._inertia_lanes(d, e, (x, y, u, v))[4]

    d, e = tridiagonal_with_spectrum(np.linspace(1.0, 10.0, 30), 0)
    e = np.append(e, 0.0)
    assert ok_flag(d, e, 0.5, 11.0, 2.0, 5.0)
    assert not ok_flag(d * 2.0**700, e * 2.0**700, 0.5, 11.0, 2.0, 5.0)


@settings(max_examples=80, deadline=None)
@given(k=st.integers(2, 40), seed=st.integers(0, 2**32 - 1), log_gap=st.floats(-13.0, -1.0),
       cluster=st.integers(1, 4), log_cond=st.floats(0.5, 8.0))
def test_lower_chain_probes_start_below_the_spectrum(k, seed, log_gap, cluster, log_cond):
    """The smallest diagonal entry bounds the smallest eigenvalue from above (a Rayleigh
    quotient), so the probes of [start, smallest diagonal entry] bracket it; the chain
    goes on from a probe only if the Sturm count finds it below the spectrum, and the
    extremes are LAPACK's whatever the bottom cluster."""
    rng = np.random.default_rng(seed)
    eigs = np.sort(10.0 ** rng.uniform(0.0, log_cond, k))
    m = min(cluster, k)
    eigs[:m] = eigs[0] * (1.0 + np.arange(m) * 10.0**log_gap)
    d, e = tridiagonal_with_spectrum(eigs, seed)
    alphas, rhos = cg_coefficients(d, e)
    diag, off = lanczos_tridiagonal(alphas, rhos)
    ref = eigvalsh_tridiagonal(diag, off)
    scale = np.abs(ref).max()
    assert ref[0] <= diag.min() * (1.0 + 1e-14)
    lo, hi = lk.cg_extreme_ritz_values(alphas, rhos)
    assert ref[0] - 1e-13 * scale <= lo <= ref[0] + 1e-13 * scale
    assert ref[-1] - 1e-13 * scale <= hi <= ref[-1] + 1e-13 * scale
