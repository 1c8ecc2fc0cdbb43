"""trustregion.distributions against plain NumPy and torch.distributions, same process.

For N in ``--sizes`` rows of K = D = 6 (``--width``), every function is timed as

- ``ours``   the validated public function (``trustregion.distributions``),
- ``kernel`` the raw Numba kernel it calls (``trustregion.kernels``),
- ``numpy``  the plain NumPy expression of the same math (log-sum-exp with the row
  maximum subtracted, the textbook Gaussian formulas),
- ``torch``  torch.distributions on CPU (default ``validate_args``) where it has the
  operation; for the Fisher products and the scores, which it does not offer, the
  explicit torch tensor expression (faster than autograd). Skipped when torch is not
  importable.

All inputs are float64; the Gaussian rows share a ``(D,)`` log_std (the TRPO default),
except the entropy, which uses a per-row ``(N, D)`` log_std. Contenders are timed in
turn within every repeat (interleaved) and the median per call is reported, so they
see the same background load; ``--clock cpu`` measures process CPU time instead of wall
time. torch runs on ``--torch-threads`` threads (default 1: the kernels are
single-threaded, and CPU time is only comparable between single-threaded contenders).

``--cold-start`` instead measures, in fresh processes sharing an empty temporary
``NUMBA_CACHE_DIR``, ``import trustregion`` plus the first call of every public
function: the first process compiles and fills the cache, the next ones load it.

Run:  .venv/bin/python benchmarks/bench_distributions.py [--sizes 64 2048 65536] [--clock cpu]
      .venv/bin/python benchmarks/bench_distributions.py --cold-start
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numba
import numpy as np

from trustregion import distributions as dist
from trustregion import kernels

try:
    import torch
    import torch.distributions as tdist
except ImportError:  # the peer is optional
    torch = None

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


# ----------------------------------------------------------------- NumPy peers


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def np_probs(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_cat_log_prob(z, a):
    return np_log_softmax(z)[np.arange(len(a)), a]


def np_cat_entropy(z):
    log_p = np_log_softmax(z)
    return -(np.exp(log_p) * log_p).sum(axis=1)


def np_cat_kl(zp, zq):
    log_p, log_q = np_log_softmax(zp), np_log_softmax(zq)
    return (np.exp(log_p) * (log_p - log_q)).sum(axis=1)


def np_cat_fisher(z, v):
    p = np_probs(z)
    pv = p * v
    return pv - p * pv.sum(axis=1, keepdims=True)


def np_cat_grad(z, a):
    g = -np_probs(z)
    g[np.arange(len(a)), a] += 1.0
    return g


def np_cat_sample(z, rng):
    cdf = np.cumsum(np_probs(z), axis=1)
    u = rng.random(len(z))[:, None] * cdf[:, -1:]
    return (u < cdf).argmax(axis=1)


def np_gauss_log_prob(m, ls, x):
    z = (x - m) * np.exp(-ls)
    return -0.5 * (z * z).sum(axis=1) - ls.sum() - m.shape[1] * HALF_LOG_2PI


def np_gauss_entropy(ls_rows):
    return ls_rows.sum(axis=1) + ls_rows.shape[1] * (0.5 + HALF_LOG_2PI)


def np_gauss_kl(mp, lp, mq, lq):
    return (lq - lp + (np.exp(2 * lp) + (mp - mq) ** 2) / (2 * np.exp(2 * lq)) - 0.5).sum(axis=1)


def np_gauss_fisher(m, ls, vm, vls):
    return vm * np.exp(-2 * ls), 2 * vls


def np_gauss_grad(m, ls, x):
    inv_std = np.exp(-ls)
    z = (x - m) * inv_std
    return z * inv_std, z * z - 1.0


def np_gauss_sample(m, ls, rng):
    return m + np.exp(ls) * rng.standard_normal(m.shape)


# ------------------------------------------------------------------ torch peers


def torch_peers(inputs: dict) -> dict[str, Callable[[], object]]:
    t = {k: torch.from_numpy(v) for k, v in inputs.items() if isinstance(v, np.ndarray)}
    gen = torch.Generator().manual_seed(0)

    def cat_fisher():
        p = torch.softmax(t["z"], dim=1)
        pv = p * t["v"]
        return pv - p * pv.sum(dim=1, keepdim=True)

    def cat_grad():
        g = -torch.softmax(t["z"], dim=1)
        g[torch.arange(len(t["a"])), t["a"]] += 1.0
        return g

    def gauss_grad():
        inv_std = torch.exp(-t["ls"])
        z = (t["x"] - t["m"]) * inv_std
        return z * inv_std, z * z - 1.0

    std = torch.exp(t["ls"])
    return {
        "categorical_log_prob": lambda: tdist.Categorical(logits=t["z"]).log_prob(t["a"]),
        "categorical_entropy": lambda: tdist.Categorical(logits=t["z"]).entropy(),
        "categorical_kl": lambda: tdist.kl_divergence(
            tdist.Categorical(logits=t["z"]), tdist.Categorical(logits=t["zq"])
        ),
        "categorical_fisher_product": cat_fisher,
        "categorical_log_prob_grad": cat_grad,
        "categorical_sample": lambda: tdist.Categorical(logits=t["z"]).sample(),
        "diag_gaussian_log_prob": lambda: tdist.Normal(t["m"], torch.exp(t["ls"]))
        .log_prob(t["x"])
        .sum(dim=1),
        "diag_gaussian_entropy": lambda: tdist.Normal(t["m"], torch.exp(t["ls_rows"]))
        .entropy()
        .sum(dim=1),
        "diag_gaussian_kl": lambda: tdist.kl_divergence(
            tdist.Normal(t["m"], torch.exp(t["ls"])), tdist.Normal(t["mq"], torch.exp(t["lq"]))
        ).sum(dim=1),
        "diag_gaussian_fisher_product": lambda: (t["v"] * torch.exp(-2 * t["ls"]), 2 * t["vls"]),
        "diag_gaussian_log_prob_grad": gauss_grad,
        "diag_gaussian_sample": lambda: torch.normal(
            t["m"], std.expand_as(t["m"]), generator=gen
        ),
    }


# ------------------------------------------------------------------ the runs


def make_inputs(n: int, width: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "z": 2.0 * rng.standard_normal((n, width)),
        "zq": 2.0 * rng.standard_normal((n, width)),
        "v": rng.standard_normal((n, width)),
        "a": rng.integers(0, width, n),
        "m": rng.standard_normal((n, width)),
        "mq": rng.standard_normal((n, width)),
        "x": rng.standard_normal((n, width)),
        "ls": rng.uniform(-1.0, 0.5, width),
        "lq": rng.uniform(-1.0, 0.5, width),
        "vls": rng.standard_normal(width),
        "ls_rows": rng.uniform(-1.0, 0.5, (n, width)),
        "rng": np.random.default_rng(seed + 1),
    }


def contenders(i: dict) -> dict[str, tuple[Callable, Callable, Callable]]:
    """name -> (public function call, raw kernel call, NumPy call)."""
    z, zq, v, a, m, mq, x = i["z"], i["zq"], i["v"], i["a"], i["m"], i["mq"], i["x"]
    ls, lq, vls, rows, rng = i["ls"], i["lq"], i["vls"], i["ls_rows"], i["rng"]
    return {
        "categorical_log_prob": (
            lambda: dist.categorical_log_prob(z, a),
            lambda: kernels.categorical_log_prob(z, a),
            lambda: np_cat_log_prob(z, a),
        ),
        "categorical_entropy": (
            lambda: dist.categorical_entropy(z),
            lambda: kernels.categorical_entropy(z),
            lambda: np_cat_entropy(z),
        ),
        "categorical_kl": (
            lambda: dist.categorical_kl(z, zq),
            lambda: kernels.categorical_kl(z, zq),
            lambda: np_cat_kl(z, zq),
        ),
        "categorical_fisher_product": (
            lambda: dist.categorical_fisher_product(z, v),
            lambda: kernels.categorical_fisher_product(z, v),
            lambda: np_cat_fisher(z, v),
        ),
        "categorical_log_prob_grad": (
            lambda: dist.categorical_log_prob_grad(z, a),
            lambda: kernels.categorical_log_prob_grad(z, a),
            lambda: np_cat_grad(z, a),
        ),
        "categorical_sample": (
            lambda: dist.categorical_sample(z, rng),
            lambda: kernels.categorical_sample_inverse_cdf(z, rng.random(len(z))),
            lambda: np_cat_sample(z, rng),
        ),
        "diag_gaussian_log_prob": (
            lambda: dist.diag_gaussian_log_prob(m, ls, x),
            lambda: kernels.diag_gaussian_log_prob(m, ls, x),
            lambda: np_gauss_log_prob(m, ls, x),
        ),
        "diag_gaussian_entropy": (
            lambda: dist.diag_gaussian_entropy(rows),
            lambda: kernels.diag_gaussian_entropy(rows),
            lambda: np_gauss_entropy(rows),
        ),
        "diag_gaussian_kl": (
            lambda: dist.diag_gaussian_kl(m, ls, mq, lq),
            lambda: kernels.diag_gaussian_kl(m, ls, mq, lq),
            lambda: np_gauss_kl(m, ls, mq, lq),
        ),
        "diag_gaussian_fisher_product": (
            lambda: dist.diag_gaussian_fisher_product(m, ls, v, vls),
            lambda: kernels.diag_gaussian_fisher_product(m, ls, v, vls),
            lambda: np_gauss_fisher(m, ls, v, vls),
        ),
        "diag_gaussian_log_prob_grad": (
            lambda: dist.diag_gaussian_log_prob_grad(m, ls, x),
            lambda: kernels.diag_gaussian_log_prob_grad(m, ls, x),
            lambda: np_gauss_grad(m, ls, x),
        ),
        "diag_gaussian_sample": (
            lambda: dist.diag_gaussian_sample(m, ls, rng),
            lambda: kernels.diag_gaussian_sample_from_noise(m, ls, rng.standard_normal(m.shape)),
            lambda: np_gauss_sample(m, ls, rng),
        ),
    }


def check_agreement(name: str, ours, numpy_result) -> None:
    """The contenders compute the same thing (sampling aside)."""
    if name.endswith("sample"):
        return
    ours_t = ours if isinstance(ours, tuple) else (ours,)
    ref_t = numpy_result if isinstance(numpy_result, tuple) else (numpy_result,)
    for mine, ref in zip(ours_t, ref_t, strict=True):
        np.testing.assert_allclose(mine, ref, rtol=1e-9, atol=1e-12, err_msg=name)


def interleaved_medians(
    fns: list[Callable[[], object]], repeats: int, budget: float, clock: Callable[[], float]
) -> list[float]:
    """Median seconds per call of each function, timed in turn within every repeat.

    Each sample times a batch of calls long enough (~``budget`` seconds for the
    slowest contender) to make the timer resolution irrelevant for small N.
    """
    loops = []
    for fn in fns:
        fn()  # warm-up (Numba compilation, torch dispatch caches)
        t0 = time.perf_counter()
        fn()
        loops.append(time.perf_counter() - t0)
    batch = max(1, int(budget / max(max(loops), 1e-7)))
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, samples, strict=True):
            t0 = clock()
            for _ in range(batch):
                fn()
            out.append((clock() - t0) / batch)
    return [statistics.median(out) for out in samples]


def run(
    sizes: list[int], width: int, repeats: int, budget: float, clock: Callable[[], float]
) -> list[dict]:
    # one untimed pass over everything first: compiles and loads every specialization
    # and lets the CPU settle, so the first rows are not penalized
    warm = contenders(make_inputs(64, width))
    deadline = time.perf_counter() + 1.0
    while time.perf_counter() < deadline:
        for public, kernel, numpy_fn in warm.values():
            public(), kernel(), numpy_fn()
    rows = []
    for n in sizes:
        inputs = make_inputs(n, width)
        ours = contenders(inputs)
        peers = torch_peers(inputs) if torch is not None else {}
        for name, (public, kernel, numpy_fn) in ours.items():
            check_agreement(name, public(), numpy_fn())
            fns = [public, kernel, numpy_fn] + ([peers[name]] if name in peers else [])
            times = interleaved_medians(fns, repeats, budget, clock)
            row = {
                "n": n,
                "function": name,
                "ours_us": times[0] * 1e6,
                "kernel_us": times[1] * 1e6,
                "numpy_us": times[2] * 1e6,
                "torch_us": times[3] * 1e6 if len(times) > 3 else None,
            }
            rows.append(row)
            print(format_row(row), flush=True)
    return rows


HEADER = (
    "|      N | function                     |  ours µs | kernel µs |  numpy µs |  torch µs "
    "| numpy/ours | torch/ours |\n"
    "|-------:|:-----------------------------|---------:|----------:|----------:|----------:"
    "|-----------:|-----------:|"
)


def format_row(r: dict) -> str:
    has_torch = r["torch_us"] is not None
    torch_us = f"{r['torch_us']:9.1f}" if has_torch else "        -"
    torch_ratio = f"{r['torch_us'] / r['ours_us']:10.1f}" if has_torch else "         -"
    numpy_ratio = f"{r['numpy_us'] / r['ours_us']:10.1f}"
    return (
        f"| {r['n']:6d} | {r['function']:<28s} | {r['ours_us']:8.1f} | {r['kernel_us']:9.1f} "
        f"| {r['numpy_us']:9.1f} | {torch_us} | {numpy_ratio} | {torch_ratio} |"
    )


# ---------------------------------------------------------------- cold start

COLD_START_SNIPPET = r"""
import json, time
t0, c0 = time.perf_counter(), time.process_time()
import numpy as np
import trustregion
from trustregion import distributions as d
t_import, c_import = time.perf_counter() - t0, time.process_time() - c0
z = np.zeros((4, 3)); a = np.zeros(4, dtype=np.int64); m = np.zeros((4, 2)); ls = np.zeros(2)
rng = np.random.default_rng(0)
calls = [
    lambda: d.categorical_probs(z), lambda: d.categorical_log_softmax(z),
    lambda: d.categorical_log_prob(z, a), lambda: d.categorical_log_prob_grad(z, a),
    lambda: d.categorical_entropy(z), lambda: d.categorical_kl(z, z),
    lambda: d.categorical_fisher_product(z, z), lambda: d.categorical_sample(z, rng),
    lambda: d.diag_gaussian_log_prob(m, ls, m), lambda: d.diag_gaussian_log_prob_grad(m, ls, m),
    lambda: d.diag_gaussian_entropy(ls), lambda: d.diag_gaussian_kl(m, ls, m, ls),
    lambda: d.diag_gaussian_fisher_product(m, ls, m, ls),
    lambda: d.diag_gaussian_sample(m, ls, rng),
]
t1, c1 = time.perf_counter(), time.process_time()
for call in calls:
    call()
