"""Checks of symmetric operators and of KL divergences."""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist
from typing import Any

import numpy as np

from trustregion.testing import _differences as fd
from trustregion.testing._derivatives import INNER_PRODUCT_ULPS
from trustregion.testing._report import (
    CheckReport,
    Counted,
    as_float_array,
    count_argument,
    number_argument,
    require_finite,
)

#: largest default relative allowance of the Lanczos test (a relative allowance near 1 would
#: forgive -I as positive semi-definite)
RTOL_CAP = 1e-2


def check_symmetric_operator(
    matvec: Callable[[np.ndarray], Any],
    n: int,
    *,
    psd: bool = False,
    dtype: Any = np.float64,
    rtol: float | None = None,
    atol: float = 0.0,
    seed: int = 0,
    max_dense: int = 256,
) -> CheckReport:
    r"""Check that ``matvec`` applies a symmetric (optionally positive semi-definite) matrix.

    Up to ``max_dense`` the matrix is assembled from ``n`` products with the unit vectors
    and checked entry by entry: :math:`|A_{ij} - A_{ji}| \le r \max|A| + a` and, with
    ``psd=True``, :math:`\lambda_{\min}(\tfrac12(A + A^T)) \ge -r \max|\lambda| - a`, where
    :math:`r` = ``rtol`` (default :math:`16\,n\,\epsilon` of ``dtype``) and :math:`a` =
    ``atol``. Above it, 8 random pairs test
    :math:`|u^TAv - (Au)^Tv| \le r (\|u\|\|Av\| + \|Au\|\|v\|) + a \|u\|\|v\|` and a
    30-step Lanczos run looks for a Ritz value below :math:`-r \max|\theta| - a` (Ritz values
    lie inside the spectrum, so a negative one proves the operator is not PSD; a small
    negative eigenvalue can go unseen), with :math:`r` = ``rtol``. By default :math:`r =
    16\,\epsilon` for the pairs, which does not grow with ``n``: ``u`` is independent of the
    rounding error :math:`d` of :math:`Av`, so :math:`u^Td` is about
    :math:`\|u\|\|d\|/\sqrt n`, and :math:`16\,\epsilon` covers a product rounded to
    several times :math:`\sqrt n\,\epsilon\,\|Av\|`, the random-walk growth of a recursive
    sum; and :math:`r = \min(16\sqrt n\,\epsilon, 10^{-2})` for the Ritz value. So a gross
    asymmetry or a clearly negative eigenvalue is caught at any ``n``.

    Parameters
    ----------
    matvec : callable
        ``matvec(v) -> A v`` for vectors of length ``n`` and dtype ``dtype``.
    n : int
    psd : bool
        Also require positive semi-definiteness.
    dtype : float32 or float64
        Dtype of the vectors passed to ``matvec`` (and of the rounding allowed).
    rtol : float, optional
        Relative allowance, in ``[0, 1)``.
    atol : float
        Absolute allowance (finite, ``>= 0``), for operators whose rounding is relative to
        intermediates larger than the result (a categorical Fisher ``p_j v_j - p_j (p . v)``
        with ``p_j ~ 1`` rounds like ``eps |v|``, not like ``eps |F v|``). It bounds the
        asymmetry :math:`|u^TAv - (Au)^Tv|` per unit :math:`\|u\|\|v\|` on both paths.
    seed : int
        Seed (an integer ``>= 0``) of the random pairs and of the Lanczos start.
    max_dense : int
        Largest ``n`` (an integer ``>= 0``) for which the matrix is assembled.

    Returns
    -------
    CheckReport

    Examples
    --------
    >>> import numpy as np
    >>> from trustregion.testing import check_symmetric_operator
    >>> check_symmetric_operator(np.array([[2.0, 1.0], [1.0, 2.0]]).dot, 2, psd=True).calls
    {'matvec': 2}
    >>> check_symmetric_operator(np.array([[1.0, 2.0], [2.0, 1.0]]).dot, 2, psd=True)
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    AssertionError: check_symmetric_operator: positive semi-definiteness: smallest eigenvalue -1 ...
    """
    report = CheckReport("check_symmetric_operator")
    n = count_argument("n", n)
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    seed = count_argument("seed", seed, minimum=0)
    max_dense = count_argument("max_dense", max_dense, minimum=0)
    # a relative allowance of 1 or more would forgive any asymmetry, and -I as PSD
    rtol = None if rtol is None else number_argument("rtol", rtol, below=1.0)
    atol = number_argument("atol", atol)
    e = fd.eps(dtype)
    dense = n <= max_dense
    if rtol is not None:
        r = float(rtol)
        source = f"rtol = {r:.1e} (given)"
    elif dense:
        # an entry (A e_j)_i is one inner product of length n: n eps is its worst-case rounding
        r = INNER_PRODUCT_ULPS * n * e
        source = f"{INNER_PRODUCT_ULPS} n eps({dtype.name}) = {r:.1e}, n = {n}"
    else:
        # the rounding error d of a product is independent of the other random vector, so
        # u . d ~ |u| |d| / sqrt(n): r does not grow with n (see above)
        r = INNER_PRODUCT_ULPS * e
        source = f"{INNER_PRODUCT_ULPS} eps({dtype.name}) = {r:.1e}"
    # Lanczos vectors in the null space are built from the rounding errors themselves, so a
    # Ritz value is off by about |d| <~ sqrt(n) eps max|theta| (a recursive sum); capped well
    # below 1 so that a clearly negative eigenvalue is never forgiven
    r_ritz = r if rtol is not None else min(INNER_PRODUCT_ULPS * math.sqrt(n) * e, RTOL_CAP)
    ritz_source = (
        source
        if rtol is not None
        else f"min({INNER_PRODUCT_ULPS} sqrt(n) eps({dtype.name}), {RTOL_CAP:g}) = {r_ritz:.1e}"
    )
    # subnormal values carry no relative precision: allow n times the smallest normal number
    floor = INNER_PRODUCT_ULPS * n * float(np.finfo(dtype).tiny) + atol
    floor_note = f" + 16 n tiny({dtype.name})" + (f" + atol {atol:.1e}" if atol else "")
    mv = Counted("matvec", matvec)

    def apply(v: np.ndarray, what: str) -> np.ndarray:
        out = as_float_array(report, "matvec", mv(v.astype(dtype)))
        if out.shape != (n,) and out.size == n:
            out = out.reshape(n)
        if out.shape != (n,):
            report.fail(f"matvec returned shape {out.shape} for {what}, expected ({n},)")
        require_finite(report, f"matvec({what})", out)
        return out

    if dense:
        A = np.empty((n, n))
        for j in range(n):
            e_j = np.zeros(n)
            e_j[j] = 1.0
            A[:, j] = apply(e_j, f"e_{j}")
        scale = float(np.max(np.abs(A))) if A.size else 0.0
        asym = np.abs(A - A.T)
        i, j = (int(k) for k in np.unravel_index(int(np.argmax(asym)), asym.shape))
        report.compare(
            f"symmetry: matvec(e_{j})[{i}] = {A[i, j]:.10g} but "
            f"matvec(e_{i})[{j}] = {A[j, i]:.10g}",
            float(asym[i, j]),
            r * scale + floor,
            source + f" x max|A| = {scale:.3g}" + floor_note,
        )
        if psd:
            w, V = np.linalg.eigh(0.5 * (A + A.T))
            top = float(np.max(np.abs(w)))
            vec = ", ".join(f"{c:.3g}" for c in V[:, 0][:8]) + (", ..." if n > 8 else "")
            report.compare(
                f"positive semi-definiteness: smallest eigenvalue {w[0]:.6g} "
                f"at eigenvector [{vec}]",
                max(0.0, -float(w[0])),
                r * top + floor,
                source + f" x max|eigenvalue| = {top:.3g}" + floor_note,
            )
        return report.count(mv)

    rng = np.random.default_rng(seed)
    for k in range(8):
        # rounded to dtype first, so that both inner products use the vectors matvec saw
        u = rng.standard_normal(n).astype(dtype).astype(np.float64)
        v = rng.standard_normal(n).astype(dtype).astype(np.float64)
        au, av = apply(u, f"random u #{k}"), apply(v, f"random v #{k}")
        left, right = float(u @ av), float(au @ v)
        norm_u, norm_v = float(np.linalg.norm(u)), float(np.linalg.norm(v))
        size = norm_u * float(np.linalg.norm(av)) + float(np.linalg.norm(au)) * norm_v
        report.compare(
            f"symmetry <u, A v> = <A u, v> for random pair #{k} (seed {seed}): "
            f"{left:.10g} vs {right:.10g}",
            abs(left - right),
            r * size + floor * norm_u * norm_v,
            source + " x (|u||Av| + |Au||v|)" + floor_note + " x |u||v|",
        )
    if psd:
        ritz, top = _lanczos_extremes(lambda v: apply(v, "a Lanczos vector"), n, 30, rng)
        report.compare(
            f"positive semi-definiteness: Lanczos (30 steps, seed {seed}) found "
            f"Ritz value {ritz:.6g} < 0",
            max(0.0, -ritz),
            r_ritz * top + floor,
            ritz_source + f" x largest |Ritz value| {top:.3g}" + floor_note,
        )
    return report.count(mv)


