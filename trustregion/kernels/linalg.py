"""Fused vector updates for the CG loop.

A CG iteration on a cheap operator is dominated by interpreter overhead: scipy spends
six to eight NumPy calls per iteration on temporaries (``alpha * p``, ``x += ...``,
``norm(r)``). These kernels do the same element-wise arithmetic in one pass and one
call each. The inner products that decide ``alpha`` and ``beta`` stay with NumPy's BLAS
``dot``, exactly as scipy computes them, so in float64 the iterates are scipy's bit for bit
(CG amplifies rounding differences, so matching the reductions is what keeps the two
sequences together). ``dot`` here, with four partial sums, serves the bookkeeping; complex
systems, which scipy solves with complex step lengths and so never bit for bit, sum the new
residual norm in the update's pass (:func:`update_iterate_sqnorm`).

The rest is the spectrum of CG's Lanczos matrix: all its eigenvalues (:func:`cg_ritz_values`)
and, cheaper, the extreme ones (:func:`cg_extreme_ritz_values`, :func:`cg_spectrum_extremes`).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _fma_typer(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """``a * b + c`` rounded once (IEEE fused multiply-add; LLVM's ``llvm.fma``, in hardware
    where the processor has it, exactly emulated otherwise: the same bits everywhere)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        t = args[0].type
        f = builder.module.declare_intrinsic("llvm.fma", [t], ir.FunctionType(t, [t, t, t]))
        return builder.call(f, args)

    return sig, codegen


_fma: Any = intrinsic(_fma_typer)


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
def update_iterate_sqnorm(
    x: np.ndarray, r: np.ndarray, p: np.ndarray, q: np.ndarray, alpha: float
) -> float:
    """:func:`update_iterate` for complex vectors, returning ``||r||^2`` of the new residual.

    For complex systems, whose iterates are not scipy's bit for bit anyway (scipy divides
    complex inner products), this saves the separate pass and call of ``vdot(r, r)``.
    """
    s = 0.0
    for i in range(x.shape[0]):
        x[i] += alpha * p[i]
        r[i] -= alpha * q[i]
        re = np.float64(r[i].real)
        im = np.float64(r[i].imag)
        s += re * re + im * im
    return s


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def update_iterate_sqnorm_z(
    x: np.ndarray, r: np.ndarray, p: np.ndarray, q: np.ndarray, alpha: float
) -> float:
    """:func:`update_iterate_sqnorm` for C-contiguous complex128 vectors only.

    Read as real and imaginary parts, which a real step length scales separately: the same
    values as the complex products at half the multiplications. The sum of squares may be
    reassociated (vectorized); the updates of ``x`` and ``r`` have nothing to reassociate and
    are :func:`update_iterate`'s to the bit.
    """
    xf = x.view(np.float64)
    rf = r.view(np.float64)
    pf = p.view(np.float64)
    qf = q.view(np.float64)
    s = 0.0
    for i in range(xf.shape[0]):
        xf[i] += alpha * pf[i]
        a = rf[i] - alpha * qf[i]
        rf[i] = a
        s += a * a
    return s


@numba.njit(cache=True, nogil=True)
def update_direction_z(p: np.ndarray, z: np.ndarray, beta: float) -> None:
    """:func:`update_direction` for C-contiguous complex128 vectors only (as real and
    imaginary parts: the same values at half the multiplications)."""
    pf = p.view(np.float64)
    zf = z.view(np.float64)
    for i in range(pf.shape[0]):
        pf[i] = pf[i] * beta + zf[i]


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
    """Diagonal ``d`` and off-diagonal ``e`` (``e[j]`` couples j and j+1) of CG's Lanczos T.

    The arithmetic of :func:`trustregion.core.cg.lanczos_tridiagonal` (the same bits): one
    reciprocal of each step length, used twice, where dividing by it twice would cost a
    division more per entry (divisions and square roots are most of this loop's time).
    """
    k = alphas.shape[0]
    both = np.empty(2 * k)  # one allocation for the two
    d = both[:k]
    e = both[k:]
    if k:
        e[k - 1] = 0.0
        inv_prev = 1.0 / alphas[0]
        d[0] = inv_prev
        for j in range(1, k):
            inv = 1.0 / alphas[j]
            beta = rhos[j] / rhos[j - 1]
            d[j] = inv + beta * inv_prev
            e[j - 1] = math.sqrt(beta) * inv_prev
            inv_prev = inv
    return d, e