t_calls, c_calls = time.perf_counter() - t1, time.process_time() - c1
print(json.dumps({"import_s": t_import, "first_calls_s": t_calls, "total_s": t_import + t_calls,
                  "import_cpu_s": c_import, "first_calls_cpu_s": c_calls,
                  "total_cpu_s": c_import + c_calls}))
"""


def cold_start(runs: int) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
        for k in range(runs):
            t0 = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", COLD_START_SNIPPET], env=env, capture_output=True,
                text=True, check=True,
            )
            wall = time.perf_counter() - t0
            result = json.loads(out.stdout)
            result["process_wall_s"] = wall
            result["cache"] = "empty" if k == 0 else "warm"
            results.append(result)
            print(
                f"run {k} ({result['cache']} cache): "
                f"import trustregion {result['import_s']:.3f} s, "
                f"first call of the 14 functions {result['first_calls_s']:.3f} s, "
                f"together {result['total_s']:.3f} s (whole process {wall:.3f} s); "
                f"CPU time: import {result['import_cpu_s']:.3f} s, "
                f"first calls {result['first_calls_cpu_s']:.3f} s, "
                f"together {result['total_cpu_s']:.3f} s",
                flush=True,
            )
    return results


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 2048, 65536])
    parser.add_argument("--width", type=int, default=6, help="K categories / D dimensions")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--budget", type=float, default=0.01, help="seconds per timed batch")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: time.perf_counter; cpu: time.process_time (this process's CPU time, "
        "steadier on a shared machine; fair while every contender is single-threaded)",
    )
    parser.add_argument("--cold-start", action="store_true")
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    info = machine()
    print(" ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    if args.cold_start:
        results: object = cold_start(args.cold_runs)
    else:
        if torch is not None:
            torch.set_num_threads(args.torch_threads)
            info["torch_threads"] = args.torch_threads
        print(HEADER, flush=True)
        clock = time.perf_counter if args.clock == "wall" else time.process_time
        info["clock"] = args.clock
        results = run(args.sizes, args.width, args.repeats, args.budget, clock)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
