"""trustregion's solvers against scipy, same problems, same process.

1. ``trustregion.minimize`` (trust-ncg, and the preconditioned variant) against
   ``scipy.optimize.minimize`` with ``method="trust-ncg"`` and ``"trust-krylov"`` on the
   18-problem set of ``tests/solver_problems.py``: iterations, function evaluations,
   Hessian-vector products (one counting ``hessp`` for every solver) and wall time.
2. ``trustregion.divergence_ascent`` (natural gradient, KL trust region) against scipy's
   L-BFGS-B on softmax-regression maximum likelihood.
3. ``trustregion.cpo_step`` against SLSQP on random problems with an explicit ``H``, per case.

Time per solve: CPU time of this process (``time.process_time``, which other jobs on a shared
machine do not inflate the way they inflate wall time), each solve repeated in batches of at
least ~20 ms, ``--repeats`` batches per solver interleaved between the solvers compared, the
fastest batch kept.
Ratios are ours / scipy's, measured in the same process.

Run:  .venv/bin/python benchmarks/bench_solvers.py [--repeats 5] \
          [--write docs/benchmarks/solvers.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy
from scipy.optimize import minimize as scipy_minimize

import trustregion as tr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from solver_problems import Problem, SoftmaxRegression, make_problems, scipy_examples


def time_per_call(
    fns: dict[str, Callable[[], Any]], repeats: int, batch_seconds: float = 0.02
) -> dict[str, float]:
    """CPU seconds per call of each function: the fastest of ``repeats`` batches of at least
    ``batch_seconds``, the batches of the different functions interleaved. CPU time of this
    process (``time.process_time``) is not inflated by the time other jobs hold the cores,
    which wall time is on a shared machine."""
    numbers = {}
    for name, fn in fns.items():
        t0 = time.process_time()
        fn()  # warm-up, and a first estimate of the cost
        numbers[name] = max(1, int(batch_seconds / max(time.process_time() - t0, 1e-6)))
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            elapsed = timeit.timeit(fn, number=numbers[name], timer=time.process_time)
            best[name] = min(best[name], elapsed)
    return {name: best[name] / numbers[name] for name in fns}


class Counting:
    def __init__(self, f: Callable[..., Any]) -> None:
        self.f = f
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.f(*args)


def jacobi(P: Problem) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The inverse of |diag H(x)|: a preconditioner any user can build from ``hess``."""
    return lambda x, v: v / np.maximum(np.abs(np.diag(P.hess(x))), 1e-12)


def run_minimize(P: Problem, solver: str) -> tuple[Any, int]:
    hessp = Counting(P.hessp)
    if solver == "ours":
        res = tr.minimize(P.fun, P.x0, jac=P.grad, hessp=hessp, options=P.options)
    elif solver == "ours-jacobi":
        res = tr.minimize(P.fun, P.x0, jac=P.grad, hessp=hessp,
                          options={**P.options, "preconditioner": jacobi(P)})  # fmt: skip
    else:
        res = scipy_minimize(P.fun, P.x0, method=solver, jac=P.grad, hessp=hessp,
                             options=P.options)  # fmt: skip
    return res, hessp.calls


SOLVERS = ("ours", "trust-ncg", "trust-krylov", "ours-jacobi")


