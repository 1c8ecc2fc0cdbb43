"""``trustregion.minimize`` as a drop-in for ``scipy.optimize.minimize(method="trust-ncg")``.

The problem: an L2-regularized logistic regression on real data -- the daily prices of one
stock (Google, 2004-2008) that matplotlib ships as sample data -- asking whether tomorrow's
close is above today's from the last 20 daily returns, volume changes and ranges, and the
pairwise products of the last 8 returns.  (Markets being what they are, expect an
out-of-sample accuracy near 50%: the point here is the optimizer, not the forecast.)

The loss, its gradient and its Hessian-vector product are written in NumPy; the Hessian is
never formed.  The same call runs with scipy and with ``trustregion``; only the function
object changes.  Both solutions, the counts and the CPU times are printed.

Run:  python examples/minimize_logistic.py [--short] [--out DIR]
(``--short`` or ``TR_EXAMPLES_SHORT=1``: 3 timing repeats instead of 20.)
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import matplotlib
import numpy as np
import scipy.optimize

import trustregion as tr


def load_features(lags: int = 20, products: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Design matrix (with an intercept column) and 0/1 labels from matplotlib's goog.npz."""
    path = Path(matplotlib.get_data_path()) / "sample_data" / "goog.npz"
    prices = np.load(path)["price_data"]
    close = prices["adj_close"]
    returns = np.diff(np.log(close))
    volume = np.diff(np.log(prices["volume"].astype(float)))
    spread = ((prices["high"] - prices["low"]) / prices["close"])[1:]
    rows, labels = [], []
    for t in range(lags, len(returns) - 1):
        past = returns[t - lags + 1 : t + 1][::-1]          # most recent first
        quad = np.outer(past[:products], past[:products])[np.triu_indices(products)]
        rows.append(np.concatenate([past, volume[t - lags + 1 : t + 1][::-1],
                                    spread[t - lags + 1 : t + 1][::-1], quad]))
        labels.append(returns[t + 1] > 0.0)
    X = np.asarray(rows)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return np.column_stack([np.ones(len(X)), X]), np.asarray(labels, dtype=float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true",
                        default=os.environ.get("TR_EXAMPLES_SHORT") == "1")
    parser.add_argument("--out", type=Path, default=Path("."), help="unused (prints only)")
    args = parser.parse_args()
    repeats = 3 if args.short else 20

    X, y = load_features()
    n_train = int(0.75 * len(y))
    X_train, y_train, X_test, y_test = X[:n_train], y[:n_train], X[n_train:], y[n_train:]
    l2 = 1.0

    def loss(w):
        z = X_train @ w
        return float(np.sum(np.logaddexp(0.0, z) - y_train * z) + 0.5 * l2 * w[1:] @ w[1:])

    def grad(w):
        p = 1.0 / (1.0 + np.exp(-(X_train @ w)))
        g = X_train.T @ (p - y_train)
        g[1:] += l2 * w[1:]
        return g

    def hessp(w, v):                    # X^T diag(p (1 - p)) X v + l2 v, without the matrix
        p = 1.0 / (1.0 + np.exp(-(X_train @ w)))
        hv = X_train.T @ (p * (1.0 - p) * (X_train @ v))
        hv[1:] += l2 * v[1:]
        return hv

    w0 = np.zeros(X.shape[1])
    print(f"logistic regression: {n_train} training days, {len(y_test)} test days, "
          f"{X.shape[1]} coefficients, L2 = {l2}")
    results = {}
    for name, minimize in (("scipy.optimize.minimize", scipy.optimize.minimize),
                           ("trustregion.minimize", tr.minimize)):
        res = minimize(loss, w0, jac=grad, hessp=hessp, method="trust-ncg",
                       options={"gtol": 1e-6})
        times = []
        for _ in range(repeats):
            t = time.process_time()
            minimize(loss, w0, jac=grad, hessp=hessp, method="trust-ncg", options={"gtol": 1e-6})
            times.append(time.process_time() - t)
        results[name] = res
        print(f"{name:24s} status {res.status} ({res.message.splitlines()[0][:45]}), "
              f"loss {res.fun:.10f}, nit {res.nit}, nfev {res.nfev}, njev {res.njev}, "
              f"nhev {res.nhev}, median CPU time {np.median(times) * 1e3:.2f} ms")
    ours, ref = results["trustregion.minimize"], results["scipy.optimize.minimize"]
    print(f"max |x_trustregion - x_scipy| = {np.max(np.abs(ours.x - ref.x)):.2e}, "
          f"Hessian-vector products: {ours.nhev} vs {ref.nhev}")
    accuracy = np.mean((X_test @ ours.x > 0) == (y_test > 0.5))
    base = max(np.mean(y_test), 1 - np.mean(y_test))
    print(f"out-of-sample accuracy {accuracy:.3f} (always predicting the majority: {base:.3f})")


if __name__ == "__main__":
    main()