def _lanczos_extremes(
    apply: Callable[[np.ndarray], np.ndarray], n: int, steps: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Smallest Ritz value and largest |Ritz value| of ``steps`` Lanczos steps (full reorth.)."""
    Q = np.zeros((n, steps + 1))
    q = rng.standard_normal(n)
    Q[:, 0] = q / np.linalg.norm(q)
    alpha, beta = [], []
    for k in range(steps):
        w = apply(Q[:, k])
        alpha.append(float(Q[:, k] @ w))
        w = w - Q[:, : k + 1] @ (Q[:, : k + 1].T @ w)
        w = w - Q[:, : k + 1] @ (Q[:, : k + 1].T @ w)
        b = float(np.linalg.norm(w))
        if b <= 1e-12 * max(1.0, abs(alpha[-1])) or k == steps - 1:
            break
        beta.append(b)
        Q[:, k + 1] = w / b
    T = np.diag(alpha) + np.diag(beta[: len(alpha) - 1], 1) + np.diag(beta[: len(alpha) - 1], -1)
    ritz = np.linalg.eigvalsh(T)
    return float(ritz[0]), float(np.max(np.abs(ritz)))


def _batch_size(p: Any) -> int:
    first = p[0] if isinstance(p, tuple | list) else p
    arr = np.asarray(first)
    if arr.ndim == 0:
        raise ValueError("distribution parameters need a leading batch dimension")
    return int(arr.shape[0])


def _row(p: Any, i: int, batch: int, rank: int | None = None) -> Any:
    """Row ``i`` of every batched array in ``p``.

    An array is batched when its leading dimension is the batch and its rank is that of
    the first array (so a ``(D,)`` log_std next to ``(B, D)`` means is shared, even if
    ``D == B``).
    """
    if isinstance(p, tuple | list):
        first = np.ndim(p[0])
        return type(p)(_row(a, i, batch, first) for a in p)
    arr = np.asarray(p)
    rank = arr.ndim if rank is None else rank
    batched = arr.ndim == rank and arr.ndim >= 1 and arr.shape[0] == batch
    return arr[i : i + 1] if batched else arr


def check_kl(
    kl: Callable[[Any, Any], Any],
    p: Any,
    q: Any,
    *,
    log_prob: Callable[[Any, Any], Any] | None = None,
    sample: Callable[[Any, np.random.Generator, int], Any] | None = None,
    n_samples: int = 20_000,
    false_alarm_rate: float = 1e-6,
    shift_invariant: bool = False,
    seed: int = 0,
    accuracy: float | None = None,
    max_rows: int = 8,
) -> CheckReport:
    r"""Check a batched KL divergence: zero on the diagonal, nonnegative, per row, sampled.

    ``kl(p, q)`` takes two batches of distribution parameters (an array, or a tuple of
    arrays, with a leading batch dimension ``B``) and returns ``B`` values. Checked:

    - shape ``(B,)``; no NaN and no ``-inf`` (``+inf`` is allowed: a KL can be infinite);
    - ``kl(p, p) = kl(q, q) = 0`` and ``kl(p, q) >= 0`` to the accuracy below;
    - the batch equals the rows computed one at a time (the first ``max_rows`` rows);
    - with ``shift_invariant=True`` (logits): adding a constant to each row of ``p`` and
      of ``q`` changes nothing;
    - with ``log_prob`` and ``sample``: each finite row agrees with the Monte Carlo
      estimate :math:`\hat K = \frac1S\sum_s \log p(x_s) - \log q(x_s)`, :math:`x_s \sim p`,
      within :math:`z\,\hat\sigma/\sqrt S`, :math:`z = \Phi^{-1}(1 - \alpha / 2B)`, so that a
      correct KL fails with probability at most :math:`\alpha` = ``false_alarm_rate`` per call
      (normal approximation of the mean; it assumes the outcomes that carry KL mass are not
      rarer than about :math:`1/S`).

    Parameters
    ----------
    kl : callable
        ``kl(p, q) -> array (B,)``.
    p, q : array or tuple of arrays
        Parameters with a leading batch dimension; arrays of lower rank than the first are
        shared by the rows.
    log_prob : callable, optional
        ``log_prob(params, x) -> array (S, B)`` for samples ``x`` from ``sample``.
    sample : callable, optional
        ``sample(params, rng, S) -> x`` with ``S`` samples of every row (leading dim ``S``).
    n_samples : int
    false_alarm_rate : float
    shift_invariant : bool
    seed : int
    accuracy : float, optional
        Absolute accuracy of a KL value; by default 64 eps (of the parameters' dtype)
        times ``max(1, |KL|, largest |parameter|)``.
    max_rows : int

    Returns
    -------
    CheckReport

    Examples
    --------
    >>> import numpy as np
    >>> from trustregion.testing import check_kl
    >>> def kl(p, q):  # categorical, from logits
    ...     lp = p - np.logaddexp.reduce(p, axis=1, keepdims=True)
    ...     lq = q - np.logaddexp.reduce(q, axis=1, keepdims=True)
    ...     return np.sum(np.exp(lp) * (lp - lq), axis=1)
    >>> p, q = np.array([[0.0, 1.0, 2.0]]), np.array([[1.0, 0.0, -1.0]])
    >>> check_kl(kl, p, q, shift_invariant=True).calls
    {'kl': 5}
    >>> check_kl(lambda p, q: kl(p, q) + 1e-3, p, q)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    AssertionError: check_kl: KL(p, p) must be 0 (row 0: 0.001)
    ...
    """
    report = CheckReport("check_kl")
    n_samples = count_argument("n_samples", n_samples, minimum=2)
    if not (0.0 < false_alarm_rate < 1.0):
        raise ValueError(f"false_alarm_rate must lie in (0, 1), got {false_alarm_rate!r}")
    if (log_prob is None) != (sample is None):
        raise ValueError("pass both log_prob and sample for the Monte Carlo check, or neither")
    seed = count_argument("seed", seed, minimum=0)
    max_rows = count_argument("max_rows", max_rows, minimum=0)
    if accuracy is not None:
        accuracy = number_argument("accuracy", accuracy)
    kl_c = Counted("kl", kl)
    batch = _batch_size(p)
    if batch == 0:
        raise ValueError("p and q must have a batch of at least one row, got 0 rows")
    arrays = list(p) + list(q) if isinstance(p, tuple | list) else [p, q]
    # a NaN parameter has no KL: a kl that returns a number for it would pass unchecked
    if any(np.any(np.isnan(np.asarray(a, dtype=np.float64))) for a in arrays):
        raise ValueError("p and q must not contain NaN (-inf and inf logits are fine)")
    dtype = fd.float_dtype(*arrays)
    e = fd.eps(dtype)
    finite_params = [np.abs(np.asarray(a, dtype=np.float64)) for a in arrays]
    largest = max(float(np.max(a[np.isfinite(a)], initial=0.0)) for a in finite_params)
    if accuracy is None:
        # a KL sums terms as large as the log-densities, which grow with the parameters
        def acc(value: np.ndarray) -> np.ndarray:
            size = np.where(np.isfinite(value), np.abs(value), 1.0)
            return fd.ULPS * e * np.maximum(max(1.0, largest), size)

        note = (
            f"{fd.ULPS} eps({dtype.name}) x max(1, |KL|, largest |parameter| = {largest:.3g}); "
            "pass accuracy= to change"
        )
    else:

        def acc(value: np.ndarray) -> np.ndarray:
            return np.full(np.shape(value), float(accuracy))

        note = f"accuracy {accuracy:.1e} (given)"

    def evaluate(a: Any, b: Any, rows: int, what: str) -> np.ndarray:
        out = as_float_array(report, f"kl({what})", kl_c(a, b))
        if out.shape != (rows,):
            report.fail(
                f"kl({what}) returned shape {out.shape}, expected the batch shape ({rows},)"
            )
        if np.any(np.isnan(out) | (out == -np.inf)):
            i = int(np.flatnonzero(np.isnan(out) | (out == -np.inf))[0])
            report.fail(f"kl({what}) is {out[i]} at row {i}: a KL is a number in [0, inf]")
        return out

    K = evaluate(p, q, batch, "p, q")
    for name, same in (("p, p", p), ("q, q", q)):
        diag = evaluate(same, same, batch, name)
        i = int(np.argmax(np.abs(diag) - acc(diag)))
        report.compare(
            f"KL({name}) must be 0 (row {i}: {diag[i]:.6g})",
            float(np.abs(diag[i])),
            float(acc(diag)[i]),
            note,
        )
    i = int(np.argmin(K + acc(K)))
    report.compare(
        f"KL(p, q) >= 0 (row {i}: {K[i]:.6g})", max(0.0, -float(K[i])), float(acc(K)[i]), note
    )
    for i in range(min(batch, max_rows)):
        alone = evaluate(_row(p, i, batch), _row(q, i, batch), 1, f"p[{i}:{i + 1}], q[{i}:{i + 1}]")
        same = bool(alone[0] == K[i]) or (np.isfinite(K[i]) and np.isfinite(alone[0]))
        if not same:
            report.fail(f"row {i} alone gives KL {alone[0]} but the batch gives {K[i]}")
        if np.isfinite(K[i]):
            report.compare(
                f"batched KL equals the row computed alone (row {i}: batch {K[i]:.10g}, "
                f"alone {alone[0]:.10g})",
                abs(float(alone[0] - K[i])),
                float(acc(K)[i]),
                note,
            )
    rng = np.random.default_rng(seed)
    if shift_invariant:
        lp, lq = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
        shifts = np.round(rng.uniform(-10, 10, (2, batch) + (1,) * (lp.ndim - 1)) * 8) / 8
        p_s = (lp + shifts[0]).astype(np.asarray(p).dtype)
        q_s = (lq + shifts[1]).astype(np.asarray(q).dtype)
        K_s = evaluate(p_s, q_s, batch, "p + c_p, q + c_q")
        finite_logits = np.concatenate([lp[np.isfinite(lp)], lq[np.isfinite(lq)], [0.0]])
        spread = 1.0 + 10.0 + float(np.max(np.abs(finite_logits)))
        ok = np.isfinite(K) & np.isfinite(K_s)
        if np.any(np.isfinite(K) != np.isfinite(K_s)):
            i = int(np.flatnonzero(np.isfinite(K) != np.isfinite(K_s))[0])
            report.fail(
                f"shifting logits by a per-row constant changed KL row {i} from {K[i]} to {K_s[i]}"
            )
        diff = np.where(ok, np.abs(K_s - K), 0.0)
        tol = fd.ULPS * e * spread * np.maximum(1.0, np.where(ok, np.abs(K), 1.0))
        i = int(np.argmax(diff - tol))
        report.compare(
            f"invariance to adding a constant to each row of logits (row {i}: {K[i]:.10g} "
            f"becomes {K_s[i]:.10g} with shifts {shifts[0].ravel()[i]:g}, "
            f"{shifts[1].ravel()[i]:g}, seed {seed})",
            float(diff[i]),
            float(tol[i]),
            f"{fd.ULPS} eps({dtype.name}) x (1 + |shift| + max|logit|) x max(1, |KL|)",
        )
    if log_prob is not None and sample is not None:
        lp_c, sample_c = Counted("log_prob", log_prob), Counted("sample", sample)
        x = sample_c(p, rng, n_samples)
        log_p = as_float_array(report, "log_prob(p, x)", lp_c(p, x), (n_samples, batch))
        log_q = as_float_array(report, "log_prob(q, x)", lp_c(q, x), (n_samples, batch))
        with np.errstate(invalid="ignore"):
            ratio = log_p - log_q
        z = NormalDist().inv_cdf(1.0 - false_alarm_rate / (2 * batch))
        for i in range(batch):
            r = ratio[:, i]
            if np.any(np.isnan(r)) or np.any(r == -np.inf):
                report.fail(
                    f"log_prob(p, x) is -inf or NaN at a sample x ~ p (row {i}): "
                    "sample and log_prob disagree"
                )
            if np.any(r == np.inf):
                if K[i] != np.inf:
                    report.fail(
                        f"a sample of p has log q = -inf (row {i}) but KL = {K[i]} is finite"
                    )
                continue
            if not np.isfinite(K[i]):
                continue  # an infinite KL whose support gap the sample did not reach
            estimate = float(np.mean(r))
            se = float(np.std(r, ddof=1)) / math.sqrt(n_samples)
            report.compare(
                f"KL(p, q) against a Monte Carlo estimate from {n_samples} samples of p "
                f"(row {i}, seed {seed}): KL = {K[i]:.6g}, estimate = {estimate:.6g} +- {se:.2g}",
                abs(estimate - float(K[i])),
                z * se + float(acc(K)[i]),
                f"z = {z:.2f} standard errors (false-alarm rate {false_alarm_rate:g} per call over "
                f"{batch} rows, normal approximation) + {note}",
            )
        report.count(lp_c, sample_c)
    return report.count(kl_c)