def bench_minimize(repeats: int) -> tuple[list[str], dict[str, int]]:
    lines = [
        "| problem | n | nit: ours / ncg / krylov | nfev: ours / ncg | "
        "Hessian-vector products: ours / ncg / krylov | ours / ncg products | "
        "time ours / ncg | time ours / krylov | max abs(x - x*): ours / ncg | "
        "Jacobi-preconditioned: nit, products |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    totals = dict.fromkeys(SOLVERS, 0)
    total_time = dict.fromkeys(SOLVERS[:3], 0.0)
    wins = 0
    failures: list[str] = []
    for P in make_problems():
        runs = {s: run_minimize(P, s) for s in SOLVERS}
        for s, (res, nh) in runs.items():
            totals[s] += nh
            if not res.success:
                failures.append(f"{P.name} ({s}: {res.message})")
        times = time_per_call(
            {s: lambda s=s, P=P: run_minimize(P, s) for s in SOLVERS[:3]}, repeats
        )
        for s in total_time:
            total_time[s] += times[s]
        (o, no), (n, nn), (k, nk), (j, nj) = (runs[s] for s in SOLVERS)
        wins += no <= nn
        err = [np.max(np.abs(r.x - P.x_star)) for r in (o, n)]
        lines.append(
            f"| {P.name} | {P.n} | {o.nit} / {n.nit} / {k.nit} | {o.nfev} / {n.nfev} | "
            f"{no} / {nn} / {nk} | {no / nn:.2f} | {times['ours'] / times['trust-ncg']:.2f} | "
            f"{times['ours'] / times['trust-krylov']:.2f} | {err[0]:.1e} / {err[1]:.1e} | "
            f"{j.nit}, {nj} |"
        )
    n_problems = len(make_problems())
    lines.append(
        f"| **total** | | | | {totals['ours']} / {totals['trust-ncg']} / "
        f"{totals['trust-krylov']} | {totals['ours'] / totals['trust-ncg']:.2f} | "
        f"{total_time['ours'] / total_time['trust-ncg']:.2f} | "
        f"{total_time['ours'] / total_time['trust-krylov']:.2f} | | {totals['ours-jacobi']} |"
    )
    lines.append("")
    lines.append(
        f"Ours used no more Hessian-vector products than scipy's trust-ncg on {wins} of "
        f"{n_problems} problems."
    )
    if failures:
        lines.append("Runs that did not report success: " + "; ".join(failures) + ".")
    return lines, totals


DENSE_METHODS = ("trust-exact", "dogleg")


def run_method(P: Problem, method: str, solver: str) -> tuple[Any, int]:
    """One run of ``method`` by ours or scipy, with a counting Hessian (``hess`` for the dense
    methods, ``hessp`` otherwise); returns the result and the Hessian calls."""
    hessian = Counting(P.hess if method in DENSE_METHODS else P.hessp)
    kwargs = {"hess" if method in DENSE_METHODS else "hessp": hessian}
    minimize = tr.minimize if solver == "ours" else scipy_minimize
    res = minimize(P.fun, P.x0, method=method, jac=P.grad, options=P.options, **kwargs)
    return res, hessian.calls


def agreement(P: Problem, ours: Any, ref: Any) -> str:
    """How our x compares with scipy's: the same point (within the problem's x_tol), closer
    to the known minimizer, or (a failed run of both) the same stopping point."""
    scale = np.maximum(1.0, np.abs(P.x_star))
    if not ref.success:
        return "same stop" if np.array_equal(ours.x, ref.x) else "differs"
    if np.max(np.abs(ours.x - ref.x) / scale) <= P.x_tol:
        return "yes"
    err, err_ref = (np.max(np.abs(r.x - P.x_star) / scale) for r in (ours, ref))
    return f"closer to x* ({err:.0e} vs {err_ref:.0e})" if err < err_ref else "NO"


def bench_methods(repeats: int) -> list[str]:
    """Per method, ours against scipy's same-named method on the set and scipy's examples."""
    lines: list[str] = []
    problems = make_problems() + scipy_examples()
    for method in ("trust-krylov", "trust-exact", "dogleg"):
        hessian = "hess" if method in DENSE_METHODS else "hessp"
        lines += [
            f"### `{method}`",
            "",
            f"| problem | n | status ours / scipy | x agrees | nit | nfev | njev | `{hessian}` "
            "calls | time ours / scipy |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|",
        ]
        sums = {"nfev": [0, 0], "njev": [0, 0], "hess": [0, 0], "time": [0.0, 0.0]}
        agree = no_more = 0
        for P in problems:
            (o, no), (r, nr) = run_method(P, method, "ours"), run_method(P, method, "scipy")
            times = time_per_call(
                {s: lambda s=s, P=P, m=method: run_method(P, m, s) for s in ("ours", "scipy")},
                repeats,
            )
            verdict = agreement(P, o, r)
            agree += verdict != "NO" and verdict != "differs"
            no_more += o.nfev <= r.nfev and o.njev <= r.njev and no <= nr
            pairs = {
                "nfev": (o.nfev, r.nfev),
                "njev": (o.njev, r.njev),
                "hess": (no, nr),
                "time": (times["ours"], times["scipy"]),
            }
            for key, (ours_value, scipy_value) in pairs.items():
                sums[key][0] += ours_value
                sums[key][1] += scipy_value
            lines.append(
                f"| {P.name} | {P.n} | {o.status} / {r.status} | {verdict} | {o.nit} / {r.nit} "
                f"| {o.nfev} / {r.nfev} | {o.njev} / {r.njev} | {no} / {nr} | "
                f"{times['ours'] / times['scipy']:.2f} |"
            )
        lines += [
            f"| **total** | | | {agree}/{len(problems)} | | {sums['nfev'][0]} / "
            f"{sums['nfev'][1]} | {sums['njev'][0]} / {sums['njev'][1]} | {sums['hess'][0]} / "
            f"{sums['hess'][1]} | {sums['time'][0] / sums['time'][1]:.2f} |",
            "",
            f"No more function, gradient and Hessian evaluations than scipy on {no_more} of "
            f"{len(problems)} problems; x agrees (or is closer to x*) on {agree}.",
            "",
        ]
    return lines


def bench_ascent(repeats: int) -> list[str]:
    lines = [
        "| data (N x features, classes) | delta | ours: nit, fun evals, grad evals, metric "
        "products | L-BFGS-B: nit, evals | time ours / L-BFGS-B | max abs(theta - theta_MLE) | "
        "loglik gap |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n_samples, n_features, n_classes in ((300, 4, 4), (3000, 20, 5)):
        model = SoftmaxRegression(n_samples, n_features, n_classes, seed=0)
        x0 = np.zeros(model.dim)

        def lbfgs(model: SoftmaxRegression = model, x0: np.ndarray = x0, gtol: float = 1e-7) -> Any:
            return scipy_minimize(
                lambda t: -model.loglik(t),
                x0,
                jac=lambda t: -model.grad(t),
                method="L-BFGS-B",
                options={"gtol": gtol, "ftol": 1e-15 if gtol < 1e-7 else 2.2e-9, "maxiter": 10_000},
            )

        reference = lbfgs(gtol=1e-11)
        ref = lbfgs()
        for delta in (0.01, 0.1):

            def ours(
                model: SoftmaxRegression = model, x0: np.ndarray = x0, delta: float = delta
            ) -> Any:
                return tr.divergence_ascent(
                    model.loglik, model.grad, model.kl, model.fisher_product, x0, delta, gtol=1e-7
                )

            res = ours()
            times = time_per_call({"ours": ours, "lbfgs": lbfgs}, repeats)
            err = np.max(np.abs(res.x - reference.x))
            gap = -reference.fun - res.fun
            lines.append(
                f"| {n_samples} x {n_features + 1}, {n_classes} | {delta} | {res.nit}, "
                f"{res.nfev}, {res.ngev}, {res.nmp} ({res.status.name}) | {ref.nit}, {ref.nfev} | "
                f"{times['ours'] / times['lbfgs']:.2f} | {err:.1e} | {gap:.1e} |"
            )
    return lines


def random_cpo_problem(seed: int, n: int, case: tr.Status) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    H = (Q * rng.uniform(0.2, 5.0, n)) @ Q.T
    g, b = rng.standard_normal(n), rng.standard_normal(n)
    delta = float(rng.uniform(0.005, 0.1))
    v, w = np.linalg.solve(H, g), np.linalg.solve(H, b)
    lower = -np.sqrt(2 * delta / (g @ v)) * (b @ v)
    upper = np.sqrt(2 * delta * (b @ w))
    u = rng.uniform()
    c = {
        tr.Status.INACTIVE: lower - (0.01 + u) * abs(upper),
        tr.Status.ACTIVE: lower + (0.05 + 0.9 * u) * (upper - lower),
        tr.Status.RECOVERY: upper * (1.05 + u),
    }[case]
    return H, g, b, float(c), delta


def slsqp(H: np.ndarray, g: np.ndarray, b: np.ndarray, c: float, delta: float,
          recovery: bool) -> np.ndarray:  # fmt: skip
    constraints = [
        {"type": "ineq", "fun": lambda x: delta - 0.5 * x @ H @ x, "jac": lambda x: -H @ x}
    ]
    if recovery:
        objective, gradient = (lambda x: b @ x), (lambda x: b)
    else:
        constraints.append({"type": "ineq", "fun": lambda x: -(b @ x + c), "jac": lambda x: -b})
        objective, gradient = (lambda x: -g @ x), (lambda x: -g)
    options = {"ftol": 1e-12, "maxiter": 500}
    return scipy_minimize(objective, np.zeros(len(g)), jac=gradient, method="SLSQP",
                          constraints=constraints, options=options).x  # fmt: skip


def bench_cpo(repeats: int, n_problems: int = 20) -> list[str]:
    lines = [
        "| n | case | problems | cases right | max abs(ours - SLSQP) / max abs(SLSQP) | "
        "time per step ours / SLSQP |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n in (5, 20, 50):
        for case in (tr.Status.INACTIVE, tr.Status.ACTIVE, tr.Status.RECOVERY):
            problems = [random_cpo_problem(seed, n, case) for seed in range(n_problems)]
            right, worst = 0, 0.0
            for H, g, b, c, delta in problems:
                res = tr.cpo_step(g, b, c, H.dot, delta, cg_iters=n)
                ref = slsqp(H, g, b, c, delta, case is tr.Status.RECOVERY)
                right += res.status is case
                worst = max(worst, np.max(np.abs(res.step - ref)) / np.max(np.abs(ref)))

            def all_ours(problems: list[tuple[Any, ...]] = problems, n: int = n) -> None:
                for H, g, b, c, delta in problems:
                    tr.cpo_step(g, b, c, H.dot, delta, cg_iters=n)

            def all_slsqp(problems: list[tuple[Any, ...]] = problems,
                          case: tr.Status = case) -> None:  # fmt: skip
                for H, g, b, c, delta in problems:
                    slsqp(H, g, b, c, delta, case is tr.Status.RECOVERY)

            times = time_per_call({"ours": all_ours, "slsqp": all_slsqp}, repeats)
            ratio = times["ours"] / times["slsqp"]
            lines.append(
                f"| {n} | {case.name} | {n_problems} | {right} | {worst:.1e} | {ratio:.3f} |"
            )
    return lines


def machine() -> list[str]:
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(
            line.split(":", 1)[1].strip() for line in cpu.splitlines() if "Model name" in line
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or "unknown"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return [
        f"- CPU: {model}, {os.cpu_count()} cores, shared with other jobs (load average "
        f"{load:.1f} at the start). BLAS runs on one thread. Times are CPU time of the "
        "benchmark process, which that load does not inflate the way it inflates wall time; "
        "counts are exact; time ratios move between runs (by how much: in each section).",
        f"- Python {platform.python_version()}, NumPy {np.__version__}, SciPy {scipy.__version__}",
    ]


BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def main() -> None:
    # One BLAS thread. With more, OpenBLAS worker threads spin between the small products of
    # these solves, and their CPU time (counted by process_time) swamps the solve on a
    # shared machine: L-BFGS-B measured 2 ms and 133 ms in consecutive batches. The variable
    # must be set before NumPy loads OpenBLAS, hence the re-execution.
    if any(os.environ.get(var) != "1" for var in BLAS_THREAD_VARIABLES):
        env = {**os.environ, **dict.fromkeys(BLAS_THREAD_VARIABLES, "1")}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timing batches (fastest kept)")
    parser.add_argument("--write", type=Path, help="write the markdown page here")
    args = parser.parse_args()
    command = f".venv/bin/python benchmarks/bench_solvers.py --repeats {args.repeats}"
    if args.write:
        command += f" --write {args.write}"

    t0 = time.perf_counter()
    minimize_lines, _ = bench_minimize(args.repeats)
    method_lines = bench_methods(args.repeats)
    ascent_lines = bench_ascent(args.repeats)
    cpo_lines = bench_cpo(args.repeats)
    elapsed = time.perf_counter() - t0

    page = [
        "# Solvers against scipy",
        "",
        f"Produced by `{command}` ({elapsed:.0f} s).",
        "",
        *machine(),
        "",
        "## `trustregion.minimize` against `scipy.optimize.minimize`",
        "",
        "Same options for every solver (scipy's defaults plus the problem's own, see "
        "`tests/solver_problems.py`); every solver gets the same analytic `hessp`, wrapped to "
        "count its calls. `ncg` is scipy's `trust-ncg`, `krylov` scipy's `trust-krylov`. "
        "The time ratios are of the whole solve, including the user's functions (CPU time, "
        f"fastest of {args.repeats} interleaved batches of >= 20 ms per solver). The last "
        "column is `trustregion.minimize` with a Jacobi preconditioner "
        "`v / |diag H(x)|` (option `preconditioner`).",
        "",
        *minimize_lines,
        "",
        "## `trust-krylov`, `trust-exact` and `dogleg` against scipy's same-named methods",
        "",
        "The 18 problems and two of scipy's own examples (`scipy_tutorial_rosen_5`: the start "
        "scipy's tutorial uses for every trust-region method; `rosen_100_from_0`). Same "
        "options; each solver gets the same analytic Hessian wrapped to count its calls "
        "(scipy's reported `nhev` misses one evaluation with `hess`, so calls are counted "
        "here). `x agrees`: within the problem's `x_tol` of scipy's `x`, or closer to the "
        "known minimizer than scipy's; dogleg stops with status 3 at `x0` where the Hessian "
        "is indefinite, as scipy's does. Time: CPU time of the whole solve, fastest of "
        f"{args.repeats} interleaved batches. The machine was shared (load average above 10 "
        "while these were measured): a single problem's time ratio moves between runs by up "
        "to a few tenths, a method's total by up to about 0.2 (the spreads measured over "
        "consecutive runs are in docs/minimize.md); the counts are exact.",
        "",
        *method_lines,
        "## `trustregion.divergence_ascent` against L-BFGS-B (softmax-regression MLE)",
        "",
        "Maximize the mean log-likelihood by natural-gradient steps, each within `delta` nats "
        "of mean KL divergence, `gtol=1e-7`; L-BFGS-B minimizes the negative log-likelihood "
        "with `gtol=1e-7`. The reference MLE is L-BFGS-B run to `gtol=1e-11`. Metric products "
        "are Fisher-vector products (one pass over the data, like a gradient).",
        "",
        *ascent_lines,
        "",
        "## `trustregion.cpo_step` against SLSQP",
        "",
        "Random problems with an explicit SPD `H` (eigenvalues in [0.2, 5]), the constraint "
        "value `c` chosen to put each problem in the case named; `cg_iters = n`. SLSQP solves "
        "the same problem (for RECOVERY: minimize `b^T x` in the trust region) with "
        "`ftol=1e-12`.",
        "",
        *cpo_lines,
        "",
    ]
    text = "\n".join(page)
    print(text)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text)


if __name__ == "__main__":
    main()
