"""trustregion.cg against scipy.sparse.linalg.cg, same matvec, same process.

For each n, matvec kind (dense matrix, diagonal) and dtype (float64, and complex128 on a
Hermitian matrix), both solvers run exactly ``--iters`` iterations (rtol=0 so neither stops
early). The time of the matvec alone (``--iters`` calls) is measured too, so the
per-iteration *overhead* of each solver (everything but the matvec) can be compared: that is
what a CG implementation controls ("ovh ratio": ours over scipy's). The column "in-solver"
measures the same ratio a second way, in the same rounds: each solver's matvec calls are timed
where they happen and subtracted from that run's total, which stays measurable when the matvec
dominates (dense n = 1000) and the first way subtracts two large, noisy medians; the timing
wrapper's own cost (about one clock read per call) counts as overhead for both.
The cost of the spectrum when on (``tr.cg(..., spectrum=True)``, extreme Ritz values and
condition estimate computed at once, and read) is measured apart, against the same solve
without it, in alternating order (ABBA: each first in half of the rounds, after itself in
half): timed always right after the identical solve, as in the main rounds, it would find
everything warm that the plain solve had just used, and look cheaper than it is.

Times are the CPU time of the benchmark's thread by default (``--clock cpu``): on a shared,
loaded machine wall-clock samples also count the time spent waiting for a core, which no
contender controls; ``--clock wall`` uses ``time.perf_counter``. Either way the contenders are
timed in turn within every repeat, so that they share the background load.

Run:  .venv/bin/python benchmarks/bench_cg.py [--repeats 300] [--clock cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import scipy
import scipy.sparse.linalg as sla

import trustregion as tr

CLOCKS: dict[str, Callable[[], int]] = {"cpu": time.thread_time_ns, "wall": time.perf_counter_ns}


def interleaved_medians(
    fns: list[Callable[[], object]], repeats: int, clock: Callable[[], int] = time.thread_time_ns
) -> list[float]:
    """Median time (seconds) of each function, timed in turn within every repeat.

    Interleaving exposes all contenders to the same background load, so their ratio stays
    meaningful on a shared machine even when absolute times drift. A function that returns
    an int (nanoseconds: the time its matvecs took, see :func:`timed`) has it subtracted
    from its own sample: what remains is the solver's overhead in that very run.
    """
    for fn in fns:
        fn()  # warm-up (and Numba compilation)
    samples: list[list[int]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, samples, strict=True):
            t0 = clock()
            inner = fn()
            elapsed = clock() - t0
            out.append(elapsed - inner if type(inner) is int else elapsed)
    return [statistics.median(out) * 1e-9 for out in samples]


def alternating_medians(
    fn_a: Callable[[], object], fn_b: Callable[[], object], repeats: int,
    clock: Callable[[], int] = time.thread_time_ns,
) -> tuple[float, float]:
    """Median time (seconds) of two functions timed in alternating order, A B B A A B ...

    Each runs first in half of the rounds and right after itself or after the other equally
    often, so neither gains from what the other leaves warm in the caches. Both get
    ``repeats`` samples.
    """
    fn_a()
    fn_b()  # warm-up (and Numba compilation)
    samples_a: list[int] = []
    samples_b: list[int] = []
    for i in range(repeats):
        pairs = ((fn_a, samples_a), (fn_b, samples_b))
        for fn, out in pairs if i % 2 == 0 else pairs[::-1]:
            t0 = clock()
            fn()
            out.append(clock() - t0)
    return statistics.median(samples_a) * 1e-9, statistics.median(samples_b) * 1e-9


def timed(
    matvec: Callable[[np.ndarray], np.ndarray], clock: Callable[[], int]
) -> tuple[Callable[[np.ndarray], np.ndarray], list[int]]:
    """``matvec`` adding the time of each call (ns) to the returned one-element list."""
    spent = [0]

    def timed_matvec(v: np.ndarray) -> np.ndarray:
        t0 = clock()
        out = matvec(v)
        spent[0] += clock() - t0
        return out

    return timed_matvec, spent


def call_repeatedly(matvec: Callable[[np.ndarray], np.ndarray], b: np.ndarray, k: int) -> None:
    for _ in range(k):
        matvec(b)


def make_matvec(
    kind: str, n: int, rng: np.random.Generator, dtype: type
) -> Callable[[np.ndarray], np.ndarray]:
    complex_ = np.dtype(dtype).kind == "c"
    if kind == "dense":
        Q = rng.standard_normal((n, n)) / np.sqrt(n)
        if complex_:
            Q = Q + 1j * rng.standard_normal((n, n)) / np.sqrt(n)
        A = Q @ Q.conj().T + np.eye(n)
        return A.dot
    diag = rng.uniform(1.0, 100.0, n)  # real: a Hermitian diagonal
    return lambda v: diag * v


def measure_case(
    kind: str, n: int, iters: int, repeats: int, dtype: type,
    clock: Callable[[], int] = time.thread_time_ns,
) -> dict:
    rng = np.random.default_rng(0)
    matvec = make_matvec(kind, n, rng, dtype)
    b = rng.standard_normal(n)
    if np.dtype(dtype).kind == "c":
        b = b + 1j * rng.standard_normal(n)
    op = sla.LinearOperator((n, n), matvec=matvec, dtype=dtype)
    # The same solves with each matvec call timed where it happens, inside the solver: their
    # total minus those matvecs is the overhead of that very run, which a matvec that
    # dominates the time (dense n = 1000) leaves measurable, where the difference of two
    # medians (solver, then 20 matvecs alone) is lost in the matvec's run-to-run spread.
    mv_ours, spent_ours = timed(matvec, clock)
    mv_scipy, spent_scipy = timed(matvec, clock)
    op_timed = sla.LinearOperator((n, n), matvec=mv_scipy, dtype=dtype)

    def ours_inside() -> int:
        spent_ours[0] = 0
        tr.cg(mv_ours, b, rtol=0.0, maxiter=iters)
        return spent_ours[0]

    def scipy_inside() -> int:
        spent_scipy[0] = 0
        sla.cg(op_timed, b, rtol=0.0, maxiter=iters)
        return spent_scipy[0]

    t_matvec, t_ours, t_scipy, t_ours_inside, t_scipy_inside = interleaved_medians(
        [
            lambda: call_repeatedly(matvec, b, iters),
            lambda: tr.cg(matvec, b, rtol=0.0, maxiter=iters),
            lambda: sla.cg(op, b, rtol=0.0, maxiter=iters),
            ours_inside,
            scipy_inside,
        ],
        repeats,
        clock,
    )
    # the spectrum's cost: with and without, in alternating order (see the module docstring);
    # the estimates are read, as a caller who asked for them would
    t_plain, t_spectrum = alternating_medians(
        lambda: tr.cg(matvec, b, rtol=0.0, maxiter=iters),
        lambda: tr.cg(matvec, b, rtol=0.0, maxiter=iters, spectrum=True).spectrum.condition,
        repeats,
        clock,
    )
    ours_res = tr.cg(matvec, b, rtol=0.0, maxiter=iters)
    assert ours_res.nit == iters, ours_res.message
    over_ours = (t_ours - t_matvec) / iters
    over_scipy = (t_scipy - t_matvec) / iters
    return dict(
        kind=kind,
        dtype=np.dtype(dtype).name,
        n=n,
        iters=iters,
        ours_us=t_ours * 1e6,
        ours_spectrum_us=t_spectrum * 1e6,
        scipy_us=t_scipy * 1e6,
        matvec_us=t_matvec * 1e6,
        speedup=t_scipy / t_ours,
        overhead_ours_us_per_iter=over_ours * 1e6,
        overhead_scipy_us_per_iter=over_scipy * 1e6,
        overhead_ratio=over_ours / over_scipy,
        overhead_inside_ours_us_per_iter=t_ours_inside / iters * 1e6,
        overhead_inside_scipy_us_per_iter=t_scipy_inside / iters * 1e6,
        overhead_inside_ratio=t_ours_inside / t_scipy_inside,
        plain_alternating_us=t_plain * 1e6,
        spectrum_extra=t_spectrum / t_plain - 1.0,
        spectrum_extra_us=(t_spectrum - t_plain) * 1e6,
    )


def run(
    sizes: list[int], iters: int, repeats: int, dtypes: list[str],
    clock: Callable[[], int] = time.thread_time_ns,
) -> list[dict]:
    rows = []
    for dtype in dtypes:
        for kind in ("diagonal", "dense"):
            for n in sizes:
                if kind == "dense" and n > 2000:
                    continue  # a 10000^2 dense matvec is all BLAS: nothing left to compare
                reps = max(20, repeats // (1 + n // 1000))
                rows.append(measure_case(kind, n, iters, reps, np.dtype(dtype).type, clock))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 1000, 10000])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--dtypes", nargs="+", default=["float64", "complex128"])
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="thread CPU time (default) or wall-clock time")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = run(args.sizes, args.iters, args.repeats, args.dtypes, CLOCKS[args.clock])
    load_after = os.getloadavg()
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"numpy {np.__version__}, scipy {scipy.__version__}; clock {args.clock}; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    header = (f"{'dtype':>10} {'matvec':>8} {'n':>6} {'ours us':>9} {'scipy us':>9} "
              f"{'matvec us':>9} {'speedup':>8} {'ovh ours/it':>11} {'ovh scipy/it':>12} "
              f"{'ovh ratio':>9} {'in-solver':>9} {'spectrum':>9} {'spec us':>7}")
    print(header)
    for r in rows:
        print(f"{r['dtype']:>10} {r['kind']:>8} {r['n']:>6} {r['ours_us']:>9.1f} "
              f"{r['scipy_us']:>9.1f} {r['matvec_us']:>9.1f} {r['speedup']:>7.2f}x "
              f"{r['overhead_ours_us_per_iter']:>10.2f} "
              f"{r['overhead_scipy_us_per_iter']:>12.2f} {r['overhead_ratio']:>9.2f} "
              f"{r['overhead_inside_ratio']:>9.2f} "
              f"{100 * r['spectrum_extra']:>+8.1f}% {r['spectrum_extra_us']:>+7.2f}")
    if args.json:
        meta = {
            "command": "OPENBLAS_NUM_THREADS=" + os.environ.get("OPENBLAS_NUM_THREADS", "")
            + " python " + " ".join(sys.argv),
            "machine": platform.processor() or platform.machine(),
            "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "clock": args.clock,
            "load_before": load_before, "load_after": load_after,
            "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        }
        with open(args.json, "w") as fh:
            json.dump({**meta, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