_BIG = 2.0**600  # rescale the characteristic-polynomial recurrences beyond these
_SMALL = 2.0**-600


@numba.njit(cache=True, nogil=True)
def _inertia_sums_scalar(
    d: np.ndarray, e: np.ndarray, x: float, y: float
) -> tuple[float, float, int, bool, float, float, int, bool]:
    """Laguerre's sums and the Sturm count of the tridiagonal (d, e) at two points at once.

    For each point ``x``: ``G = p'/p`` and ``H = G^2 - p''/p`` of the characteristic
    polynomial p(x) = det(T - x I); the number of eigenvalues below ``x`` (sign changes of
    the leading principal minors, the negative pivots of T - x I = L D L^T); and whether
    p(x) = 0 (``x`` an eigenvalue to rounding: G and H are not formed). The minors
    ``P_{i+1} = (d_i - x) P_i - e_{i-1}^2 P_{i-1}`` and their first two derivatives are
    three-term recurrences without a division (the pivots' recurrence has one per entry, a
    long chain of latencies); they are rescaled by powers of two (exact) far from unit
    scale. The two points' recurrences are independent: run side by side, the processor
    overlaps them.
    """
    k = d.shape[0]
    # P_1 and P_0 = 1, with first and second derivatives (P_1' = -1)
    px, qx, p1x, q1x, p2x, q2x = d[0] - x, 1.0, -1.0, 0.0, 0.0, 0.0
    py, qy, p1y, q1y, p2y, q2y = d[0] - y, 1.0, -1.0, 0.0, 0.0, 0.0
    # signs of the minors: sign changes count the negative pivots (a zero minor, x an
    # eigenvalue of a leading block, puts x inside the spectrum by interlacing: then only
    # "not outside" matters, not the exact count)
    sx = px < 0.0
    sy = py < 0.0
    negx = 1 if sx else 0
    negy = 1 if sy else 0
    for i in range(1, k):
        e2 = e[i - 1] * e[i - 1]
        ax = d[i] - x
        ay = d[i] - y
        px, qx, p1x, q1x, p2x, q2x = (
            _fma(ax, px, -e2 * qx), px, _fma(ax, p1x, -_fma(e2, q1x, px)), p1x,
            _fma(ax, p2x, -_fma(e2, q2x, 2.0 * p1x)), p2x,
        )
        py, qy, p1y, q1y, p2y, q2y = (
            _fma(ay, py, -e2 * qy), py, _fma(ay, p1y, -_fma(e2, q1y, py)), p1y,
            _fma(ay, p2y, -_fma(e2, q2y, 2.0 * p1y)), p2y,
        )
        nx = px < 0.0
        ny = py < 0.0
        negx += nx != sx
        negy += ny != sy
        sx = nx
        sy = ny
        if not (_SMALL < abs(px) < _BIG):  # also 0: harmless (f = 1)
            f = math.ldexp(1.0, -math.frexp(px)[1])
            px, qx, p1x, q1x, p2x, q2x = px * f, qx * f, p1x * f, q1x * f, p2x * f, q2x * f
        if not (_SMALL < abs(py) < _BIG):
            f = math.ldexp(1.0, -math.frexp(py)[1])
            py, qy, p1y, q1y, p2y, q2y = py * f, qy * f, p1y * f, q1y * f, p2y * f, q2y * f
    hitx = px == 0.0
    hity = py == 0.0
    gx = hx = gy = hy = 0.0
    if not hitx:
        gx = p1x / px
        hx = gx * gx - p2x / px
    if not hity:
        gy = p1y / py
        hy = gy * gy - p2y / py
    return gx, hx, negx, hitx, gy, hy, negy, hity


