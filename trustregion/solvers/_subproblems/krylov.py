r"""``trust-krylov``: GLTR, the subproblem solved in a Lanczos basis (Gould, Lucidi, Roma &
Toint, "Solving the trust-region subproblem using the Lanczos method", SIAM J. Optim. 9, 1999).

The Lanczos process started at :math:`q_1 = g / \|g\|` builds an orthonormal basis
:math:`Q_k` of the Krylov space :math:`\mathcal K_k(H, g)` and the tridiagonal
:math:`T_k = Q_k^T H Q_k` (one Hessian product per step). Restricted to that space the
subproblem is

.. math::  \min_{\|h\| \le \Delta}\; \|g\|\, h_1 + \tfrac12 h^T T_k h, \qquad p = Q_k h,

solved by :func:`~trustregion.solvers._subproblems.tridiagonal.tridiagonal_subproblem`.
While :math:`T_k` is positive definite and the minimizer is inside the region, it is the CG
iterate, updated from the :math:`LDL^T` factors of :math:`T_k` at :math:`O(n)` per step
(Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed., Algorithm 6.17); once the
region is left or :math:`T_k` stops being positive definite, the tridiagonal subproblem is
solved instead. The gradient of the Lagrangian at :math:`p` has norm
:math:`\beta_k |e_k^T h|`, which gives the stopping tests without forming it. With scipy's
default (``inexact=True``, trlib's ``tol_rel_i = -2``, ``tol_rel_b = -3``):

.. math::  \text{inside: } \beta_k |h_k| \le \min(\tfrac12, \|g\|)\,\|g\|, \qquad
    \text{on the boundary: } \beta_k |h_k| \le \max(10^{-6}, \min(\tfrac12, \|g\|^{1/2}))\,\|g\|;

with ``inexact=False``, :math:`10^{-8}\|g\|` and :math:`10^{-6}\|g\|`.

The basis is kept: a retry with a smaller radius after a rejected step (trlib's hot start)
solves the tridiagonal subproblem again and only extends the basis if that is not accurate
enough, usually at no Hessian product. The basis is fully reorthogonalized, so it stays
orthonormal and has at most :math:`n` vectors.

Hard case: when the Lanczos process breaks down (:math:`\beta_k \approx 0`, the Krylov space
is invariant) before :math:`n` vectors and the solution is on the boundary, the space of
:math:`g` may miss the eigenvector of the smallest eigenvalue. The process then continues
from a (seeded) random vector orthogonal to the basis; :math:`T` becomes block diagonal and
the tridiagonal solver completes the step along that eigenvector when the gradient has no
component there (the hard case, which plain GLTR and scipy's trlib leave unresolved).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.linalg import eigh_tridiagonal

from trustregion.core.status import Status
from trustregion.solvers._subproblems import Step, failed
from trustregion.solvers._subproblems.tridiagonal import tridiagonal_subproblem

_EPS = float(np.finfo(float).eps)


class KrylovModel:
    """The model at one point, matrix-free: ``hessp(v) -> H v`` (already checked for shape
    and dtype by the caller; non-finite output is a status)."""

    def __init__(
        self,
        hessp: Callable[[np.ndarray], np.ndarray],
        g: np.ndarray,
        *,
        inexact: bool = True,
        seed: int = 0,
    ) -> None:
        n = g.shape[0]
        self.hessp, self.g, self.n = hessp, g, n
        self.gamma = float(np.linalg.norm(g))
        gamma = self.gamma
        if inexact:
            self.tol_interior = min(0.5, gamma) * gamma
            self.tol_boundary = max(1e-6, min(0.5, np.sqrt(gamma))) * gamma
        else:
            self.tol_interior = 1e-8 * gamma
            self.tol_boundary = 1e-6 * gamma
        self.maxdim = 2 * n  # as trlib in scipy: CG without reorthogonalization may need > n
        self.Q = np.empty((self.maxdim + 1, n))  # rows: the Lanczos vectors
        self.Q[0] = g / gamma
        self.k = 0  # T is k x k
        self.diag: list[float] = []
        self.off: list[float] = []  # off[j] couples q_j and q_{j+1}; 0 between blocks
        self._rng = np.random.default_rng(seed)
        # CG on H s = -g, from which T is read off while CG is defined (trlib's scheme)
        self.cg_active = True
        self.positive_definite = True
        self.s = np.zeros(n)
        self.s_norm = 0.0
        self._r = g.copy()
        self._rr = gamma * gamma
        self._p = -g
        self._sigma = 1.0
        self._alpha_prev = 1.0
        self._beta_prev = 0.0
        self.residual = gamma  # ||g + H s|| of the CG iterate
        self.invariant = False  # the last block spans an invariant subspace
        self.nonfinite = False
        self.probed = False  # a block from a random start was added (the hard case)
        self._probe_start = 0
        self._probe_theta = np.inf

    def _product(self, v: np.ndarray) -> np.ndarray | None:
        w = self.hessp(v)
        if not np.all(np.isfinite(w)):
            self.nonfinite = True
            return None
        return w

    def _extend(self) -> bool:
        """One more row of T (one Hessian product). False if no step is possible."""
        if self.k >= self.maxdim or self.invariant:
            return False
        if self.cg_active:
            return self._cg_step()
        return self._lanczos_step()

    def _cg_step(self) -> bool:
        r"""A CG step; T gains :math:`\delta_j = 1/\alpha_j + \beta_{j-1}/\alpha_{j-1}` and
        :math:`\sqrt{\beta_j}/|\alpha_j|`, with :math:`q_j = \pm r_j/\|r_j\|` (Saad,
        section 6.7.3; the signs follow the curvature, as in trlib)."""
        p = self._p
        Hp = self._product(p)
        if Hp is None:
            return False
        curvature = float(p @ Hp)
        if abs(curvature) <= _EPS * float(p @ p) * max(abs(x) for x in (*self.diag, 1.0)):
            # p^T H p ~ 0: CG breaks down; continue with Lanczos from q_k (trlib's switch)
            self.cg_active = False
            return self._lanczos_step()
        j = self.k
        alpha = self._rr / curvature
        delta = 1.0 / alpha + (self._beta_prev / self._alpha_prev if j > 0 else 0.0)
        self.diag.append(delta)
        self.k = j + 1
        if alpha <= 0.0:
            self.positive_definite = False
        if self.positive_definite:
            self.s = self.s + alpha * p
            self.s_norm = float(np.linalg.norm(self.s))
        r = self._r + alpha * Hp
        # keep the residuals (the Lanczos vectors) orthogonal: without it, on an
        # ill-conditioned H, CG loses orthogonality and needs many more products
        basis = self.Q[: self.k]
        r -= basis.T @ (basis @ r)
        rr = float(r @ r)
        beta = rr / self._rr
        r_norm = np.sqrt(rr)
        if self.positive_definite:
            self.residual = r_norm
        if r_norm <= 10.0 * self.n * _EPS * max(self.gamma, np.sqrt(self._rr)):
            self.invariant = True
            self.off.append(0.0)
            return True
        self.off.append(np.sqrt(beta) / abs(alpha))
        self._sigma = -np.copysign(1.0, alpha) * self._sigma
        self.Q[self.k] = (self._sigma / r_norm) * r
        self._p = -r + beta * p
        self._r, self._rr = r, rr
        self._alpha_prev, self._beta_prev = alpha, beta
        return True

    def _lanczos_step(self) -> bool:
        """A Lanczos step from q_k, reorthogonalized against the basis."""
        k = self.k
        q = self.Q[k]
        w = self._product(q)
        if w is None:
            return False
        delta = float(q @ w)
        w = w - delta * q
        if k > 0 and self.off[k - 1] != 0.0:
            w -= self.off[k - 1] * self.Q[k - 1]
        basis = self.Q[: k + 1]
        for _ in range(2):  # "twice is enough" (Parlett)
            w -= basis.T @ (basis @ w)
        beta = float(np.linalg.norm(w))
        self.diag.append(delta)
        self.k = k + 1
        scale = max(abs(x) for x in (*self.diag, *self.off, 0.0))
        if beta <= 10.0 * self.n * _EPS * scale:
            self.invariant = True
            self.off.append(0.0)
            return True
        self.invariant = False
        self.off.append(beta)
        self.Q[self.k] = w / beta
        return True

    def _restart(self) -> bool:
        """Continue the basis from a random vector orthogonal to it (a new block of T)."""
        k = self.k
        if k >= min(self.n, self.maxdim):
            return False
        v: np.ndarray = self._rng.standard_normal(size=(self.n,))
        basis = self.Q[:k]
        for _ in range(2):
            v -= basis.T @ (basis @ v)
        norm = float(np.linalg.norm(v))
        if norm <= np.sqrt(_EPS):
            return False
        self.Q[k] = v / norm
        self.off[k - 1] = 0.0  # a new block: T is reducible here
        self._probe_start = k
        self._probe_theta = np.inf
        self.cg_active = False  # the CG iterate stays the solution of the first block
        self.invariant = False
        return True

    def _tridiagonal(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array(self.diag), np.array(self.off[: self.k - 1])

    def _step_from(self, h: np.ndarray, hits_boundary: bool) -> Step:
        diag, off = self._tridiagonal()
        model = self.gamma * h[0] + 0.5 * float(diag @ (h * h) + 2.0 * (off @ (h[:-1] * h[1:])))
        return Step(self.Q[: self.k].T @ h, hits_boundary, -model)

    def _probe_settled(self, hard_case: bool) -> bool:
        """Whether the probe block (if any) has shown what it can: the hard case (then the
        Lagrangian test decides), or a smallest Ritz value that no longer moves (Lanczos
        finds the extreme eigenvalues of the rest of the space first)."""
        if not self.probed or hard_case:
            return True
        start = self._probe_start
        theta = float(
            eigh_tridiagonal(
                np.array(self.diag[start:]),
                np.array(self.off[start : self.k - 1]),
                eigvals_only=True,
                select="i",
                select_range=(0, 0),
                check_finite=False,
            )[0]
        )
        previous, self._probe_theta = self._probe_theta, theta
        return abs(theta - previous) <= 1e-3 * max(1.0, abs(theta))

    def _reducible(self) -> bool:
        """Whether the space built so far is invariant up to rounding: T's last coupling is
        below sqrt(eps) of its scale (an exact breakdown, or one that rounding hides)."""
        if self.invariant:
            return True
        scale = max(max(abs(x) for x in self.diag), max(self.off[:-1], default=0.0))
        return self.off[self.k - 1] <= np.sqrt(_EPS) * scale

    def solve(self, radius: float) -> Step:
        while True:
            if self.k > 0:
                reducible = self._reducible()
                if self.cg_active and self.positive_definite and self.s_norm < radius:
                    # An invariant space of g could miss a negative eigenvalue elsewhere (the
                    # hard case, where the solution is on the boundary): probe once.
                    converged = self.residual <= self.tol_interior and not reducible
                    if converged or (reducible and (self.probed or not self._restart())):
                        # the CG iterate: m(s) = g^T s / 2 when T h = -gamma e_1
                        return Step(self.s.copy(), False, -0.5 * float(self.g @ self.s))
                    self.probed = self.probed or not self.cg_active  # restarted just now
                else:
                    diag, off = self._tridiagonal()
                    sol = tridiagonal_subproblem(diag, off, self.gamma, radius)
                    if reducible:
                        # exact in an invariant space; on the boundary the rest of the space
                        # may hold the eigenvector of the hard case: probe it with a new block,
                        # continued only while it shows the hard case
                        if (
                            sol.interior
                            or (self.probed and not sol.hard_case)
                            or not self._restart()
                        ):
                            return self._step_from(sol.h, not sol.interior)
                        self.probed = True
                    else:
                        lagrangian = self.off[self.k - 1] * abs(sol.h[-1])
                        tol = self.tol_interior if sol.interior else self.tol_boundary
                        if lagrangian <= tol and self._probe_settled(sol.hard_case):
                            return self._step_from(sol.h, not sol.interior)
            if not self._extend():
                if self.nonfinite:
                    return failed(self.n, Status.NON_FINITE, "hessp/hess")
                diag, off = self._tridiagonal()
                sol = tridiagonal_subproblem(diag, off, self.gamma, radius)
                return self._step_from(sol.h, not sol.interior)
