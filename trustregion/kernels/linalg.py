"""Fused vector updates for the CG loop.

A CG iteration on a cheap operator is dominated by interpreter overhead: scipy spends
six to eight NumPy calls per iteration on temporaries (``alpha * p``, ``x += ...``,
``norm(r)``). These kernels do the same element-wise arithmetic in one pass and one
call each. The inner products that decide ``alpha`` and ``beta`` stay with NumPy's BLAS
``dot``, exactly as scipy computes them, so in float64 the iterates are scipy's bit for bit
(CG amplifies rounding differences, so matching the reductions is what keeps the two
sequences together). ``dot`` here, with four partial sums, serves the bookkeeping.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def dot(a: np.ndarray, b: np.ndarray) -> float:
    """``a @ b`` accumulated in float64."""
    n = a.shape[0]
    m = n - n % 4
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    for i in range(0, m, 4):
        s0 += a[i] * b[i]
        s1 += a[i + 1] * b[i + 1]
        s2 += a[i + 2] * b[i + 2]
        s3 += a[i + 3] * b[i + 3]
    for i in range(m, n):
        s0 += a[i] * b[i]
    return (s0 + s1) + (s2 + s3)


@numba.njit(cache=True, nogil=True)
def update_iterate(
    x: np.ndarray, r: np.ndarray, p: np.ndarray, q: np.ndarray, alpha: float
) -> None:
    """``x += alpha p`` and ``r -= alpha q`` in place, in one pass."""
    for i in range(x.shape[0]):
        x[i] += alpha * p[i]
        r[i] -= alpha * q[i]


@numba.njit(cache=True, nogil=True)
def add_scaled(out: np.ndarray, q: np.ndarray, p: np.ndarray, damping: float) -> None:
    """``out = q + damping * p`` without a temporary (NumPy's rounding: product, then sum)."""
    for i in range(out.shape[0]):
        out[i] = q[i] + damping * p[i]


@numba.njit(cache=True, nogil=True)
def update_direction(p: np.ndarray, z: np.ndarray, beta: float) -> None:
    """``p = beta p + z`` in place (scipy's ``p *= beta; p += z``, rounded the same way)."""
    for i in range(p.shape[0]):
        p[i] = p[i] * beta + z[i]


@numba.njit(cache=True, nogil=True)
def cg_ritz_values(alphas: np.ndarray, rhos: np.ndarray) -> np.ndarray:
    """Eigenvalues (ascending) of the Lanczos matrix built from CG's coefficients.

    With ``k = len(alphas)`` and ``beta_j = rhos[j+1] / rhos[j]``, the symmetric tridiagonal
    ``T`` has ``T_jj = 1/alpha_j + beta_{j-1}/alpha_{j-1}`` and
    ``T_{j,j+1} = sqrt(beta_j)/alpha_j`` (Saad, section 6.7.3). Its eigenvalues are found
    by the implicit QL method with Wilkinson shifts (EISPACK ``tql1``), O(k^2): for the
    small ``k`` of a CG run this is microseconds, where a LAPACK call through scipy costs
    about a hundred.
    """
    d, e = _lanczos_entries(alphas, rhos)
    k = d.shape[0]
    eps = 2.220446049250313e-16  # float64 machine epsilon
    for l in range(k):
        for _ in range(60):
            m = l
            while m < k - 1:
                dd = abs(d[m]) + abs(d[m + 1])
                if abs(e[m]) <= eps * dd:
                    break
                m += 1
            if m == l:
                break
            g = (d[l + 1] - d[l]) / (2.0 * e[l])
            r = math.sqrt(g * g + 1.0)
            g = d[m] - d[l] + e[l] / (g + (r if g >= 0.0 else -r))
            s = 1.0
            c = 1.0
            p = 0.0
            i = m - 1
            deflated = False
            while i >= l:
                f = s * e[i]
                b = c * e[i]
                r = math.sqrt(f * f + g * g)
                e[i + 1] = r
                if r == 0.0:
                    d[i + 1] -= p
                    e[m] = 0.0
                    deflated = True
                    break
                s = f / r
                c = g / r
                g = d[i + 1] - p
                r = (d[i] - g) * s + 2.0 * c * b
                p = s * r
                d[i + 1] = g + p
                g = c * r - b
                i -= 1
            if deflated:
                continue
            d[l] -= p
            e[l] = g
            e[m] = 0.0
    d.sort()
    return d


@numba.njit(cache=True, nogil=True)
def _lanczos_entries(alphas: np.ndarray, rhos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Diagonal ``d`` and off-diagonal ``e`` (``e[j]`` couples j and j+1) of CG's Lanczos T."""
    k = alphas.shape[0]
    d = np.empty(k)
    e = np.zeros(k)
    for j in range(k):
        d[j] = 1.0 / alphas[j]
        if j > 0:
            beta = rhos[j] / rhos[j - 1]
            d[j] += beta / alphas[j - 1]
            e[j - 1] = math.sqrt(beta) / alphas[j - 1]
    return d, e


@numba.njit(cache=True, nogil=True)
def _laguerre_extreme(d: np.ndarray, e: np.ndarray, x: float, norm: float) -> float:
    """The eigenvalue of the tridiagonal (d, e) nearest to ``x`` outside its spectrum.

    Laguerre's method on the characteristic polynomial p(x) = prod of the LDL^T pivots of
    T - x I, with G = p'/p and H = G^2 - p''/p from the pivots' recurrences (no overflow: only
    ratios are formed). For a polynomial with real roots, started outside them, Laguerre's
    iteration converges monotonically (cubically near the root) to the nearest root; it stops
    when a step is at the rounding level of ``norm`` (an estimate of ``||T||``) or turns back
    (rounding noise, since the exact iteration is monotone).
    """
    k = d.shape[0]
    eps = 2.220446049250313e-16
    direction = 0.0
    for _ in range(60):
        g = 0.0  # p'/p
        h = 0.0  # -(p'/p)'
        piv = d[0] - x
        dp = -1.0  # derivative of the pivot
        ddp = 0.0  # second derivative
        hit = piv == 0.0
        inv = 0.0
        if not hit:
            inv = 1.0 / piv  # one division per pivot: the rest are products
            t = dp * inv
            g += t
            h += t * t - ddp * inv
        for i in range(1, k):
            if hit:
                break
            ratio = e[i - 1] * e[i - 1] * inv
            new_dp = -1.0 + ratio * dp * inv
            ddp = ratio * (ddp - 2.0 * dp * dp * inv) * inv
            dp = new_dp
            piv = d[i] - x - ratio
            if piv == 0.0:
                hit = True
                break
            inv = 1.0 / piv
            t = dp * inv
            g += t
            h += t * t - ddp * inv
        if hit:
            return x  # x is an eigenvalue (to rounding)
        disc = math.sqrt(max((k - 1) * (k * h - g * g), 0.0))
        denom = g + disc if g >= 0.0 else g - disc
        if denom == 0.0:
            return x
        step = k / denom
        if direction * step < 0.0:
            break  # turned back: x is the root to rounding
        direction = step
        x -= step
        if abs(step) <= 4.0 * eps * norm:
            break
    return x


@numba.njit(cache=True, nogil=True)
def cg_extreme_ritz_values(alphas: np.ndarray, rhos: np.ndarray) -> tuple[float, float]:
    """Smallest and largest eigenvalue of CG's Lanczos matrix, O(k) per Laguerre step.

    Started from the Gershgorin bounds (outside the spectrum), a handful of steps reach
    full precision: microseconds for the few tens of iterations of a CG run, where all Ritz
    values (:func:`cg_ritz_values`) cost O(k^2).
    """
    d, e = _lanczos_entries(alphas, rhos)
    k = d.shape[0]
    if k == 1:
        return d[0], d[0]
    lower = math.inf
    upper = -math.inf
    for i in range(k):
        radius = abs(e[i]) + (abs(e[i - 1]) if i > 0 else 0.0)
        lower = min(lower, d[i] - radius)
        upper = max(upper, d[i] + radius)
    norm = max(abs(lower), abs(upper))
    return _laguerre_extreme(d, e, lower, norm), _laguerre_extreme(d, e, upper, norm)