def _inertia_lanes_typer(typingctx: Any, d: Any, e: Any, xs: Any) -> Any:
    """:func:`_inertia_sums_scalar`'s recurrences at the points ``xs`` (a tuple), as one SIMD
    vector: ``(g, h, neg, hit, ok)``, the first four tuples over the points.

    The same IEEE operations lane by lane (fused multiply-adds, then the two divisions),
    hence the same bits, as long as no rescaling is needed: ``ok`` is False when a minor
    left ``(_SMALL, _BIG)`` (or is not finite), and then the loop stops and the caller
    falls back to the scalar passes, which rescale. Numba has no vector type: the loop is
    written in LLVM's IR, where a vector of doubles is one (an SSE, AVX or AVX-512 register
    as the processor has; on a processor without them, LLVM splits it into scalars).
    """
    if not (isinstance(xs, types.UniTuple) and xs.dtype == types.float64):
        return None
    lanes = xs.count
    floats = types.UniTuple(types.float64, lanes)
    sig = types.Tuple((floats, floats, types.UniTuple(types.int64, lanes),
                       types.UniTuple(types.boolean, lanes), types.boolean))(d, e, xs)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        d_type, e_type, _ = signature.args
        d_value, e_value, x_value = args
        f64, i64, i32 = ir.DoubleType(), ir.IntType(64), ir.IntType(32)
        vec, ivec = ir.VectorType(f64, lanes), ir.VectorType(i64, lanes)
        bvec = ir.VectorType(ir.IntType(1), lanes)
        module = builder.module
        fma = cgutils.get_or_insert_function(
            module, ir.FunctionType(vec, [vec, vec, vec]), f"llvm.fma.v{lanes}f64")
        fabs = cgutils.get_or_insert_function(
            module, ir.FunctionType(vec, [vec]), f"llvm.fabs.v{lanes}f64")
        d_array = context.make_array(d_type)(context, builder, d_value)
        e_array = context.make_array(e_type)(context, builder, e_value)
        n = builder.extract_value(d_array.shape, 0)

        def load(array: Any, array_type: Any, index: Any) -> Any:
            pointer = cgutils.get_item_pointer2(
                context, builder, array.data, cgutils.unpack_tuple(builder, array.shape),
                cgutils.unpack_tuple(builder, array.strides), array_type.layout, [index])
            return builder.load(pointer)

        def splat(value: Any) -> Any:
            one = builder.insert_element(ir.Constant(vec, ir.Undefined), value, i32(0))
            return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined),
                                          ir.Constant(ir.VectorType(i32, lanes), [0] * lanes))

        def constant(value: float) -> Any:
            return ir.Constant(vec, [value] * lanes)

        x = ir.Constant(vec, ir.Undefined)
        for j in range(lanes):
            x = builder.insert_element(x, builder.extract_value(x_value, j), i32(j))
        zero = constant(0.0)
        # P_1 = d_0 - x and P_0 = 1, with first and second derivatives (P_1' = -1)
        p_first = builder.fsub(splat(load(d_array, d_type, i64(0))), x)
        sign_first = builder.fcmp_ordered("<", p_first, zero)
        neg_first = builder.zext(sign_first, ivec)
        entry = builder.block
        loop = builder.append_basic_block("inertia.loop")
        more = builder.append_basic_block("inertia.more")
        end = builder.append_basic_block("inertia.end")
        builder.cbranch(builder.icmp_signed(">", n, i64(1)), loop, end)

        builder.position_at_end(loop)
        i = builder.phi(i64)
        p, q, p1, q1, p2, q2 = (builder.phi(vec) for _ in range(6))
        sign = builder.phi(bvec)
        neg = builder.phi(ivec)
        for phi, value in ((i, i64(1)), (p, p_first), (q, constant(1.0)), (p1, constant(-1.0)),
                           (q1, zero), (p2, zero), (q2, zero), (sign, sign_first),
                           (neg, neg_first)):
            phi.add_incoming(value, entry)
        e_prev = load(e_array, e_type, builder.sub(i, i64(1)))
        e2 = splat(builder.fmul(e_prev, e_prev))
        a = builder.fsub(splat(load(d_array, d_type, i)), x)
        # (the scalar pass's expressions, operation for operation)
        p_new = builder.call(fma, [a, p, builder.fneg(builder.fmul(e2, q))])
        p1_new = builder.call(fma, [a, p1, builder.fneg(builder.call(fma, [e2, q1, p]))])
        twice = builder.fmul(constant(2.0), p1)
        p2_new = builder.call(fma, [a, p2, builder.fneg(builder.call(fma, [e2, q2, twice]))])
        sign_new = builder.fcmp_ordered("<", p_new, zero)
        neg_new = builder.add(neg, builder.zext(builder.xor(sign_new, sign), ivec))
        size = builder.call(fabs, [p_new])
        in_range = builder.and_(builder.fcmp_ordered(">", size, constant(_SMALL)),
                                builder.fcmp_ordered("<", size, constant(_BIG)))
        all_in_range = builder.icmp_unsigned(
            "==", builder.bitcast(in_range, ir.IntType(lanes)),
            ir.Constant(ir.IntType(lanes), (1 << lanes) - 1))
        i_next = builder.add(i, i64(1))
        builder.cbranch(all_in_range, more, end)

        builder.position_at_end(more)
        for phi, value in ((i, i_next), (p, p_new), (q, p), (p1, p1_new), (q1, p1),
                           (p2, p2_new), (q2, p2), (sign, sign_new), (neg, neg_new)):
            phi.add_incoming(value, more)
        builder.cbranch(builder.icmp_signed("<", i_next, n), loop, end)

        builder.position_at_end(end)
        p_end, p1_end, p2_end = (builder.phi(vec) for _ in range(3))
        neg_end = builder.phi(ivec)
        ok = builder.phi(ir.IntType(1))
        for block, values in (
            (entry, (p_first, constant(-1.0), zero, neg_first, ir.IntType(1)(1))),
            (loop, (p_new, p1_new, p2_new, neg_new, ir.IntType(1)(0))),
            (more, (p_new, p1_new, p2_new, neg_new, ir.IntType(1)(1))),
        ):
            for phi, value in zip((p_end, p1_end, p2_end, neg_end, ok), values, strict=True):
                phi.add_incoming(value, block)
        hit = builder.fcmp_ordered("==", p_end, zero)
        g = builder.fdiv(p1_end, p_end)
        h = builder.fsub(builder.fmul(g, g), builder.fdiv(p2_end, p_end))
        outs = []
        for value, item in ((builder.select(hit, zero, g), types.float64),
                            (builder.select(hit, zero, h), types.float64),
                            (neg_end, types.int64), (hit, types.boolean)):
            items = [builder.extract_element(value, i32(j)) for j in range(lanes)]
            outs.append(context.make_tuple(builder, types.UniTuple(item, lanes), items))
        outs.append(ok)
        return context.make_tuple(builder, signature.return_type, outs)

    return sig, codegen


