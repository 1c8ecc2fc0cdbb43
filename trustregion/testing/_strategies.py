r"""Hypothesis strategies for numeric code: structured cases that carry their oracle.

Every strategy shrinks toward small, well-conditioned, unremarkable cases: sizes toward
their minimum, condition numbers toward 1, scales toward 1, rotations toward the identity,
masks and extremes toward none. Sizes may be ints or strategies of ints.

Random orthogonal matrices come from a drawn seed (QR of a Gaussian matrix with the sign
convention that makes it Haar-distributed), which draws in microseconds where n^2 drawn
floats would take milliseconds; hypothesis still shrinks the seed, and toward the identity.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.special
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.strategies import SearchStrategy
from scipy.sparse.linalg import LinearOperator

from trustregion.testing._cases import (
    DistributionPair,
    GaussianCase,
    LinearOperatorCase,
    LineSearchProblem,
    LogitsCase,
    SimplexCase,
    SymmetricMatrixCase,
    TrustRegionProblem,
)

_SEEDS = st.integers(0, 2**32 - 1)
_KINDS = ("spd", "psd", "indefinite", "nonsymmetric")
_FORMS = ("callable", "linear_operator", "array")
_REGIMES = ("interior", "boundary", "negative_curvature", "hard_case")
_RELATIONS = ("equal", "near", "far")


def _size(draw: Any, n: Any, name: str, minimum: int = 1) -> int:
    value = draw(n) if isinstance(n, SearchStrategy) else n
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(
            f"{name} must be an integer >= {minimum} or a strategy of them, got {value!r}"
        )
    return int(value)


def _dtype(dtype: Any, draw: Any = None) -> np.dtype:
    if isinstance(dtype, SearchStrategy):
        if draw is None:
            raise TypeError("dtype cannot be a strategy here")
        dtype = draw(dtype)
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _cond_range(cond: Any) -> tuple[float, float]:
    low, high = (float(c) for c in cond)
    if not (1.0 <= low <= high < math.inf):
        raise ValueError(f"cond must be a range (low, high) with 1 <= low <= high, got {cond!r}")
    return low, high


def _check_cond(cond: tuple[float, float], count: int, dt: np.dtype) -> None:
    """Reject a ``cond`` range that ``count`` magnitudes in ``dt`` cannot have.

    A single magnitude has condition number 1, so a range without 1 cannot be met. And
    rounding to ``dt`` moves every entry by up to ``eps/2`` of the largest magnitude: past
    ``kappa = 1 / (2 eps)`` the smallest eigenvalue (or singular value) drowns in that
    rounding, the matrix need not even be definite, and the oracle is wrong.
    """
    low, high = cond
    if count == 1 and low > 1.0:
        raise ValueError(
            f"cond must include 1 when n = 1 (a 1x1 matrix has condition number 1), got {cond!r}"
        )
    limit = 0.5 / float(np.finfo(dt).eps)
    if high > limit:
        raise ValueError(
            f"cond must be at most 1 / (2 eps) = {limit:.3g} in {dt} (beyond it rounding "
            f"swamps the smallest eigenvalue), got {cond!r}"
        )


def _choice(draw: Any, value: Any, options: tuple[str, ...], name: str) -> str:
    if value is None:
        return str(draw(st.sampled_from(options)))
    if isinstance(value, SearchStrategy):
        value = draw(value)
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return str(value)


def _haar(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    return Q * np.where(np.diag(R) < 0, -1.0, 1.0)


@st.composite
def _rotation(draw: Any, n: int) -> np.ndarray:
    # one draw in ten is the identity, which is also where shrinking leads
    if draw(st.integers(0, 9)) == 0:
        return np.eye(n)
    return _haar(n, draw(_SEEDS))


@st.composite
def _magnitudes(draw: Any, n: int, cond: tuple[float, float]) -> np.ndarray:
    """n positive magnitudes, largest 2^s, smallest exactly largest / kappa, descending."""
    low, high = cond
    log_cond = draw(st.floats(math.log10(low), math.log10(high))) if n > 1 else 0.0
    top = 2.0 ** draw(st.integers(-4, 4).map(lambda s: s))
    inner = draw(st.lists(st.floats(0.0, 1.0), min_size=max(n - 2, 0), max_size=max(n - 2, 0)))
    t = np.array([0.0, *sorted(inner), 1.0][:n]) if n > 1 else np.zeros(1)
    return top * 10.0 ** (-log_cond * t)


def _symmetric(Q: np.ndarray, eigenvalues: np.ndarray, dtype: np.dtype) -> SymmetricMatrixCase:
    order = np.argsort(eigenvalues, kind="stable")
    lam, Q = eigenvalues[order], Q[:, order]
    A = (Q * lam) @ Q.T
    A = 0.5 * (A + A.T)
    return SymmetricMatrixCase(A.astype(dtype), lam, Q)


@st.composite
def spd_matrices(
    draw: Any, n: Any, *, cond: Any = (1.0, 1e6), dtype: Any = np.float64
) -> SymmetricMatrixCase:
    r"""SPD matrices :math:`Q \operatorname{diag}(\lambda) Q^T` of a drawn condition number.

    The largest eigenvalue is a power of two in :math:`[2^{-4}, 2^4]`, the smallest is the
    largest divided by :math:`\kappa` drawn log-uniformly from ``cond``, the others lie
    between; the case carries the eigenvalues and eigenvectors.

    Raises
    ------
    ValueError
        If ``cond`` excludes 1 when n = 1 (a 1x1 matrix has condition number 1), or if
        ``cond`` exceeds :math:`1 / (2 \epsilon)` of the dtype, where rounding the matrix
        swamps its smallest eigenvalue (it need not even stay positive definite).

    Examples
    --------
    >>> from hypothesis import given
    >>> from trustregion.testing import spd_matrices
    >>> @given(spd_matrices(3, cond=(10, 10)))
    ... def test(case):
    ...     assert abs(case.cond - 10) < 1e-9
    ...     assert np.allclose(case.matrix @ case.eigenvectors,
    ...                        case.eigenvectors * case.eigenvalues)
    >>> test()
    """
    n = _size(draw, n, "n")
    cond = _cond_range(cond)
    lam = draw(_magnitudes(n, cond))
    Q, dt = draw(_rotation(n)), _dtype(dtype, draw)
    _check_cond(cond, n, dt)
    return _symmetric(Q, lam, dt)


@st.composite
def psd_matrices(
    draw: Any, n: Any, rank: Any = None, *, cond: Any = (1.0, 1e6), dtype: Any = np.float64
) -> SymmetricMatrixCase:
    """Symmetric positive semi-definite matrices of rank ``rank`` (drawn in ``[0, n]`` if None).

    The ``n - rank`` zero eigenvalues are exact in the oracle; ``cond`` spans the nonzero ones
    (vacuous when there are fewer than two) and is at most :math:`1 / (2 \\epsilon)` of the
    dtype, as in :func:`spd_matrices`.
    """
    n = _size(draw, n, "n")
    r = (
        draw(st.integers(0, n).map(lambda k: n - k))
        if rank is None
        else _size(draw, rank, "rank", 0)
    )
    if r > n:
        raise ValueError(f"rank must be <= n = {n}, got {r}")
    cond = _cond_range(cond)
    lam = np.concatenate([draw(_magnitudes(r, cond)) if r else np.zeros(0), np.zeros(n - r)])
    Q, dt = draw(_rotation(n)), _dtype(dtype, draw)
    _check_cond(cond, 0, dt)
    return _symmetric(Q, lam, dt)


@st.composite
def symmetric_indefinite(
    draw: Any, n: Any, n_negative: Any = None, *, cond: Any = (1.0, 1e6), dtype: Any = np.float64
) -> SymmetricMatrixCase:
    """Symmetric matrices with ``n_negative`` negative eigenvalues (drawn in ``[1, n]`` if None).

    The magnitudes span ``cond`` as in :func:`spd_matrices` (with the same limits on
    ``cond``); which of them are negative is drawn.
    """
    n = _size(draw, n, "n")
    k = draw(st.integers(1, n)) if n_negative is None else _size(draw, n_negative, "n_negative", 0)
    if k > n:
        raise ValueError(f"n_negative must be <= n = {n}, got {k}")
    cond = _cond_range(cond)
    mags = draw(_magnitudes(n, cond))
    negative = draw(st.permutations(range(n)))[:k]
    lam = mags.copy()
    lam[list(negative)] *= -1.0
    Q, dt = draw(_rotation(n)), _dtype(dtype, draw)
    _check_cond(cond, n, dt)
    return _symmetric(Q, lam, dt)


@st.composite
def orthogonal_matrices(draw: Any, n: Any, *, dtype: Any = np.float64) -> np.ndarray:
    """Haar-distributed orthogonal matrices (the identity one draw in ten, and when shrunk)."""
    n = _size(draw, n, "n")
    return np.asarray(draw(_rotation(n)), dtype=_dtype(dtype, draw))


def _asymmetry(A: np.ndarray) -> float:
    """``|A - A^T|_F / (2 |A|_F)``: 0 for a symmetric matrix, 1 for an antisymmetric one."""
    return float(np.linalg.norm(A - A.T)) / (2.0 * float(np.linalg.norm(A)))


def _nonsymmetric(sigma: np.ndarray, seed_u: int, seed_v: int) -> np.ndarray:
    r""":math:`U \operatorname{diag}(\sigma) V^T` (n >= 2) whose antisymmetric part is >= 1/10.

    Independent seeds are not enough: hypothesis readily draws the same seed twice (U = V:
    symmetric), and even distinct U, V can make :math:`\operatorname{diag}(\sigma) V^T U`
    symmetric (for n = 2 and equal singular values, whenever :math:`V^T U` is a
    reflection). So the next few seeds are tried, then a signed cyclic shift :math:`W`
    (:math:`V = U W^T`), for which :math:`\operatorname{diag}(\sigma) W` is visibly
    nonsymmetric whatever :math:`\sigma`. Any orthogonal V keeps the singular values.
    """
    n = sigma.size
    U = _haar(n, seed_u)
    if n == 1:
        return (U * sigma) @ _haar(n, seed_v).T
    for j in range(4):
        A = (U * sigma) @ _haar(n, (seed_v + j) % 2**32).T
        if _asymmetry(A) >= 0.1:
            return A
    W = np.roll(np.eye(n), 1, axis=0)  # e_i -> e_{i+1}: off-diagonal entries that A^T lacks
    W[0, n - 1] = -1.0  # for n = 2 the shift alone is symmetric; the sign makes it a rotation
    return (U * sigma) @ W @ U.T


@st.composite
def linear_operators(
    draw: Any,
    n: Any,
    *,
    kind: Any = None,
    form: Any = None,
    cond: Any = (1.0, 1e6),
    dtype: Any = np.float64,
) -> LinearOperatorCase:
    """Operators of a ``kind`` (spd, psd, indefinite, nonsymmetric) in a ``form``.

    ``form`` is ``"callable"`` (``v -> A v``), ``"linear_operator"`` (scipy) or ``"array"``;
    ``kind`` and ``form`` are drawn when None, or may be strategies. A nonsymmetric
    operator is :math:`U \\operatorname{diag}(\\sigma) V^T` with its singular values as
    ``spectrum``, spanning ``cond`` as in :func:`spd_matrices`; it is symmetric only when
    n = 1: for n >= 2 its antisymmetric part :math:`(A - A^T) / 2` has at least a tenth of
    the Frobenius norm of :math:`A`.
    """
    n = _size(draw, n, "n")
    kind = _choice(draw, kind, _KINDS, "kind")
    form = _choice(draw, form, _FORMS, "form")
    dt = _dtype(dtype, draw)
    if kind == "spd":
        case = draw(spd_matrices(n, cond=cond, dtype=dt))
        matrix, spectrum = case.matrix, case.eigenvalues
    elif kind == "psd":
        case = draw(psd_matrices(n, cond=cond, dtype=dt))
        matrix, spectrum = case.matrix, case.eigenvalues
    elif kind == "indefinite":
        case = draw(symmetric_indefinite(n, cond=cond, dtype=dt))
        matrix, spectrum = case.matrix, case.eigenvalues
    else:
        sigma_cond = _cond_range(cond)
        _check_cond(sigma_cond, n, dt)
        sigma = draw(_magnitudes(n, sigma_cond))
        matrix = _nonsymmetric(sigma, draw(_SEEDS), draw(_SEEDS)).astype(dt)
        spectrum = np.sort(sigma)
    frozen = matrix.copy()
    frozen.setflags(write=False)
    operator: Any
    if form == "array":
        operator = frozen
    elif form == "callable":
        operator = frozen.dot
    else:
        operator = LinearOperator((n, n), matvec=frozen.dot, rmatvec=frozen.T.dot, dtype=dt)
    return LinearOperatorCase(operator, matrix, kind, form, spectrum)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    return np.asarray(scipy.special.log_softmax(logits.astype(np.float64), axis=1))


def _mask(draw: Any, shape: tuple[int, int]) -> np.ndarray:
    """A boolean mask with at least one unmasked entry per row."""
    mask = draw(hnp.arrays(np.bool_, shape))
    keep = draw(hnp.arrays(np.int64, shape[0], elements=st.integers(0, shape[1] - 1)))
    mask[np.arange(shape[0]), keep] = False
    return mask


@st.composite
def logits(
    draw: Any, batch: Any, k: Any, *, extremes: bool = True, dtype: Any = np.float64
) -> LogitsCase:
    """Batches of categorical logits with reference log-probabilities.

    Entries start in ``[-5, 5]``. With ``extremes=True`` each case may also get (each
    drawn, each shrinking away): a huge spread (values scaled by up to ``1e4``), ties
    (columns copied), a large common shift of every row (up to ``1e4``), and ``-inf``
    masks (at least one finite entry per row). The oracle is computed from the stored
    values, so it is exact for them in either dtype.
    """
    b = _size(draw, batch, "batch")
    kk = _size(draw, k, "k")
    dt = _dtype(dtype, draw)
    z = draw(hnp.arrays(np.float64, (b, kk), elements=st.floats(-5, 5)))
    if extremes:
        if draw(st.booleans()):
            z = z * 10.0 ** draw(st.floats(0, 4))
        if kk > 1 and draw(st.booleans()):
            src, dst = draw(st.integers(0, kk - 1)), draw(st.integers(0, kk - 1))
            z[:, dst] = z[:, src]
        if draw(st.booleans()):
            z = z + draw(st.floats(-1e4, 1e4))
        if draw(st.booleans()):
            z[_mask(draw, (b, kk))] = -np.inf
    stored = z.astype(dt)
    log_p = _log_softmax(stored)
    return LogitsCase(stored, log_p, np.exp(log_p))


@st.composite
def simplices(draw: Any, k: Any) -> SimplexCase:
    """Probability vectors of length ``k`` (float64), zeros allowed; shrinks to one-hot."""
    kk = _size(draw, k, "k")
    w = draw(hnp.arrays(np.float64, kk, elements=st.floats(0.0, 1.0)))
    w[draw(st.integers(0, kk - 1))] += 1.0
    probs = w / w.sum()
    with np.errstate(divide="ignore"):
        return SimplexCase(probs, np.log(probs))


@st.composite
def diag_gaussians(
    draw: Any,
    batch: Any,
    d: Any,
    *,
    log_std: Any = (-10.0, 3.0),
    shared: Any = None,
    dtype: Any = np.float64,
) -> GaussianCase:
    """Batches of diagonal Gaussians: means in ``[-10, 10]``, ``log_std`` in the given range.

    ``shared=True`` gives one ``(d,)`` log_std row for the batch, ``False`` one per row,
    None draws which.
    """
    b, dd = _size(draw, batch, "batch"), _size(draw, d, "d")
    low, high = (float(v) for v in log_std)
    dt = _dtype(dtype, draw)
    mean = draw(hnp.arrays(np.float64, (b, dd), elements=st.floats(-10, 10))).astype(dt)
    share = draw(st.booleans()) if shared is None else bool(shared)
    ls = draw(hnp.arrays(np.float64, (dd,) if share else (b, dd), elements=st.floats(low, high)))
    ls = ls.astype(dt)
    return GaussianCase(mean, ls, np.exp(ls.astype(np.float64)))


def categorical_kl_reference(logits_p: Any, logits_q: Any) -> np.ndarray:
    """Row-wise KL between categoricals from logits, float64 (terms with p = 0 dropped)."""
    lp, lq = _log_softmax(np.asarray(logits_p)), _log_softmax(np.asarray(logits_q))
    p = np.exp(lp)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (lp - lq), 0.0)
    return np.asarray(np.sum(terms, axis=1))


def gaussian_kl_reference(mean_p: Any, log_std_p: Any, mean_q: Any, log_std_q: Any) -> np.ndarray:
    """Row-wise KL between diagonal Gaussians, float64, in the cancellation-free form."""
    mp, lp, mq, lq = (
        np.asarray(a, dtype=np.float64) for a in (mean_p, log_std_p, mean_q, log_std_q)
    )
    t = 2.0 * (lp - lq)
    delta = (mp - mq) * np.exp(-lq)
    terms = 0.5 * (np.expm1(t) - t + delta**2)
    return np.asarray(
        np.sum(np.broadcast_to(terms, np.broadcast_shapes(terms.shape, mp.shape)), axis=1)
    )


@st.composite
def categorical_pairs(
    draw: Any,
    batch: Any,
    k: Any,
    *,
    relation: Any = None,
    extremes: bool = False,
    dtype: Any = np.float64,
) -> DistributionPair:
    """Pairs of categorical batches (logits) that are ``equal``, ``near`` or ``far``.

    ``near`` moves every finite logit of ``p`` by at most ``1e-3``; ``far`` moves each by
    ``+-3`` (not all the same way in a row, so the change is not a shift) plus noise. Both
    keep ``p``'s mask, so the KL is finite.
    """
    relation = _choice(draw, relation, _RELATIONS, "relation")
    base = draw(logits(batch, k, extremes=extremes, dtype=dtype))
    p = base.logits
    b, kk = p.shape
    finite = np.isfinite(p)
    if relation == "equal":
        q = p.copy()
    else:
        size = 1e-3 if relation == "near" else 1.0
        noise = draw(hnp.arrays(np.float64, (b, kk), elements=st.floats(-size, size)))
        if relation == "far":
            signs = np.where(draw(hnp.arrays(np.bool_, (b, kk))), 3.0, -3.0)
            signs[:, 0] = 3.0
            if kk > 1:
                signs[:, -1] = -3.0
            noise = noise * 0.5 + signs
        q = np.where(finite, p.astype(np.float64) + noise, -np.inf).astype(p.dtype)
    return DistributionPair(p, q, categorical_kl_reference(p, q), relation)


@st.composite
def diag_gaussian_pairs(
    draw: Any,
    batch: Any,
    d: Any,
    *,
    relation: Any = None,
    log_std: Any = (-5.0, 2.0),
    dtype: Any = np.float64,
) -> DistributionPair:
    """Pairs of diagonal-Gaussian batches ``(mean, log_std)``: ``equal``, ``near`` or ``far``.

    ``near`` moves means by at most ``1e-3`` standard deviations and log_std by ``1e-3``;
    ``far`` makes every ``sigma_q <= sigma_p / e`` and moves the means by up to 3 ``sigma_p``,
    which makes :math:`\\mathrm{KL}(p\\|q) - \\mathrm{KL}(q\\|p) \\ge 1.6` per dimension.
    """
    relation = _choice(draw, relation, _RELATIONS, "relation")
    base = draw(diag_gaussians(batch, d, log_std=log_std, shared=False, dtype=dtype))
    mean, ls = base.mean, base.log_std
    dt = mean.dtype
    if relation == "equal":
        mean_q, ls_q = mean.copy(), ls.copy()
    else:
        size = 1e-3 if relation == "near" else 3.0
        dm = draw(hnp.arrays(np.float64, mean.shape, elements=st.floats(-size, size)))
        dl = draw(hnp.arrays(np.float64, ls.shape, elements=st.floats(-size, size)))
        mean_q = (mean + dm * base.std).astype(dt)
        ls_q = (
            (ls + dl).astype(dt) if relation == "near" else (ls - 1.0 - np.abs(dl) / 3).astype(dt)
        )
    p, q = (mean, ls), (mean_q, ls_q)
    return DistributionPair(p, q, gaussian_kl_reference(*p, *q), relation)


@st.composite
def trust_region_problems(
    draw: Any, n: Any, *, regime: Any = None, cond: Any = (1.0, 1e4), dtype: Any = np.float64
) -> TrustRegionProblem:
    r"""Trust-region subproblems with their exact solution, in a chosen ``regime``.

    - ``interior``: :math:`H \succ 0` and the Newton step strictly inside;
    - ``boundary``: :math:`H \succ 0`, the solution on the boundary with :math:`\mu > 0`;
    - ``negative_curvature``: :math:`H` indefinite, :math:`\mu > -\lambda_1`;
    - ``hard_case``: :math:`H` indefinite, ``g`` orthogonal to the eigenvector of
      :math:`\lambda_1` (so :math:`\mu = -\lambda_1` and the solution adds a multiple of
      that eigenvector; needs n >= 2: n = 1 is raised to 2).

    ``cond`` spans the eigenvalue magnitudes (with the limits of :func:`spd_matrices`);
    everything is built in the eigenbasis.
    """
    regime = _choice(draw, regime, _REGIMES, "regime")
    n = _size(draw, n, "n")
    if regime == "hard_case":
        n = max(n, 2)
    dt = _dtype(dtype, draw)
    low, high = _cond_range(cond)
    _check_cond((low, high), n, dt)
    if regime in ("interior", "boundary"):
        lam = np.sort(draw(_magnitudes(n, (low, high))))
    else:
        mags = draw(_magnitudes(n, (low, high)))
        if regime == "hard_case":  # lambda_1 simple: the other magnitudes at most 95% of it
            mags[1:] = np.minimum(mags[1:], 0.95 * mags[0])
        # the smallest eigenvalue is the most negative one: flip the largest magnitude
        # (and possibly more), keeping lambda_1 simple in the hard case
        n_negative = draw(st.integers(1, n - 1 if regime == "hard_case" else n))
        lam = np.sort(np.concatenate([-mags[:n_negative], mags[n_negative:]]))
    Q = draw(_rotation(n))
    g_eig = draw(hnp.arrays(np.float64, n, elements=st.floats(-1, 1)))
    scale = float(np.max(np.abs(lam)))
    if regime == "hard_case":
        g_eig[0] = 0.0
    elif regime == "negative_curvature":
        g_eig[0] = math.copysign(max(abs(g_eig[0]), 0.1), g_eig[0] if g_eig[0] else 1.0)
    assume(np.linalg.norm(g_eig) > 1e-3)
    if regime == "interior":
        mu = 0.0
        p_eig = -g_eig / lam
        radius = float(np.linalg.norm(p_eig)) * (1.0 + draw(st.floats(0.1, 10.0)))
    elif regime in ("boundary", "negative_curvature"):
        floor = 0.0 if regime == "boundary" else -float(lam[0])
        mu = floor + scale * draw(st.floats(1e-3, 10.0))
        p_eig = -g_eig / (lam + mu)
        radius = float(np.linalg.norm(p_eig))
    else:
        mu = -float(lam[0])
        p_eig = np.zeros(n)
        p_eig[1:] = -g_eig[1:] / (lam[1:] + mu)
        base = float(np.linalg.norm(p_eig))
        radius = max(base, 1e-3) * (1.0 + draw(st.floats(0.1, 2.0)))
        p_eig[0] = math.sqrt(radius**2 - base**2)
    value = float(g_eig @ p_eig + 0.5 * np.sum(lam * p_eig**2))
    H = (Q * lam) @ Q.T
    H = 0.5 * (H + H.T)
    return TrustRegionProblem(
        g=(Q @ g_eig).astype(dt),
        H=H.astype(dt),
        radius=radius,
        solution=Q @ p_eig,
        multiplier=float(mu),
        model_value=value,
        regime=regime,
        eigenvalues=lam,
        eigenvectors=Q,
    )


@st.composite
def line_search_problems(
    draw: Any,
    n: Any = 3,
    *,
    acceptable: Any = None,
    non_finite: bool = True,
    dtype: Any = np.float64,
) -> LineSearchProblem:
    r"""Backtracking line-search problems with a known first acceptable trial.

    ``shrink`` in ``[0.3, 0.95]``, ``max_backtracks`` in ``[0, 12]``, the limits
    :math:`t_f, t_c` log-uniform in :math:`[\rho^{K+2}, 2]`, and (with ``non_finite``) a
    drawn set of trials returning NaN. ``acceptable=True``/``False`` keeps only problems
    where some/no trial is acceptable.

    ``evaluate`` recognizes the :math:`k`-th trial point :math:`x_0 + \rho^k s` up to the
    rounding :func:`check_line_search_contract` allows (:math:`4 \epsilon (|x_0| + |s|)`
    in the dtype) and returns its values at exactly :math:`t = \rho^k`, so
    ``first_acceptable`` and ``non_finite_trials`` hold for a search computing in float32
    as in float64; problems whose trial points (or ``x0``) the dtype cannot tell apart
    are not drawn. Away from the trial points it is the smooth
    :math:`f_0 + a t (t_f - t)`, :math:`c_{\max} (t / t_c)^2` of :math:`t`, the
    projection of :math:`x - x_0` on :math:`s`.
    """
    n = _size(draw, n, "n")
    dt = _dtype(dtype, draw)
    shrink = draw(st.floats(0.3, 0.95))
    K = draw(st.integers(0, 12))
    low = math.log(shrink ** (K + 2))
    t_f = math.exp(draw(st.floats(low, math.log(2.0))))
    t_c = math.exp(draw(st.floats(low, math.log(2.0))))
    fractions = shrink ** np.arange(K + 1)
    for limit in (t_f, t_c):
        assume(np.min(np.abs(np.log(fractions) - math.log(limit))) > 1e-6)
    nan_trials = (
        tuple(sorted(set(draw(st.lists(st.integers(0, K), max_size=3))))) if non_finite else ()
    )
    first = next(
        (
            k
            for k in range(K + 1)
            if k not in nan_trials and fractions[k] <= t_c and fractions[k] < t_f
        ),
        None,
    )
    if acceptable is not None:
        assume((first is not None) == bool(acceptable))
    x0 = draw(hnp.arrays(np.float64, n, elements=st.floats(-10, 10))).astype(dt)
    s = draw(hnp.arrays(np.float64, n, elements=st.floats(-4, 4)))
    s[draw(st.integers(0, n - 1))] = draw(st.sampled_from([1.0, -1.0, 2.0, 0.5]))
    s = s.astype(dt)
    x0_64, s_64 = x0.astype(np.float64), s.astype(np.float64)
    ss = float(s_64 @ s_64)
    # a search in dt computes trial k as x0 + rho^k s only up to rounding, which can be
    # far more than a relative 1e-9 of t in float32 (rho^k itself rounds to float32), so
    # trials are recognized by their distance to the exact trial points, within the
    # rounding the contract allows; that needs the trial points (and x0, which is not a
    # trial) more than twice that apart, which only float32 with a small shrink^K can miss
    points = x0_64 + fractions[:, None] * s_64
    s_max = float(np.max(np.abs(s_64)))
    tol = 4 * float(np.finfo(dt).eps) * (float(np.max(np.abs(x0_64))) + s_max)
    assume(s_max * min(fractions[-1], float(np.min(-np.diff(fractions), initial=1.0))) > 2 * tol)
    cmax = 2.0 ** draw(st.integers(-6, 2))
    a = 2.0 ** draw(st.integers(-2, 4))
    f0 = draw(st.floats(-100, 100))
    # no trial's improvement is so small that rounding f0 + improvement could flip its sign
    improvements = a * fractions * (t_f - fractions)
    assume(np.min(np.abs(improvements)) > 1e-9 * (1.0 + abs(f0)))

    def evaluate(x: np.ndarray) -> tuple[float, float]:
        x = np.asarray(x, dtype=np.float64)
        distances = np.max(np.abs(points - x), axis=1)
        k = int(np.argmin(distances))
        if distances[k] <= tol:  # trial k: its exact fraction, as the oracle assumed
            if k in nan_trials:
                return math.nan, math.nan
            t = float(fractions[k])
        else:
            t = float((x - x0_64) @ s_64) / ss
        return f0 + a * t * (t_f - t), cmax * (t / t_c) ** 2

    return LineSearchProblem(
        evaluate=evaluate,
        x0=x0,
        full_step=s,
        expected_improvement=a * t_f,
        max_constraint=cmax,
        shrink=shrink,
        max_backtracks=K,
        first_acceptable=first,
        improvement_limit=t_f,
        constraint_limit=t_c,
        non_finite_trials=nan_trials,
    )
