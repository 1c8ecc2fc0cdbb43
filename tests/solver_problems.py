"""Test problems for the solvers: the unconstrained set and a softmax regression.

Shared by ``tests/test_solvers_*.py`` and ``benchmarks/bench_solvers.py`` (which puts
``tests/`` on ``sys.path``): one copy of each.

Each :class:`Problem` gives ``fun``, ``grad``, the dense Hessian ``hess`` and the
Hessian-vector product ``hessp(x, p)`` (analytic, never a finite difference), a start
``x0``, the minimizer ``x_star`` that a trust-region Newton method reaches from ``x0`` and
the tolerance ``x_tol`` within which a run stopped by ``gtol`` is expected to be near it
(problems whose Hessian is singular at the minimizer converge only linearly, so the
tolerance is looser there). ``options`` are the solver options the problem needs (the same
for every solver compared). Most sources: Moré, Garbow & Hillstrom, "Testing unconstrained
optimization software", ACM TOMS 7 (1981); the rest are standard closed-form functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import rosen, rosen_der, rosen_hess, rosen_hess_prod

Vector = np.ndarray


@dataclass(frozen=True, eq=False)
class Problem:
    name: str
    fun: Callable[[Vector], float]
    grad: Callable[[Vector], Vector]
    hess: Callable[[Vector], np.ndarray]
    hessp: Callable[[Vector, Vector], Vector]
    x0: Vector
    x_star: Vector
    x_tol: float = 1e-4
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def n(self) -> int:
        return self.x0.shape[0]


def _dense_hessp(hess: Callable[[Vector], np.ndarray]) -> Callable[[Vector, Vector], Vector]:
    return lambda x, p: hess(x) @ p


# --- Rosenbrock family ----------------------------------------------------------------------


def _rosenbrock(n: int, x0: Vector, name: str) -> Problem:
    return Problem(
        name=name,
        fun=rosen,
        grad=rosen_der,
        hess=rosen_hess,
        hessp=rosen_hess_prod,
        x0=x0,
        x_star=np.ones(n),
        note="chained Rosenbrock (scipy.optimize.rosen)",
    )


def _extended_rosenbrock(n: int) -> Problem:
    """Sum of independent 2-D Rosenbrock blocks (MGH problem 21)."""

    def fun(x: Vector) -> float:
        a, b = x[0::2], x[1::2]
        return float(np.sum(100.0 * (b - a**2) ** 2 + (1.0 - a) ** 2))

    def grad(x: Vector) -> Vector:
        a, b = x[0::2], x[1::2]
        g = np.empty_like(x)
        g[0::2] = -400.0 * a * (b - a**2) - 2.0 * (1.0 - a)
        g[1::2] = 200.0 * (b - a**2)
        return g

    def hess(x: Vector) -> np.ndarray:
        a, b = x[0::2], x[1::2]
        H = np.zeros((n, n))
        i = np.arange(0, n, 2)
        H[i, i] = 1200.0 * a**2 - 400.0 * b + 2.0
        H[i, i + 1] = H[i + 1, i] = -400.0 * a
        H[i + 1, i + 1] = 200.0
        return H

    def hessp(x: Vector, p: Vector) -> Vector:
        a, b = x[0::2], x[1::2]
        pa, pb = p[0::2], p[1::2]
        out = np.empty_like(p)
        out[0::2] = (1200.0 * a**2 - 400.0 * b + 2.0) * pa - 400.0 * a * pb
        out[1::2] = -400.0 * a * pa + 200.0 * pb
        return out

    return Problem(
        name=f"rosenbrock_extended_{n}",
        fun=fun,
        grad=grad,
        hess=hess,
        hessp=hessp,
        x0=np.tile([-1.2, 1.0], n // 2),
        x_star=np.ones(n),
        note="n/2 independent Rosenbrock blocks (MGH 21)",
    )


def _scaled_rosenbrock() -> Problem:
    """Rosenbrock in badly scaled variables: f(x) = rosen(D x), D = diag(1e-3, 1e3)."""
    D = np.array([1e-3, 1e3])
    return Problem(
        name="rosenbrock_scaled_2",
        fun=lambda x: float(rosen(D * x)),
        grad=lambda x: D * rosen_der(D * x),
        hess=lambda x: D[:, None] * rosen_hess(D * x) * D[None, :],
        hessp=lambda x, p: D * rosen_hess_prod(D * x, D * p),
        x0=np.array([-1.2e3, 1e-3]),
        x_star=1.0 / D,
        x_tol=1e-3,
        options={"max_trust_radius": 1e6},
        note="rosen(D x), D = diag(1e-3, 1e3): Hessian entries span 12 decades",
    )


# --- quadratics -----------------------------------------------------------------------------


def _quadratic(name: str, A: np.ndarray, x_star: Vector, x0: Vector, note: str) -> Problem:
    return Problem(
        name=name,
        fun=lambda x: float(0.5 * (x - x_star) @ A @ (x - x_star)),
        grad=lambda x: A @ (x - x_star),
        hess=lambda x: A,
        hessp=lambda x, p: A @ p,
        x0=x0,
        x_star=x_star,
        note=note,
    )


def _random_spd(n: int, cond: float, rng: np.random.Generator) -> np.ndarray:
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (Q * np.logspace(0.0, np.log10(cond), n)) @ Q.T


def _trid(n: int) -> Problem:
    """Trid function: f = sum (x_i - 1)^2 - sum x_i x_{i-1}, minimizer x_i = i (n + 1 - i)."""
    A = 2.0 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1)
    i = np.arange(1, n + 1)

    def fun(x: Vector) -> float:
        return float(np.sum((x - 1.0) ** 2) - np.sum(x[1:] * x[:-1]))

    return Problem(
        name=f"trid_{n}",
        fun=fun,
        grad=lambda x: A @ x - 2.0,
        hess=lambda x: A,
        hessp=lambda x, p: A @ p,
        x0=np.zeros(n),
        x_star=(i * (n + 1 - i)).astype(float),
        note="quadratic, tridiagonal Hessian, cond ~ n^2",
    )


# --- classic small problems -----------------------------------------------------------------


def _beale() -> Problem:
    y = np.array([1.5, 2.25, 2.625])
    k = np.arange(1, 4)

    def residuals(x: Vector) -> tuple[Vector, Vector, Vector]:
        x1, x2 = x
        r = y - x1 * (1.0 - x2**k)
        dr1 = -(1.0 - x2**k)
        dr2 = x1 * k * x2 ** (k - 1)
        return r, dr1, dr2

    def fun(x: Vector) -> float:
        return float(np.sum(residuals(x)[0] ** 2))

    def grad(x: Vector) -> Vector:
        r, dr1, dr2 = residuals(x)
        return 2.0 * np.array([r @ dr1, r @ dr2])

    def hess(x: Vector) -> np.ndarray:
        x1, x2 = x
        r, dr1, dr2 = residuals(x)
        d12 = k * x2 ** (k - 1)  # d^2 r / dx1 dx2
        d22 = x1 * k * (k - 1) * x2 ** np.maximum(k - 2, 0)
        return 2.0 * np.array(
            [
                [dr1 @ dr1, dr1 @ dr2 + r @ d12],
                [dr1 @ dr2 + r @ d12, dr2 @ dr2 + r @ d22],
            ]
        )

    return Problem(
        name="beale",
        fun=fun,
        grad=grad,
        hess=hess,
        hessp=_dense_hessp(hess),
        x0=np.array([1.0, 1.0]),
        x_star=np.array([3.0, 0.5]),
        note="MGH 5",
    )


def _wood() -> Problem:
    def fun(x: Vector) -> float:
        x1, x2, x3, x4 = x
        return float(
            100 * (x2 - x1**2) ** 2
            + (1 - x1) ** 2
            + 90 * (x4 - x3**2) ** 2
            + (1 - x3) ** 2
            + 10.1 * ((x2 - 1) ** 2 + (x4 - 1) ** 2)
            + 19.8 * (x2 - 1) * (x4 - 1)
        )

    def grad(x: Vector) -> Vector:
        x1, x2, x3, x4 = x
        return np.array(
            [
                -400 * x1 * (x2 - x1**2) - 2 * (1 - x1),
                200 * (x2 - x1**2) + 20.2 * (x2 - 1) + 19.8 * (x4 - 1),
                -360 * x3 * (x4 - x3**2) - 2 * (1 - x3),
                180 * (x4 - x3**2) + 20.2 * (x4 - 1) + 19.8 * (x2 - 1),
            ]
        )

    def hess(x: Vector) -> np.ndarray:
        x1, x2, x3, x4 = x
        return np.array(
            [
                [1200 * x1**2 - 400 * x2 + 2, -400 * x1, 0.0, 0.0],
                [-400 * x1, 220.2, 0.0, 19.8],
                [0.0, 0.0, 1080 * x3**2 - 360 * x4 + 2, -360 * x3],
                [0.0, 19.8, -360 * x3, 200.2],
            ]
        )

    return Problem(
        name="wood",
        fun=fun,
        grad=grad,
        hess=hess,
        hessp=_dense_hessp(hess),
        x0=np.array([-3.0, -1.0, -3.0, -1.0]),
        x_star=np.ones(4),
        note="MGH 14",
    )


def _powell_singular() -> Problem:
    def fun(x: Vector) -> float:
        x1, x2, x3, x4 = x
        return float(
            (x1 + 10 * x2) ** 2 + 5 * (x3 - x4) ** 2 + (x2 - 2 * x3) ** 4 + 10 * (x1 - x4) ** 4
        )

    def grad(x: Vector) -> Vector:
        x1, x2, x3, x4 = x
        a, b, c, d = x1 + 10 * x2, x3 - x4, x2 - 2 * x3, x1 - x4
        return np.array(
            [
                2 * a + 40 * d**3,
                20 * a + 4 * c**3,
                10 * b - 8 * c**3,
                -10 * b - 40 * d**3,
            ]
        )

    def hess(x: Vector) -> np.ndarray:
        x1, x2, x3, x4 = x
        c2, d2 = 12 * (x2 - 2 * x3) ** 2, 120 * (x1 - x4) ** 2
        return np.array(
            [
                [2 + d2, 20, 0, -d2],
                [20, 200 + c2, -2 * c2, 0],
                [0, -2 * c2, 10 + 4 * c2, -10],
                [-d2, 0, -10, 10 + d2],
            ],
            dtype=float,
        )

    return Problem(
        name="powell_singular",
        fun=fun,
        grad=grad,
        hess=hess,
        hessp=_dense_hessp(hess),
        x0=np.array([3.0, -1.0, 0.0, 1.0]),
        x_star=np.zeros(4),
        x_tol=1e-2,
        options={"gtol": 1e-8},
        note="MGH 13; Hessian singular at the minimizer (linear convergence)",
    )


def _brown_badly_scaled() -> Problem:
    def fun(x: Vector) -> float:
        x1, x2 = x
        return float((x1 - 1e6) ** 2 + (x2 - 2e-6) ** 2 + (x1 * x2 - 2) ** 2)

    def grad(x: Vector) -> Vector:
        x1, x2 = x
        t = x1 * x2 - 2
        return np.array([2 * (x1 - 1e6) + 2 * t * x2, 2 * (x2 - 2e-6) + 2 * t * x1])

    def hess(x: Vector) -> np.ndarray:
        x1, x2 = x
        t = x1 * x2 - 2
        return np.array(
            [[2 + 2 * x2**2, 2 * t + 2 * x1 * x2], [2 * t + 2 * x1 * x2, 2 + 2 * x1**2]]
        )

    return Problem(
        name="brown_badly_scaled",
        fun=fun,
        grad=grad,
        hess=hess,
        hessp=_dense_hessp(hess),
        x0=np.array([1.0, 1.0]),
        x_star=np.array([1e6, 2e-6]),
        x_tol=1e-6,
        options={"max_trust_radius": 1e8},
        note="MGH 4; solution components 12 decades apart",
    )


def _dixon_price(n: int) -> Problem:
    """f = (x1 - 1)^2 + sum_{i>=2} i (2 x_i^2 - x_{i-1})^2."""
    i = np.arange(2, n + 1)

    def fun(x: Vector) -> float:
        return float((x[0] - 1) ** 2 + np.sum(i * (2 * x[1:] ** 2 - x[:-1]) ** 2))

    def grad(x: Vector) -> Vector:
        t = 2 * x[1:] ** 2 - x[:-1]
        g = np.zeros(n)
        g[0] = 2 * (x[0] - 1)
        g[1:] += 8 * i * t * x[1:]
        g[:-1] += -2 * i * t
        return g

    def hess(x: Vector) -> np.ndarray:
        t = 2 * x[1:] ** 2 - x[:-1]
        H = np.zeros((n, n))
        H[0, 0] = 2.0
        j = np.arange(1, n)
        H[j, j] += 8 * i * (t + 4 * x[1:] ** 2)
        H[j - 1, j - 1] += 2 * i
        H[j, j - 1] = H[j - 1, j] = -8 * i * x[1:]
        return H

    x_star = 2.0 ** (-(2.0 ** np.arange(1, n + 1) - 2) / 2.0 ** np.arange(1, n + 1))
    return Problem(
        name=f"dixon_price_{n}",
        fun=fun,
        grad=grad,
        hess=hess,
        hessp=_dense_hessp(hess),
        x0=np.ones(n),
        x_star=x_star,
        note="minimizer x_i = 2^(-(2^i - 2) / 2^i) (the all-positive one)",
    )


def _zakharov(n: int) -> Problem:
    """f = |x|^2 + s^2 + s^4 with s = sum 0.5 i x_i: convex, minimizer 0."""
    w = 0.5 * np.arange(1, n + 1)

    def fun(x: Vector) -> float:
        s = w @ x
        return float(x @ x + s**2 + s**4)

    def grad(x: Vector) -> Vector:
        s = w @ x
        return 2 * x + (2 * s + 4 * s**3) * w

    def hess(x: Vector) -> np.ndarray:
        s = w @ x
        return 2 * np.eye(n) + (2 + 12 * s**2) * np.outer(w, w)

    def hessp(x: Vector, p: Vector) -> Vector:
        s = w @ x
        return 2 * p + (2 + 12 * s**2) * (w @ p) * w

    return Problem(
        name=f"zakharov_{n}",
        fun=fun,
        grad=grad,
        hess=hess,
        hessp=hessp,
        x0=np.ones(n),
        x_star=np.zeros(n),
        note="convex quartic along one direction",
    )


def _styblinski_tang(n: int) -> Problem:
    """f = 1/2 sum (x^4 - 16 x^2 + 5 x); from 0 the Hessian is negative definite."""
    root = np.roots([4.0, 0.0, -32.0, 5.0])
    x_min = float(np.min(root.real))  # the global minimizer of each coordinate, ~ -2.9035

    return Problem(
        name=f"styblinski_tang_{n}",
        fun=lambda x: float(0.5 * np.sum(x**4 - 16 * x**2 + 5 * x)),
        grad=lambda x: 0.5 * (4 * x**3 - 32 * x + 5),
        hess=lambda x: np.diag(0.5 * (12 * x**2 - 32)),
        hessp=lambda x, p: 0.5 * (12 * x**2 - 32) * p,
        x0=np.zeros(n),
        x_star=np.full(n, x_min),
        note="negative curvature at x0: the first step follows it to the boundary",
    )


def _himmelblau() -> Problem:
    def fun(x: Vector) -> float:
        a, b = x
        return float((a**2 + b - 11) ** 2 + (a + b**2 - 7) ** 2)

    def grad(x: Vector) -> Vector:
        a, b = x
        u, v = a**2 + b - 11, a + b**2 - 7
        return np.array([4 * a * u + 2 * v, 2 * u + 4 * b * v])

    def hess(x: Vector) -> np.ndarray:
        a, b = x
        u, v = a**2 + b - 11, a + b**2 - 7
        return np.array(
            [[8 * a**2 + 4 * u + 2, 4 * a + 4 * b], [4 * a + 4 * b, 8 * b**2 + 4 * v + 2]]
        )

    return Problem(
        name="himmelblau",
        fun=fun,
        grad=grad,
        hess=hess,
        hessp=_dense_hessp(hess),
        x0=np.array([0.0, 0.0]),
        x_star=np.array([3.0, 2.0]),
        note="four minimizers; indefinite Hessian at x0",
    )


def _logcosh_least_squares(n: int, rng: np.random.Generator) -> Problem:
    """f = 1/2 |A (x - c)|^2 + sum log cosh(x - c): convex, non-quadratic, minimizer c."""
    A = rng.standard_normal((2 * n, n)) * np.logspace(0, 2, n)
    c = rng.standard_normal(n)

    def fun(x: Vector) -> float:
        e = x - c
        return float(0.5 * np.sum((A @ e) ** 2) + np.sum(np.logaddexp(e, -e) - np.log(2.0)))

    def grad(x: Vector) -> Vector:
        e = x - c
        return A.T @ (A @ e) + np.tanh(e)

    def hess(x: Vector) -> np.ndarray:
        return A.T @ A + np.diag(1.0 / np.cosh(x - c) ** 2)

    def hessp(x: Vector, p: Vector) -> Vector:
        return A.T @ (A @ p) + p / np.cosh(x - c) ** 2

    return Problem(
        name=f"logcosh_least_squares_{n}",
        fun=fun,
        grad=grad,
        hess=hess,
        hessp=hessp,
        x0=np.zeros(n),
        x_star=c,
        note="convex, column scales 1..100",
    )


def make_problems() -> list[Problem]:
    """The test set, built fresh (deterministic: fixed seeds)."""
    rng = np.random.default_rng(20240605)
    problems = [
        _rosenbrock(2, np.array([-1.2, 1.0]), "rosenbrock_2"),
        _rosenbrock(5, np.full(5, 0.5), "rosenbrock_5"),
        _rosenbrock(20, np.full(20, 0.5), "rosenbrock_20"),
        _extended_rosenbrock(10),
        _scaled_rosenbrock(),
    ]
    A10 = _random_spd(10, 10.0, rng)
    problems.append(
        _quadratic("quadratic_10", A10, rng.standard_normal(10), np.zeros(10), "cond 10, dense")
    )
    A30 = _random_spd(30, 1e6, rng)
    problems.append(
        _quadratic(
            "quadratic_ill_30", A30, rng.standard_normal(30), np.zeros(30), "cond 1e6, dense"
        )
    )
    d20 = np.logspace(-4, 4, 20)
    problems.append(
        _quadratic(
            "quadratic_diag_scaled_20",
            np.diag(d20),
            1.0 / np.sqrt(d20),
            np.zeros(20),
            "diagonal, eigenvalues 1e-4..1e4",
        )
    )
    problems += [
        _trid(10),
        _beale(),
        _wood(),
        _powell_singular(),
        _brown_badly_scaled(),
        _dixon_price(10),
        _zakharov(5),
        _styblinski_tang(5),
        _himmelblau(),
        _logcosh_least_squares(20, rng),
    ]
    return problems


def scipy_examples() -> list[Problem]:
    """scipy's own examples for its trust-region methods: the tutorial's 5-D Rosenbrock start
    (``x0 = [1.3, 0.7, 0.8, 1.9, 1.2]``, used for every method in scipy's tutorial) and a
    100-D Rosenbrock from 0."""
    return [
        _rosenbrock(5, np.array([1.3, 0.7, 0.8, 1.9, 1.2]), "scipy_tutorial_rosen_5"),
        _rosenbrock(100, np.zeros(100), "rosen_100_from_0"),
    ]


# --- maximum likelihood under a KL trust region (divergence_ascent) ---------------------


class SoftmaxRegression:
    """p(y | x) = softmax(x^T W), class 0 as reference (W[:, 0] = 0) so the MLE is unique.

    ``theta`` is W[:, 1:] flattened. The KL divergence is the mean over the data of
    KL(p(. | x_i; theta_ref) || p(. | x_i; theta)); its Hessian at theta_ref is the Fisher
    matrix, which for this canonical exponential family equals the negative Hessian of the
    mean log-likelihood.
    """

    def __init__(self, n_samples=300, n_features=4, n_classes=4, seed=0):
        rng = np.random.default_rng(seed)
        self.X = np.hstack([rng.standard_normal((n_samples, n_features)), np.ones((n_samples, 1))])
        logits = self.X @ rng.standard_normal((n_features + 1, n_classes))
        P = np.exp(logits - logits.max(1, keepdims=True))
        P /= P.sum(1, keepdims=True)
        y = np.array([rng.choice(n_classes, p=p) for p in P])
        self.Y = np.eye(n_classes)[y]
        self.K = n_classes
        self.dim = (n_features + 1) * (n_classes - 1)

    def weights(self, theta):
        return np.hstack([np.zeros((self.X.shape[1], 1)), theta.reshape(self.X.shape[1], -1)])

    def log_probs(self, theta):
        Z = self.X @ self.weights(theta)
        Z -= Z.max(1, keepdims=True)
        return Z - np.log(np.exp(Z).sum(1, keepdims=True))

    def loglik(self, theta):
        return float(np.sum(self.Y * self.log_probs(theta)) / len(self.X))

    def grad(self, theta):
        P = np.exp(self.log_probs(theta))
        return (self.X.T @ (self.Y - P))[:, 1:].ravel() / len(self.X)

    def kl(self, theta_ref, theta):
        lp_ref, lp = self.log_probs(theta_ref), self.log_probs(theta)
        return float(np.sum(np.exp(lp_ref) * (lp_ref - lp)) / len(self.X))

    def fisher_product(self, theta_ref, u):
        P = np.exp(self.log_probs(theta_ref))
        U = self.X @ self.weights(u)
        T = P * U - P * np.sum(P * U, 1, keepdims=True)
        return (self.X.T @ T)[:, 1:].ravel() / len(self.X)