_inertia_lanes: Any = intrinsic(_inertia_lanes_typer)


@numba.njit(cache=True, nogil=True, inline="always")
def _inertia_sums4(
    d: np.ndarray, e: np.ndarray, x: float, y: float, u: float, v: float
) -> tuple[float, float, int, bool, float, float, int, bool,
           float, float, int, bool, float, float, int, bool]:
    """:func:`_inertia_sums_scalar` at four points, in one pass of four SIMD lanes
    (:func:`_inertia_lanes`): about the time of one point alone (the recurrences are a chain
    of latencies, which the lanes share), where the scalar pass at two points costs twice
    that. The same bits; the scalar passes when a rescaling is needed. Inlined, as the next
    function, into the chains' loop: no call, and no tuple of sixteen values returned through
    memory (0.03-0.1 us of a spectrum=True solve, measured in place; inlining the scalar
    one-point pass too measured 0.05-0.1 us slower)."""
    g, h, neg, hit, ok = _inertia_lanes(d, e, (x, y, u, v))
    if ok:
        return (g[0], h[0], neg[0], hit[0], g[1], h[1], neg[1], hit[1],
                g[2], h[2], neg[2], hit[2], g[3], h[3], neg[3], hit[3])
    g0, h0, n0, t0, g1, h1, n1, t1 = _inertia_sums_scalar(d, e, x, y)
    g2, h2, n2, t2, g3, h3, n3, t3 = _inertia_sums_scalar(d, e, u, v)
    return g0, h0, n0, t0, g1, h1, n1, t1, g2, h2, n2, t2, g3, h3, n3, t3


@numba.njit(cache=True, nogil=True, inline="always")
def _inertia_sums(
    d: np.ndarray, e: np.ndarray, x: float, y: float
) -> tuple[float, float, int, bool, float, float, int, bool]:
    """:func:`_inertia_sums_scalar` at two points, by :func:`_inertia_sums4`'s SIMD pass."""
    g, h, neg, hit, ok = _inertia_lanes(d, e, (x, y, x, y))
    if ok:
        return g[0], h[0], neg[0], hit[0], g[1], h[1], neg[1], hit[1]
    return _inertia_sums_scalar(d, e, x, y)


