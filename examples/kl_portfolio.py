"""A portfolio rebalanced under a KL budget per step, against SLSQP on the simplex.

A fund holds ``n`` assets with weights ``w`` on the probability simplex and maximizes an
entropy-regularized mean-variance utility

    U(w) = mu^T w - (gamma / 2) w^T Sigma w + tau H(w),    H(w) = -sum_i w_i log w_i

(the entropy term is a diversification bonus that keeps every weight positive).  Writing
``w = softmax(z)`` removes the simplex constraint; ``trustregion.divergence_ascent`` then
climbs ``U`` with each rebalancing step bounded by ``KL(w_k || w_{k+1}) <= delta`` -- the
TRPO step (natural gradient with the softmax Fisher metric ``diag(w) - w w^T``, scaled to
the KL budget, then a backtracking search on the true KL) on a problem that is not RL.

The same optimum is computed by scipy's SLSQP on ``w`` directly (bounds and an equality
constraint).  Both answers, their utilities and wall times are printed; the figure shows
the utility against the iterations and the KL spent per rebalancing step.

Run:  python examples/kl_portfolio.py [--short] [--out DIR]
(``--short`` or ``TR_EXAMPLES_SHORT=1``: 40 assets instead of 200.)
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy.optimize import minimize as scipy_minimize

import trustregion as tr


def make_market(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Expected returns and a covariance from a 3-factor model (annualized, made up)."""
    rng = np.random.default_rng(seed)
    loadings = rng.normal(0.0, 0.15, size=(n, 3))
    idiosyncratic = rng.uniform(0.10, 0.30, size=n) ** 2
    sigma = loadings @ loadings.T + np.diag(idiosyncratic)
    mu = 0.02 + loadings @ np.array([0.3, 0.1, 0.05]) + rng.normal(0.0, 0.02, size=n)
    return mu, sigma


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true",
                        default=os.environ.get("TR_EXAMPLES_SHORT") == "1")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the figure")
    args = parser.parse_args()
    n = 30 if args.short else 100
    gamma, tau, delta = 5.0, 0.01, 0.05
    mu, sigma = make_market(n)

    def utility_w(w):
        return float(mu @ w - 0.5 * gamma * w @ sigma @ w - tau * np.sum(w * np.log(w)))

    def softmax(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    # The objective, its gradient, the divergence and its Hessian in the logits z.
    def utility(z):
        return utility_w(softmax(z))

    def gradient(z):
        w = softmax(z)
        h = mu - gamma * sigma @ w - tau * (np.log(w) + 1.0)  # dU/dw
        return w * (h - w @ h)                                  # chain rule through softmax

    def kl(z_ref, z):
        p, q = softmax(z_ref), softmax(z)
        return float(p @ (np.log(p) - np.log(q)))

    def fisher_product(z_ref, u):                               # Hessian of KL(p_ref || .)
        p = softmax(z_ref)
        return p * u - p * (p @ u)

    trace: list[tuple[float, float]] = []

    def record(intermediate_result):
        trace.append((intermediate_result.fun, intermediate_result.divergence))

    z0 = np.zeros(n)                                            # start from equal weights
    # Warm-up: the first call in a process loads the Numba kernels from the disk cache.
    tr.divergence_ascent(utility, gradient, kl, fisher_product, z0, delta=delta, maxiter=1)
    t = time.process_time()
    res = tr.divergence_ascent(utility, gradient, kl, fisher_product, z0, delta=delta,
                               gtol=1e-8, maxiter=500, cg_iters=50, callback=record)
    time_ours = time.process_time() - t
    w_ours = softmax(res.x)

    # SLSQP on the weights: maximize U  <=>  minimize -U, sum(w) = 1, w >= 0.
    floor = 1e-12

    def neg_utility(w):
        w = np.maximum(w, floor)
        return -utility_w(w)

    def neg_gradient(w):
        w = np.maximum(w, floor)
        return -(mu - gamma * sigma @ w - tau * (np.log(w) + 1.0))

    t = time.process_time()
    ref = scipy_minimize(neg_utility, np.full(n, 1.0 / n), jac=neg_gradient, method="SLSQP",
                         bounds=[(floor, 1.0)] * n,
                         constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0,
                                       "jac": lambda w: np.ones_like(w)}],
                         options={"ftol": 1e-14, "maxiter": 1000})
    time_slsqp = time.process_time() - t
    w_slsqp = np.maximum(ref.x, floor) / np.maximum(ref.x, floor).sum()

    top = np.argsort(w_ours)[::-1][:5]
    print(f"{n} assets, gamma = {gamma}, tau = {tau}, KL budget per step delta = {delta}")
    print(f"divergence_ascent: status {res.status.name}, {res.nit} steps, {res.nfev} utility "
          f"evaluations, {res.nmp} Fisher products, {time_ours * 1e3:.1f} ms CPU")
    print(f"SLSQP:             success {ref.success}, {ref.nit} iterations, {ref.nfev} "
          f"evaluations, {time_slsqp * 1e3:.1f} ms CPU")
    print(f"utility: ours {utility_w(w_ours):.10f}, SLSQP {utility_w(w_slsqp):.10f}")
    print(f"max |w_ours - w_slsqp| = {np.max(np.abs(w_ours - w_slsqp)):.2e}")
    print("largest weights (ours / SLSQP): " + ", ".join(
        f"asset {i}: {w_ours[i]:.4f} / {w_slsqp[i]:.4f}" for i in top))
    print(f"largest KL of one step: {max(d for _, d in trace):.4f} (budget {delta})")

    fun, div = np.array(trace).T
    fig, (ax_u, ax_kl) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_u.plot(np.arange(1, len(fun) + 1), fun, "o-", ms=3, label="divergence_ascent")
    ax_u.axhline(utility_w(w_slsqp), color="C3", ls="--", label="SLSQP optimum")
    ax_u.set(xlabel="rebalancing step", ylabel="utility U(w)", title="utility per step")
    ax_kl.bar(np.arange(1, len(div) + 1), div, color="C0")
    ax_kl.axhline(delta, color="C3", lw=1, label=r"budget $\delta$")
    ax_kl.set(xlabel="rebalancing step", ylabel=r"KL$(w_k \| w_{k+1})$", yscale="log",
              title="KL spent per step")
    for ax in (ax_u, ax_kl):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / "kl_portfolio.png", dpi=110)
    print(f"figure: {args.out / 'kl_portfolio.png'}")


if __name__ == "__main__":
    main()
