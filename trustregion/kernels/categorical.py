r"""Numba kernels for batched categorical distributions parameterized by logits.

Every kernel takes ``logits`` of shape ``(N, K)`` (row ``i`` is one distribution over
``K`` categories, :math:`p_i = \operatorname{softmax}(z_i)`) and loops over the rows
explicitly, subtracting the row maximum before exponentiating (log-sum-exp).

Contract (the kernels do **not** check it; :mod:`trustregion.distributions` does):

- ``logits`` is a 2-D float32 or float64 array; every entry is finite or ``-inf``
  (``-inf`` marks a masked category of probability 0) and every row has at least one
  finite entry. Otherwise the row's results are garbage, not reliably NaN: a NaN entry
  next to finite ones counts as masked (so ``categorical_kl`` with a NaN in
  ``logits_q`` can return 0), and a row with ``+inf`` or no finite entry gives NaN or
  raises ``ZeroDivisionError``.
- ``actions`` is a 1-D int64 array of length ``N`` with ``0 <= actions[i] < K``.
  This part of the contract *is* checked, even here, because Numba does not
  bounds-check and an index out of range would read or write outside the arrays
  (a crash, not just garbage): a wrong length or an index out of range raises
  ``IndexError`` (one comparison per row; :mod:`trustregion.distributions` turns it
  into a ``ValueError`` naming ``actions``).
- The other arrays read row by row with the logits (``logits_q``, ``v``, ``uniforms``)
  have the matching shape; this too is checked, once per call, for the same reason (a
  ``ValueError`` naming the argument).
- Outputs have the dtype of the first floating argument. Arithmetic runs in float64
  internally, so float32 inputs are rounded once, at the output.

Any memory layout is accepted (Numba compiles one specialization per layout); all
kernels are deterministic and single-threaded. They are ``numba.njit(cache=True)``,
so they can be called from user code compiled with ``numba.njit``:

>>> import numba
>>> import numpy as np
>>> from trustregion.kernels import categorical_kl
>>> @numba.njit
... def mean_kl(a, b):
...     return categorical_kl(a, b).mean()
>>> float(mean_kl(np.zeros((2, 3)), np.zeros((2, 3))))
0.0

Implementation: rows are processed in blocks. For each block the logits are shifted
by their row maximum into a scratch buffer and exponentiated with ``_exp_nonpositive``,
a branch-free exp that LLVM vectorizes (the libm ``exp`` Numba calls otherwise is
scalar and ~5x slower than NumPy's SIMD exp). Its error is about 1 ulp; shifted
logits below -708 (probability ratios under ``3e-308``) flush to exactly 0, so they
count as probability 0, like masked categories.

The helpers below that start with an underscore are shared within this file only:
Numba's on-disk cache of a caller is not invalidated when a callee in *another*
file changes, so each kernel file is self-contained.
"""

import math

import numba
import numpy as np

# Messages of the index checks (Numba raises with constant messages).
_ACTION_OUT_OF_RANGE = "actions: a category index is outside [0, K)"
_ACTIONS_LENGTH = "actions: the length differs from the number of rows of logits"
# The same for the other arrays read row by row alongside the logits.
_Q_SHAPE = "logits_q must have the shape of logits_p"
_V_SHAPE = "v must have the shape of logits"
_UNIFORMS_LENGTH = "uniforms must have one entry per row of logits"

# Scratch block size in elements: 3 float64/int64 buffers of this size stay in L2.
_BLOCK_ELEMENTS = 2048

# exp(x) = 2**k * exp(r), k = round(x / ln 2), |r| <= ln(2) / 2 (Cody-Waite split of ln 2,
# the fdlibm constants: k * _LN2_HI is exact for |k| < 2**11).
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
# Below this the result would be subnormal; it flushes to 0 instead.
_EXP_FLUSH = -708.0
# Taylor coefficients 1/i! for i = 2..13: truncation error |r|**14 / 14! < 5e-18 on the range.
_C2 = 1.0 / 2.0
_C3 = 1.0 / 6.0
_C4 = 1.0 / 24.0
_C5 = 1.0 / 120.0
_C6 = 1.0 / 720.0
_C7 = 1.0 / 5040.0
_C8 = 1.0 / 40320.0
_C9 = 1.0 / 362880.0
_C10 = 1.0 / 3628800.0
_C11 = 1.0 / 39916800.0
_C12 = 1.0 / 479001600.0
_C13 = 1.0 / 6227020800.0