@numba.njit(cache=True, nogil=True)
def _inertia_sum(d: np.ndarray, e: np.ndarray, x: float) -> tuple[float, float, int, bool]:
    """:func:`_inertia_sums_scalar` at one point (the same operations: the same bits), for
    the passes after one chain is done (as fast as the SIMD pass: a chain of latencies)."""
    k = d.shape[0]
    px, qx, p1x, q1x, p2x, q2x = d[0] - x, 1.0, -1.0, 0.0, 0.0, 0.0
    sx = px < 0.0
    negx = 1 if sx else 0
    for i in range(1, k):
        e2 = e[i - 1] * e[i - 1]
        ax = d[i] - x
        px, qx, p1x, q1x, p2x, q2x = (
            _fma(ax, px, -e2 * qx), px, _fma(ax, p1x, -_fma(e2, q1x, px)), p1x,
            _fma(ax, p2x, -_fma(e2, q2x, 2.0 * p1x)), p2x,
        )
        nx = px < 0.0
        negx += nx != sx
        sx = nx
        if not (_SMALL < abs(px) < _BIG):
            f = math.ldexp(1.0, -math.frexp(px)[1])
            px, qx, p1x, q1x, p2x, q2x = px * f, qx * f, p1x * f, q1x * f, p2x * f, q2x * f
    hitx = px == 0.0
    gx = hx = 0.0
    if not hitx:
        gx = p1x / px
        hx = gx * gx - p2x / px
    return gx, hx, negx, hitx


@numba.njit(cache=True, nogil=True, inline="always")
def _laguerre_step(k: int, g: float, h: float, m: float) -> float:
    """Laguerre's step for a root of multiplicity ``m`` (0 when undefined)."""
    disc = math.sqrt(max((k / m - 1.0) * (k * h - g * g), 0.0))
    denom = g + disc if g >= 0.0 else g - disc
    return 0.0 if denom == 0.0 else k / denom


@numba.njit(cache=True, nogil=True, inline="always")
def _multiplicity(q: float, k: int) -> float:
    """The root multiplicity m for which Laguerre's step shrinks the distance by ``q``.

    Near a cluster of m equal roots (far from the others) Laguerre's iteration converges
    linearly, the distance shrinking by ``q = 1 - k / (m + sqrt((k-1) m (k-m)))`` per step;
    this inverts that relation (the smaller root of ``m^2 - (2/t + k - 1) m + k/t^2``,
    ``t = 1 - q``).
    """
    t = 1.0 - q
    b = 2.0 / t + k - 1.0
    return 0.5 * (b - math.sqrt(max(b * b - 4.0 * k / (t * t), 0.0)))