@numba.njit(cache=True)
def _exp_nonpositive(x, out, bits, count):
    """``out[:count] = exp(x[:count])`` for ``x <= 0`` (``-inf`` included), ~1 ulp.

    Branch-free so that the loop vectorizes; ``bits`` is int64 scratch holding the
    exponent field of ``2**k``. Results below ``exp(-708)`` are 0.
    """
    for i in range(count):
        xi = x[i]
        xc = max(xi, _EXP_FLUSH)
        k = math.floor(xc * _LOG2E + 0.5)
        r = (xc - k * _LN2_HI) - k * _LN2_LO
        p = _C13
        p = p * r + _C12
        p = p * r + _C11
        p = p * r + _C10
        p = p * r + _C9
        p = p * r + _C8
        p = p * r + _C7
        p = p * r + _C6
        p = p * r + _C5
        p = p * r + _C4
        p = p * r + _C3
        p = p * r + _C2
        p = p * r + 1.0
        p = p * r + 1.0
        bits[i] = (np.int64(k) + 1023) << 52
        out[i] = p if xi >= _EXP_FLUSH else 0.0
    scale = bits.view(np.float64)
    for i in range(count):
        out[i] *= scale[i]


@numba.njit(cache=True)
def _block_rows(k):
    return max(1, _BLOCK_ELEMENTS // max(k, 1))


@numba.njit(cache=True)
def _shift_and_exp(logits, start, stop, shifted, e, bits):
    """For rows ``start:stop``: ``shifted = z - max(z)`` and ``e = exp(shifted)``, flat."""
    k = logits.shape[1]
    for i in range(start, stop):
        base = (i - start) * k
        m = -np.inf
        for j in range(k):
            z = np.float64(logits[i, j])
            if z > m:
                m = z
        for j in range(k):
            shifted[base + j] = np.float64(logits[i, j]) - m
    _exp_nonpositive(shifted, e, bits, (stop - start) * k)


@numba.njit(cache=True)
def categorical_log_softmax(logits):
    r"""Row-wise :math:`\log p_{ij} = z_{ij} - \log\sum_k e^{z_{ik}}`, shape ``(N, K)``.

    Masked entries (``-inf``) give ``-inf``.
    """
    n, k = logits.shape
    out = np.empty((n, k), dtype=logits.dtype)
    rows = _block_rows(k)
    shifted = np.empty(rows * k)
    e = np.empty(rows * k)
    bits = np.empty(rows * k, dtype=np.int64)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        _shift_and_exp(logits, start, stop, shifted, e, bits)
        for i in range(start, stop):
            base = (i - start) * k
            s = 0.0
            for j in range(k):
                s += e[base + j]
            log_s = math.log(s)
            for j in range(k):
                out[i, j] = shifted[base + j] - log_s
    return out


@numba.njit(cache=True)
def categorical_probs(logits):
    r"""Row-wise softmax :math:`p_{ij} = e^{z_{ij}} / \sum_k e^{z_{ik}}`, shape ``(N, K)``."""
    n, k = logits.shape
    out = np.empty((n, k), dtype=logits.dtype)
    rows = _block_rows(k)
    shifted = np.empty(rows * k)
    e = np.empty(rows * k)
    bits = np.empty(rows * k, dtype=np.int64)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        _shift_and_exp(logits, start, stop, shifted, e, bits)
        for i in range(start, stop):
            base = (i - start) * k
            s = 0.0
            for j in range(k):
                s += e[base + j]
            inv_s = 1.0 / s
            for j in range(k):
                out[i, j] = e[base + j] * inv_s
    return out


@numba.njit(cache=True)
def categorical_log_prob(logits, actions):
    r""":math:`\log p_i(a_i) = z_{i a_i} - \log\sum_k e^{z_{ik}}`, shape ``(N,)``.

    ``-inf`` when the chosen category is masked.
    """
    n, k = logits.shape
    if actions.shape[0] != n:
        raise IndexError(_ACTIONS_LENGTH)
    out = np.empty(n, dtype=logits.dtype)
    rows = _block_rows(k)
    shifted = np.empty(rows * k)
    e = np.empty(rows * k)
    bits = np.empty(rows * k, dtype=np.int64)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        _shift_and_exp(logits, start, stop, shifted, e, bits)
        for i in range(start, stop):
            base = (i - start) * k
            s = 0.0
            for j in range(k):
                s += e[base + j]
            a = actions[i]
            if a < 0 or a >= k:
                raise IndexError(_ACTION_OUT_OF_RANGE)
            out[i] = shifted[base + a] - math.log(s)
    return out


@numba.njit(cache=True)
def categorical_entropy(logits):
    r"""Entropy :math:`H_i = -\sum_j p_{ij}\log p_{ij}`, shape ``(N,)``.

    Computed as :math:`\log s - \sum_j e_j (z_j - m) / s` with :math:`e_j = e^{z_j - m}`,
    :math:`s = \sum_j e_j`; categories whose probability is 0 (masked or underflowed)
    contribute exactly 0. Clipped below at 0 (rounding could give ``-1e-17``).
    """
    n, k = logits.shape
    out = np.empty(n, dtype=logits.dtype)
    rows = _block_rows(k)
    shifted = np.empty(rows * k)
    e = np.empty(rows * k)
    bits = np.empty(rows * k, dtype=np.int64)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        _shift_and_exp(logits, start, stop, shifted, e, bits)
        for i in range(start, stop):
            base = (i - start) * k
            s = 0.0
            weighted = 0.0
            for j in range(k):
                ej = e[base + j]
                s += ej
                if ej > 0.0:
                    weighted += ej * shifted[base + j]
            h = math.log(s) - weighted / s
            out[i] = h if h > 0.0 else 0.0
    return out


@numba.njit(cache=True)
def categorical_kl(logits_p, logits_q):
    r"""Row-wise :math:`\mathrm{KL}(p_i \,\|\, q_i) = \sum_j p_{ij}(\log p_{ij} - \log q_{ij})`.

    Shape ``(N,)``. With shifted logits :math:`u = z^p - m^p`, :math:`w = z^q - m^q`
    and :math:`s^p = \sum_j e^{u_j}`, :math:`s^q = \sum_j e^{w_j}`:

    .. math:: \mathrm{KL} = \frac{1}{s^p}\sum_{j:\,p_j > 0} e^{u_j} (u_j - w_j)
              + \log(s^q / s^p).

    Terms with :math:`p_{ij} = 0` are 0; a category with :math:`p_{ij} > 0` that is
    masked in ``logits_q`` gives ``+inf`` (the exact value). Clipped below at 0, so
    ``KL(p, p)`` is exactly 0.
    """
    n, k = logits_p.shape
    if logits_q.shape[0] != n or logits_q.shape[1] != k:
        raise ValueError(_Q_SHAPE)
    out = np.empty(n, dtype=logits_p.dtype)
    rows = _block_rows(k)
    shifted_p = np.empty(rows * k)
    shifted_q = np.empty(rows * k)
    ep = np.empty(rows * k)
    eq = np.empty(rows * k)
    bits = np.empty(rows * k, dtype=np.int64)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        _shift_and_exp(logits_p, start, stop, shifted_p, ep, bits)
        _shift_and_exp(logits_q, start, stop, shifted_q, eq, bits)
        for i in range(start, stop):
            base = (i - start) * k
            sp = 0.0
            sq = 0.0
            acc = 0.0
            for j in range(k):
                epj = ep[base + j]
                sp += epj
                sq += eq[base + j]
                if epj > 0.0:
                    acc += epj * (shifted_p[base + j] - shifted_q[base + j])
            kl = acc / sp + math.log(sq / sp)
            out[i] = kl if kl > 0.0 else 0.0
    return out


@numba.njit(cache=True)
def categorical_fisher_product(logits, v):
    r"""Fisher matrix in logit coordinates times ``v``, row by row, shape ``(N, K)``.

    :math:`F_i = \operatorname{diag}(p_i) - p_i p_i^\top` is the Hessian of
    :math:`z \mapsto \mathrm{KL}(p_i \,\|\, \operatorname{softmax}(z))` at
    :math:`z = z_i`, so :math:`(F_i v_i)_j = p_{ij}\,(v_{ij} - p_i\cdot v_i)`.
    """
    n, k = logits.shape
    if v.shape[0] != n or v.shape[1] != k:
        raise ValueError(_V_SHAPE)
    out = np.empty((n, k), dtype=logits.dtype)
    rows = _block_rows(k)
    shifted = np.empty(rows * k)
    e = np.empty(rows * k)
    bits = np.empty(rows * k, dtype=np.int64)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        _shift_and_exp(logits, start, stop, shifted, e, bits)
        for i in range(start, stop):
            base = (i - start) * k
            s = 0.0
            ev = 0.0
            for j in range(k):
                s += e[base + j]
                ev += e[base + j] * np.float64(v[i, j])
            inv_s = 1.0 / s
            pv = ev * inv_s
            for j in range(k):
                out[i, j] = e[base + j] * inv_s * (np.float64(v[i, j]) - pv)
    return out


@numba.njit(cache=True)
def categorical_log_prob_grad(logits, actions):
    r"""Score :math:`\partial \log p_i(a_i) / \partial z_i = \mathrm{onehot}(a_i) - p_i`.

    Shape ``(N, K)``.
    """
    n, k = logits.shape
    if actions.shape[0] != n:
        raise IndexError(_ACTIONS_LENGTH)
    out = np.empty((n, k), dtype=logits.dtype)
    rows = _block_rows(k)
    shifted = np.empty(rows * k)
    e = np.empty(rows * k)
    bits = np.empty(rows * k, dtype=np.int64)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        _shift_and_exp(logits, start, stop, shifted, e, bits)
        for i in range(start, stop):
            base = (i - start) * k
            s = 0.0
            for j in range(k):
                s += e[base + j]
            inv_s = 1.0 / s
            a = actions[i]
            if a < 0 or a >= k:
                raise IndexError(_ACTION_OUT_OF_RANGE)
            for j in range(k):
                out[i, j] = (1.0 if j == a else 0.0) - e[base + j] * inv_s
    return out


@numba.njit(cache=True)
def categorical_sample_inverse_cdf(logits, uniforms):
    r"""Category drawn by inverting the CDF of each row at ``uniforms[i]``, shape ``(N,)`` int64.

    ``uniforms`` has shape ``(N,)`` with entries in ``[0, 1)``. Returns the first ``j``
    with :math:`u_i \sum_k e_k < \sum_{k \le j} e_k`; a category of probability 0 is
    never returned (if rounding leaves ``u`` above the last partial sum, the last
    category of positive probability is returned).
    """
    n, k = logits.shape
    if uniforms.shape[0] != n:
        raise ValueError(_UNIFORMS_LENGTH)
    out = np.empty(n, dtype=np.int64)
    rows = _block_rows(k)
    shifted = np.empty(rows * k)
    e = np.empty(rows * k)
    bits = np.empty(rows * k, dtype=np.int64)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        _shift_and_exp(logits, start, stop, shifted, e, bits)
        for i in range(start, stop):
            base = (i - start) * k
            s = 0.0
            for j in range(k):
                s += e[base + j]
            target = uniforms[i] * s
            cumulative = 0.0
            chosen = -1
            last_positive = 0
            for j in range(k):
                ej = e[base + j]
                if ej > 0.0:
                    last_positive = j
                    cumulative += ej
                    if target < cumulative:
                        chosen = j
                        break
            out[i] = chosen if chosen >= 0 else last_positive
    return out


@numba.njit(cache=True)
def categorical_find_invalid_logit(logits):
    """First problem in ``logits`` as ``(row, column, code)``; ``code`` 0 means none.

    Codes: 1 NaN, 2 ``+inf``, 3 every entry of the row is ``-inf`` (``column`` is -1),
    4 the array has no columns. Used by the validating layer: a branch-free pass
    over the data, then a second, locating pass only when something is wrong or at
    least ``K`` entries are ``-inf``.
    """
    n, k = logits.shape
    if k == 0 and n > 0:
        return 0, -1, 4
    flat = logits.ravel()  # a view when C-contiguous: one vectorized pass
    bad = False
    masked = 0
    for idx in range(flat.shape[0]):
        z = flat[idx]
        bad |= not (z < np.inf)  # NaN or +inf
        masked += z == -np.inf
    if not bad and masked < k:  # fewer -inf than a row holds: no row is all -inf
        return -1, -1, 0
    for i in range(n):
        any_finite = False
        for j in range(k):
            z = logits[i, j]
            if np.isnan(z):
                return i, j, 1
            if z == np.inf:
                return i, j, 2
            if z != -np.inf:
                any_finite = True
        if not any_finite:
            return i, -1, 3
    return -1, -1, 0


@numba.njit(cache=True)
def categorical_find_invalid_action(actions, k):
    """Index of the first entry of the 1-D ``actions`` outside ``[0, k)``, else -1.

    Used by the validating layer: a branch-free pass, then a locating pass if needed.
    """
    bad = False
    for i in range(actions.shape[0]):
        a = actions[i]
        bad |= (a < 0) | (a >= k)
    if not bad:
        return -1
    for i in range(actions.shape[0]):
        if actions[i] < 0 or actions[i] >= k:
            return i
    return -1