@numba.njit(cache=True, nogil=True)
def _laguerre_extremes(
    d: np.ndarray, e: np.ndarray, lower: float, upper: float, norm: float, least: float
) -> tuple[float, float]:
    """The smallest and the largest eigenvalue of the tridiagonal (d, e), from outside.

    Laguerre's method on the characteristic polynomial, started at ``lower`` and ``upper``
    (outside the spectrum); ``least``, the smallest diagonal entry, bounds the smallest
    eigenvalue from above (a Rayleigh quotient). For a polynomial with real roots, started
    outside them,
    Laguerre's iteration converges monotonically (cubically near a simple root) to the nearest
    root; each chain stops when a step is at the rounding level of ``norm`` (an estimate of
    ``||T||``) or turns back (rounding noise, since the exact iteration is monotone).

    CG run past the dimension of the operator repeats Ritz values ("ghosts", Lanczos's loss
    of orthogonality), so an extreme eigenvalue of T can be a tight cluster, towards which
    Laguerre's iteration is only linear (17 steps where 5 do otherwise). When two steps
    shrink at a steady rate, the multiplicity it implies (:func:`_multiplicity`) gives the
    modified step, cubic for a multiple root; for a pair (multiplicity below 2.5) the step
    that is exact for two roots (:func:`_pair_step`), which separates a near-double root
    where the modified step only reaches its middle. Either can pass the extreme root of a
    cluster that is not exactly multiple; the Sturm count at the next point tells (a
    negative pivot below the spectrum, a positive one above). Past the extreme root only
    (between it and the next), the chain approaches it from there with plain Laguerre steps
    towards it (:func:`_laguerre_step_towards`, monotone), and stops as soon as the bound
    ``|step| <= a < 1/|p'/p|`` on the distance ``a`` to it is within the rounding level;
    past more roots, or when x sits close to the next one, it goes on with plain steps from
    the last point outside.

    The first pass runs four SIMD lanes (:func:`_inertia_sums4`) for the price of one
    point; the two spare lanes probe the lower chain's bracket ``[start, least]`` at 75%
    and 90% of its width, and the chain starts from the highest probe the Sturm count
    finds below the spectrum. Gershgorin's lower bound (or 0) is typically far below the
    smallest Ritz value, and the plain steps from it are slow when that value sits in a
    cluster (the float64 benchmark problem: 7 passes from the bound, 4 from the probe).
    """
    k = d.shape[0]
    tiny = 4.0 * 2.220446049250313e-16 * norm  # a step at the rounding level of ||T||
    # per chain: the point; the last point known outside, with its sums; the last step; the
    # last plain step and the ratio of the last two (0: none); the multiplicity used; done
    # CG's Lanczos matrix is positive definite (its LDL^T pivots at 0 are CG's 1/alpha_j > 0),
    # so 0 is below its spectrum and, unlike the Gershgorin bound, close to it. Rounding in
    # forming T can break that: the Sturm count at 0 tells, and then the chain starts over
    # from the Gershgorin bound.
    # The upper chain starts at the Collatz-Wielandt bound of one power step when it is
    # below Gershgorin's (see _collatz_wielandt_bound), checked the same way.
    start = max(lower, 0.0)
    start_up = min(upper, _collatz_wielandt_bound(d, e))
    x0, s0, gs0, hs0, dir0, pl0, q0, m0, done0 = start, start, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, False
    x1, s1, gs1, hs1, dir1, pl1, q1, m1, done1 = (
        start_up, start_up, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, False
    )
    g0 = h0 = g1 = h1 = 0.0
    neg0 = neg1 = 0
    hit0 = hit1 = False
    # the probes of the lower chain's first pass (the start itself when the bracket is empty)
    width = least - start if least > start else 0.0
    probe_a, probe_b = start + 0.75 * width, start + 0.9 * width
    for i in range(60):
        if i == 0:
            (g0, h0, neg0, hit0, g1, h1, neg1, hit1, ga, ha, nega, hita, gb, hb, negb,
             hitb) = _inertia_sums4(d, e, x0, x1, probe_a, probe_b)
            if neg0 == 0:  # (the start is below the spectrum: a probe may be too)
                if negb == 0 and not hitb and probe_b > x0:
                    x0, s0, g0, h0, hit0 = probe_b, probe_b, gb, hb, False
                elif nega == 0 and not hita and probe_a > x0:
                    x0, s0, g0, h0, hit0 = probe_a, probe_a, ga, ha, False
        elif not (done0 or done1):
            g0, h0, neg0, hit0, g1, h1, neg1, hit1 = _inertia_sums(d, e, x0, x1)
        elif done0:
            g1, h1, neg1, hit1 = _inertia_sum(d, e, x1)
        else:
            g0, h0, neg0, hit0 = _inertia_sum(d, e, x0)
        if i == 0 and neg0 != 0:
            x0 = s0 = lower
        elif not done0:
            x0, s0, gs0, hs0, dir0, pl0, q0, m0, done0 = _laguerre_advance(
                k, x0, g0, h0, hit0, neg0, s0, gs0, hs0, dir0, pl0, q0, m0, tiny
            )
        if i == 0 and neg1 != k:
            x1 = s1 = upper
        elif not done1:
            x1, s1, gs1, hs1, dir1, pl1, q1, m1, done1 = _laguerre_advance(
                k, x1, g1, h1, hit1, k - neg1, s1, gs1, hs1, dir1, pl1, q1, m1, tiny
            )
        if done0 and done1:
            break
    return x0, x1


@numba.njit(cache=True, nogil=True, inline="always")
def _laguerre_advance(
    k: int, x: float, g: float, h: float, hit: bool, beyond: int, safe: float,
    g_safe: float, h_safe: float, direction: float, plain: float, q_prev: float, m: float,
    tiny: float,
) -> tuple[float, float, float, float, float, float, float, float, bool]:
    """One step of a chain of :func:`_laguerre_extremes`, from the sums at ``x``.

    ``beyond`` is the Sturm count past ``x`` on the chain's side (the eigenvalues below ``x``
    for the lower chain, above it for the upper one): 0 outside the spectrum, 1 between the
    extreme eigenvalue and the next. ``m`` is the multiplicity the step assumes (1: plain
    steps; 0: plain steps towards the extreme eigenvalue from the inside, see
    :func:`_laguerre_extremes`).
    """
    if m == 0.0:
        if hit or beyond != 1:
            # on the root, or just past it: rounding (the exact iterates do not pass it)
            return x, safe, g_safe, h_safe, direction, plain, q_prev, m, True
        step = _laguerre_step_towards(k, g, h, direction > 0.0)
    else:
        step = 0.0
        if m != 1.0 and beyond == 1:
            # the accelerated step passed the extreme root but not the next one: x lies
            # between them, and the Laguerre iterate towards the extreme root converges to it
            # from this side, monotonically (see _laguerre_step_towards). Taken when that root
            # dominates p'/p here (g points back at it), or when the step back covers at
            # least a twentieth of the way to the last point outside; a smaller one means x
            # sits close to the next root, from which the steps back crawl: then plain steps
            # from that point instead
            step = _laguerre_step_towards(k, g, h, direction < 0.0)
            if g * direction < 0.0 or abs(step) >= 0.05 * abs(x - safe):
                m, plain, q_prev = 0.0, 0.0, 0.0
        if m != 0.0:
            if m != 1.0 and beyond != 0:
                # the accelerated step overshot further: back, and plain steps from there
                x, g, h = safe, g_safe, h_safe
                m, plain, q_prev = 1.0, 0.0, 0.0
            elif hit:
                return x, safe, g_safe, h_safe, direction, plain, q_prev, m, True  # a root
            else:
                safe, g_safe, h_safe = x, g, h
            # (a pair of roots, m < 2.5: the step that is exact for two, see _pair_step)
            step = _laguerre_step(k, g, h, m) if m == 1.0 or m >= 2.5 else _pair_step(g, h)
            if step == 0.0 or direction * step < 0.0:
                # undefined, or turned back: x is the root to rounding
                return x, safe, g_safe, h_safe, direction, plain, q_prev, m, True
    done = abs(step) <= tiny
    if m <= 1.0:
        if m == 0.0 and (step == 0.0 or (g * step > 0.0 and 1.0 / abs(g) - abs(step) <= tiny)):
            # exactly one root (at distance a) on the step's side, the others behind x: then
            # |g| < 1/a when g points at it, and Laguerre's step does not pass it, so
            # |step| <= a < 1/|g|: an error bound, without a further evaluation
            done = True
        if plain != 0.0:
            q = step / plain  # how two consecutive plain steps shrink
            if m == 1.0 and q > 0.15 and abs(q - q_prev) <= 0.05 * q:
                # a steady linear rate: the signature of a multiple root
                mult = _multiplicity(q, k)
                if mult > 1.25:
                    m = mult
                    step = _laguerre_step(k, g, h, m)
            elif q < 0.01 and abs(step) * q * q * q <= tiny:
                # cubic convergence (the error shrinks as the cube of the step ratio): the
                # next step would be below the rounding level, no need to take it
                done = True
            q_prev = q
        plain = step if m <= 1.0 else 0.0
    x -= step
    return x, safe, g_safe, h_safe, step, plain, q_prev, m, done


@numba.njit(cache=True, nogil=True, inline="always")
def _pair_step(g: float, h: float) -> float:
    """Laguerre's step for a polynomial of degree 2 (0 when undefined): exact for a pair of
    roots far from the others, ``1/a + 1/b = g`` and ``1/a^2 + 1/b^2 = h``, towards the
    nearer.

    From outside the spectrum it is never shorter than Newton's step ``1/g`` (``g^2 >= h``
    when every ``1/(x - lambda_i)`` has the same sign), so it makes progress; it may pass the
    extreme root when the others are not far, which the next Sturm count tells.
    """
    disc = math.sqrt(max(2.0 * h - g * g, 0.0))
    denom = g + disc if g >= 0.0 else g - disc
    return 0.0 if denom == 0.0 else 2.0 / denom


@numba.njit(cache=True, nogil=True, inline="always")
def _laguerre_step_towards(k: int, g: float, h: float, positive: bool) -> float:
    """Laguerre's step (a simple root, degree ``k``) of the sign asked for (0 when undefined):
    ``x - x_new`` for the iterate below ``x`` when ``positive``, above it otherwise.

    For a polynomial with real roots the two iterates bound an interval around ``x`` free of
    roots (Laguerre; Parlett 1964), so from between two roots each converges monotonically
    to its side's root.
    """
    disc = math.sqrt(max((k - 1.0) * (k * h - g * g), 0.0))
    denom = g + disc if positive else g - disc
    return 0.0 if denom == 0.0 else k / denom


@numba.njit(cache=True, nogil=True)
def _collatz_wielandt_bound(d: np.ndarray, e: np.ndarray) -> float:
    r"""An upper bound on the largest eigenvalue of the tridiagonal (d, e) (inf if none).

    For a nonnegative irreducible matrix T and any positive vector s,
    :math:`\lambda_{max} \le \max_i (T s)_i / s_i` (Collatz-Wielandt). CG's Lanczos matrix is
    nonnegative (its diagonal holds Rayleigh quotients, its off-diagonal
    :math:`\sqrt{\beta_j}/\alpha_j`); with ``s = T 1`` (one power step from the vector of
    ones, whose bound is Gershgorin's) the bound is typically a quarter to two thirds closer
    to the largest Ritz value, which saves Laguerre's iteration a step. Widened by a few
    rounding errors; the caller checks it by the Sturm count anyway.
    """
    k = d.shape[0]
    s_prev = 0.0
    s_cur = d[0] + e[0]
    bound = 0.0
    for i in range(k):
        if d[i] < 0.0 or e[i] < 0.0:
            return math.inf  # not a nonnegative matrix
        s_next = d[i + 1] + e[i] + e[i + 1] if i + 1 < k else 0.0
        # (T s)_i / s_i with s_i = (T 1)_i (positive: d_i > 0 or a positive neighbour)
        if s_cur <= 0.0:
            return math.inf
        ts = (e[i - 1] * s_prev if i > 0 else 0.0) + d[i] * s_cur + e[i] * s_next
        bound = max(bound, ts / s_cur)
        s_prev = s_cur
        s_cur = s_next
    return bound * (1.0 + 16.0 * 2.220446049250313e-16)


@numba.njit(cache=True, nogil=True)
def _gershgorin_extremes(d: np.ndarray, e: np.ndarray) -> tuple[float, float]:
    """Smallest and largest eigenvalue of the tridiagonal (d, e), k >= 2."""
    k = d.shape[0]
    lower = math.inf
    upper = -math.inf
    least = math.inf
    for i in range(k):
        radius = abs(e[i]) + (abs(e[i - 1]) if i > 0 else 0.0)
        lower = min(lower, d[i] - radius)
        upper = max(upper, d[i] + radius)
        least = min(least, d[i])
    norm = max(abs(lower), abs(upper))
    return _laguerre_extremes(d, e, lower, upper, norm, least)


@numba.njit(cache=True, nogil=True)
def cg_extreme_ritz_values(alphas: np.ndarray, rhos: np.ndarray) -> tuple[float, float]:
    """Smallest and largest eigenvalue of CG's Lanczos matrix, O(k) per Laguerre step.

    Started from the Gershgorin bounds (outside the spectrum), a handful of steps reach
    full precision: microseconds for the few tens of iterations of a CG run, where all Ritz
    values (:func:`cg_ritz_values`) cost O(k^2).
    """
    d, e = _lanczos_entries(alphas, rhos)
    if d.shape[0] == 1:
        return d[0], d[0]
    return _gershgorin_extremes(d, e)


@numba.njit(cache=True, nogil=True)
def cg_spectrum_extremes(
    alphas: np.ndarray, rhos: np.ndarray, floor: float
) -> tuple[int, float, float]:
    """:func:`cg_extreme_ritz_values` on the iterations above the rounding floor, in one call.

    Iterations from the first with ``rhos[j] <= floor * rhos[0]`` on are left out (at least
    one is kept); returns how many are kept and the extreme Ritz values of those.
    """
    k = alphas.shape[0]
    floor = floor * rhos[0] if k else 0.0
    for j in range(k):
        if rhos[j] <= floor:
            k = max(j, 1)
            break
    if k == 0:
        return 0, math.nan, math.nan
    d, e = _lanczos_entries(alphas[:k], rhos[:k])
    if k == 1:
        return 1, d[0], d[0]
    lo, hi = _gershgorin_extremes(d, e)
    return k, lo, hi
