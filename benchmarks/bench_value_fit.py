"""Critic fitters compared: minibatch Adam, L-BFGS and the GAE trust-region fit.

Two measurements, both on TUNING seeds only (0-2; seeds 100-104 are for reporting):

``batches``
    Train ``rl_adapters.TRPO`` with the environment's defaults for ``--updates`` updates and
    record what its critic sees at every update (observations, lambda-returns, the critic's
    parameters and Adam state before the fit), by wrapping the instance's ``value.fit``.
    Then fit every recorded batch ``k`` from the run's own critic with each fitter and
    measure the wall and CPU time per fit, the MSE on batch ``k`` (the fit) and on batch
    ``k + 1`` (generalization to the next batch's states and returns, what GAE uses).
    Ratios are to the unfitted critic on the same batch (below 1: the fit helped).

``learn``
    Whole 100k-step runs with the critic fit replaced by the fitter under test.
    BENCHMARK HARNESS: the agent's ``value.fit`` is replaced on the instance, inside this
    script only (rl_adapters.value and agent are not changed); the replacement keeps the
    contract of ``ValueFunction.fit`` (sets ``value.theta``, returns the MSE before the
    fit). Final score: deterministic evaluation over 10 episodes, evaluation seeds
    ``1000 + seed``. Each run writes
    ``benchmarks/results/sweeps/value_fit/value_fit_learn_<env>_seed<k>_<tag>.json``
    and is skipped when that file exists (``--force`` reruns it).

Fitters are named ``adam``, ``lbfgs`` (the settings of ``TRPOConfig.for_env(env)``) or
``tr:eps=0.1,iters=3,cg=10,damping=0.001,sub=1,dtype=float64`` (any subset of the keys;
defaults are ``TrustRegionValueFit``'s).

Run from the repository root::

    .venv/bin/python benchmarks/bench_value_fit.py batches CartPole-v1 --seeds 0 --updates 30
    .venv/bin/python benchmarks/bench_value_fit.py learn Pendulum-v1 --seeds 0 1 2 \\
        --fitters adam tr:eps=0.1,iters=3
    .venv/bin/python benchmarks/bench_value_fit.py summary
    .venv/bin/python benchmarks/bench_value_fit.py micro --baseline /path/to/old/checkout
    .venv/bin/python benchmarks/bench_value_fit.py micro --dtypes float64 float32

``micro``
    CPU time of one compiled minibatch-Adam fit (``rl_adapters._kernels.adam_fit``, what
    ``ValueFunction.fit`` runs) on synthetic data of the MuJoCo (2048 x 17, 20 epochs) and
    Pendulum (1024 x 3, 60 epochs) default shapes, batch 128, critic (64, 64) tanh, one BLAS
    thread as in training; with
    ``--baseline DIR``, also the ``adam_fit`` of ``DIR/rl_adapters/_kernels.py`` (another
    checkout), interleaved with ours in the same process, and the ratio; ``--dtypes
    float64 float32`` times both precisions of the passes (``TRPOConfig.value_dtype``;
    ``adam_fit`` and ``adam_fit_float32``) interleaved; ``--out FILE`` also writes the
    timings (every repeat), the load average and the machine as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from common import write_json

from rl_adapters import TRPO, TRPOConfig
from rl_adapters.value import ValueFunction
from rl_adapters.value_trust_region import TrustRegionValueFit

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "sweeps" / "value_fit"
TUNING_SEEDS = (0, 1, 2)
#: The fitters compared by default: the two existing ones, the GAE paper's single step
#: (epsilon 0.01), and the candidates of the sweep (docs/value_trust_region.md).
FITTERS = ("adam", "lbfgs", "tr:eps=0.01,damping=0.001", "tr:eps=1,damping=0.1",
           "tr:eps=0.3,iters=3,cg=5,sub=0.25,damping=0.1",
           "tr:eps=1,iters=10,cg=5,sub=0.25,damping=0.1")
_TR_KEYS = {"eps": ("epsilon", float), "iters": ("outer_iters", int), "cg": ("cg_iters", int),
            "damping": ("damping", float), "sub": ("gn_subsample", float),
            "dtype": ("gn_dtype", str)}


def tr_settings(spec: str) -> dict[str, Any]:
    """``"tr:eps=0.1,iters=3"`` -> ``{"epsilon": 0.1, "outer_iters": 3}``."""
    body = spec.partition(":")[2]
    out: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        key, _, raw = item.partition("=")
        if key not in _TR_KEYS:
            raise SystemExit(f"unknown trust-region key {key!r} in {spec!r}; "
                             f"use {sorted(_TR_KEYS)}")
        name, kind = _TR_KEYS[key]
        out[name] = kind(raw)
    return out


def check_seeds(seeds: list[int]) -> None:
    bad = [s for s in seeds if s not in TUNING_SEEDS]
    if bad:
        raise SystemExit(f"seeds {bad}: this script tunes, it runs on seeds {TUNING_SEEDS} only")


def blas_one_thread():
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


# ------------------------------------------------------------------- batches
def record_batches(env_id: str, seed: int, updates: int) -> tuple[list[dict], TRPOConfig]:
    """What the critic is given at each of ``updates`` updates of a default run."""
    agent = TRPO(env_id, seed=seed)
    value = agent.value
    batches: list[dict] = []
    original_fit = value.fit

    def recording_fit(obs, targets, rng, **kwargs):
        batches.append({"obs": obs.copy(), "targets": targets.copy(),
                        "theta": value.theta.copy(), "adam_m": value.adam.m.copy(),
                        "adam_v": value.adam.v.copy(), "adam_t": value.adam.t})
        return original_fit(obs, targets, rng, **kwargs)

    value.fit = recording_fit  # type: ignore[method-assign]
    agent.learn(updates * agent.config.batch_size)
    agent.close()
    return batches, agent.config


def make_fitter(spec: str, cfg: TRPOConfig, obs_dim: int):
    """``fit(batch, rng) -> theta`` for the fitter named ``spec``, from the batch's critic."""
    vf = ValueFunction(obs_dim, cfg.value_hidden, cfg.activation)
    if spec in ("adam", "lbfgs"):
        def fit(batch, rng):
            vf.theta = batch["theta"].copy()
            vf.adam.m, vf.adam.v = batch["adam_m"].copy(), batch["adam_v"].copy()
            vf.adam.t = batch["adam_t"]
            vf.fit(batch["obs"], batch["targets"], rng, optimizer=spec, lr=cfg.value_lr,
                   epochs=cfg.value_epochs, batch_size=cfg.value_batch_size,
                   lbfgs_iters=cfg.value_lbfgs_iters, l2=cfg.value_l2)
            return vf.theta
        return fit, vf.net
    if spec.startswith("tr"):
        tr = TrustRegionValueFit(vf.net, **tr_settings(spec))

        def fit(batch, rng):
            theta, _ = tr.fit(batch["theta"], batch["obs"], batch["targets"], rng=rng)
            return theta
        return fit, vf.net
    raise SystemExit(f"unknown fitter {spec!r}: use adam, lbfgs or tr:key=value,...")


def mse(net, theta, obs, targets) -> float:
    err = net.forward(theta, obs, keep_cache=False)[0][:, 0] - targets
    return float(err @ err) / err.shape[0]


def compare_batches(env_id: str, seed: int, updates: int, fitters: list[str],
                    repeats: int) -> dict[str, Any]:
    batches, cfg = record_batches(env_id, seed, updates)
    obs_dim = batches[0]["obs"].shape[1]
    rows: dict[str, dict[str, list[float]]] = {}
    for spec in fitters:
        fit, net = make_fitter(spec, cfg, obs_dim)
        fit(batches[0], np.random.default_rng(0))  # warm-up: Numba compile, caches
        stats: dict[str, list[float]] = {k: [] for k in (
            "wall_ms", "cpu_ms", "fit_ratio", "next_ratio", "fit_mse", "next_mse")}
        for k in range(len(batches) - 1):
            b, nxt = batches[k], batches[k + 1]
            walls, cpus = [], []
            for r in range(repeats):
                rng = np.random.default_rng([seed, k, r])
                w0, c0 = time.perf_counter(), time.process_time()
                theta = fit(b, rng)
                walls.append(time.perf_counter() - w0)
                cpus.append(time.process_time() - c0)
            before = mse(net, b["theta"], b["obs"], b["targets"])
            next_before = mse(net, b["theta"], nxt["obs"], nxt["targets"])
            fit_mse = mse(net, theta, b["obs"], b["targets"])
            next_mse = mse(net, theta, nxt["obs"], nxt["targets"])
            stats["wall_ms"].append(1e3 * float(np.median(walls)))
            stats["cpu_ms"].append(1e3 * float(np.median(cpus)))
            stats["fit_mse"].append(fit_mse)
            stats["next_mse"].append(next_mse)
            stats["fit_ratio"].append(fit_mse / before)
            stats["next_ratio"].append(next_mse / next_before)
        rows[spec] = stats
    return {"env_id": env_id, "seed": seed, "updates": updates, "batch_size": cfg.batch_size,
            "config": json.loads(cfg.to_json()), "rows": rows}


def batches_table(results: list[dict]) -> str:
    """Markdown: per env and fitter, medians over (seed, batch) of time and MSE ratios."""
    lines = ["| env | fitter | wall ms/fit | CPU ms/fit | MSE after / before (fitted batch) "
             "| MSE next batch / unfitted | next-batch ratio > 1 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    by_env: dict[str, list[dict]] = {}
    for res in results:
        by_env.setdefault(res["env_id"], []).append(res)
    for env_id, runs in by_env.items():
        for spec in runs[0]["rows"]:
            cat = {k: np.concatenate([r["rows"][spec][k] for r in runs])
                   for k in runs[0]["rows"][spec]}
            worse = float(np.mean(cat["next_ratio"] > 1.0))
            lines.append(
                f"| {env_id} | `{spec}` | {np.median(cat['wall_ms']):.1f} | "
                f"{np.median(cat['cpu_ms']):.1f} | {np.median(cat['fit_ratio']):.3f} | "
                f"{np.median(cat['next_ratio']):.3f} (mean {np.mean(cat['next_ratio']):.3f}) | "
                f"{100 * worse:.0f}% |")
    return "\n".join(lines)


# --------------------------------------------------------------------- learn
def tag_of(spec: str) -> str:
    return spec.replace(":", "_").replace(",", "_").replace("=", "")


def install_fitter(agent: TRPO, spec: str) -> dict[str, float]:
    """BENCHMARK HARNESS: replace ``agent.value.fit`` on this instance by the fitter ``spec``.

    Keeps ``ValueFunction.fit``'s contract (fits ``agent.value.theta`` in place of the old
    one, returns the MSE before the fit) and times every fit.
    """
    timing = {"fit_wall": 0.0, "fit_cpu": 0.0, "fits": 0.0}
    value = agent.value
    original_fit = value.fit
    tr = TrustRegionValueFit(value.net, **tr_settings(spec)) if spec.startswith("tr") else None

    def timed_fit(obs, targets, rng, **kwargs):
        w0, c0 = time.perf_counter(), time.process_time()
        if tr is None:
            loss = original_fit(obs, targets, rng, **{**kwargs, "optimizer": spec})
        else:
            value.theta, info = tr.fit(value.theta, obs, targets, rng=rng)
            loss = info["mse_before"]
        timing["fit_wall"] += time.perf_counter() - w0
        timing["fit_cpu"] += time.process_time() - c0
        timing["fits"] += 1
        return loss

    value.fit = timed_fit  # type: ignore[method-assign]
    return timing


def learn_one(env_id: str, seed: int, spec: str, timesteps: int, force: bool) -> dict:
    out = RESULTS_DIR / f"value_fit_learn_{env_id}_seed{seed}_{tag_of(spec)}.json"
    if out.exists() and not force:
        return json.loads(out.read_text())
    agent = TRPO(env_id, seed=seed)
    timing = install_fitter(agent, spec)
    started = time.perf_counter()
    agent.learn(timesteps)
    train_wall = time.perf_counter() - started
    final_mean, final_std = agent.evaluate(10, deterministic=True, seed=1000 + seed)
    m = agent.metrics
    result = {
        "benchmark": "value_fit_learn", "env_id": env_id, "seed": seed, "fitter": spec,
        "timesteps": agent.num_timesteps, "config": json.loads(agent.config.to_json()),
        "final_eval_mean": final_mean, "final_eval_std": final_std,
        "eval": {"episodes": 10, "deterministic": True, "seed": 1000 + seed},
        "train_wall_s": train_wall,
        "update_time_s": float(sum(x["update_time"] for x in m)),
        "env_time_s": float(sum(x["env_time"] for x in m)),
        "critic_fit_wall_s": timing["fit_wall"], "critic_fit_cpu_s": timing["fit_cpu"],
        "explained_variance_last10": float(np.nanmean([x["explained_variance"] for x in m[-10:]])),
        "curve": {"timesteps": [x["timesteps"] for x in m],
                  "ep_return_mean": [x["ep_return_mean"] for x in m]},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    agent.close()
    write_json(out, result)
    return result


def learn_table(results: list[dict]) -> str:
    lines = ["| env | fitter | final eval per seed | mean | critic fit wall s (CPU s) "
             "| update wall s | train wall s |", "|---|---|---|---:|---:|---:|---:|"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["env_id"], r["fitter"]), []).append(r)
    for (env_id, spec), runs in sorted(groups.items()):
        runs.sort(key=lambda r: r["seed"])
        finals = " / ".join(f"{r['final_eval_mean']:.0f}" for r in runs)
        lines.append(
            f"| {env_id} | `{spec}` | {finals} (seeds {','.join(str(r['seed']) for r in runs)})"
            f" | {np.mean([r['final_eval_mean'] for r in runs]):.1f} | "
            f"{np.mean([r['critic_fit_wall_s'] for r in runs]):.1f} "
            f"({np.mean([r['critic_fit_cpu_s'] for r in runs]):.1f}) | "
            f"{np.mean([r['update_time_s'] for r in runs]):.2f} | "
            f"{np.mean([r['train_wall_s'] for r in runs]):.1f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------- main
def load_kernels(checkout: Path):
    """``rl_adapters/_kernels.py`` of another checkout, as a module of its own."""
    import importlib.util

    path = checkout / "rl_adapters" / "_kernels.py"
    spec = importlib.util.spec_from_file_location("baseline_kernels", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--baseline: no {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, so that Numba's cache of its kernels (pickled with the
    # module's name) loads in the next run instead of failing.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


#: The compiled Adam fit of each ``value_dtype`` (the names in ``rl_adapters._kernels``).
MICRO_KERNELS = {"float64": "adam_fit", "float32": "adam_fit_float32"}


def micro(baseline: Path | None, repeats: int,
          dtypes: tuple[str, ...] = ("float64",)) -> dict[str, Any]:
    """Interleaved CPU timings of the compiled Adam fit (ours and the baseline's), for
    each precision in ``dtypes``.

    Timings are named ``ours`` and ``baseline`` for float64 (as before the dtype switch),
    ``ours_float32`` and ``baseline_float32`` for float32 (a baseline without a float32
    fit is timed in float64 only).  With both precisions, ``float64_over_float32`` is
    the ratio of our two medians and ``max_abs_theta_diff_float32`` the largest
    parameter difference between them after the fit.
    """
    import os

    from rl_adapters import _kernels

    load_before = os.getloadavg()
    shapes: dict[str, Any] = {}
    base = None if baseline is None else load_kernels(baseline)
    kernels: dict[str, Any] = {}
    for dtype in dtypes:
        suffix = "" if dtype == "float64" else f"_{dtype}"
        kernels[f"ours{suffix}"] = getattr(_kernels, MICRO_KERNELS[dtype])
        if base is not None and hasattr(base, MICRO_KERNELS[dtype]):
            kernels[f"baseline{suffix}"] = getattr(base, MICRO_KERNELS[dtype])
    for label, (n, obs_dim, epochs) in {"mujoco": (2048, 17, 20),
                                        "pendulum": (1024, 3, 60)}.items():
        rng = np.random.default_rng(0)
        obs = rng.standard_normal((n, obs_dim))
        targets = np.sin(obs[:, 0]) + obs[:, -1]
        vf = ValueFunction(obs_dim, (64, 64))
        vf.init(rng)
        orders = np.stack([rng.permutation(n) for _ in range(epochs)])
        times: dict[str, list[float]] = {k: [] for k in kernels}
        thetas = {}
        for rep in range(repeats + 1):
            for name, fit in kernels.items():
                theta = vf.theta.copy()
                m, v = np.zeros_like(theta), np.zeros_like(theta)
                t0 = time.process_time()
                fit(theta, obs, targets, orders, 128, vf.net.sizes_array, False, 1e-3, 0.9,
                    0.999, 1e-5, m, v, 0, 0.0, vf._weight_mask)
                if rep > 0:  # the first round compiles (or loads the cache)
                    times[name].append(time.process_time() - t0)
                thetas[name] = theta
        line = f"{label} {n}x{obs_dim}, {epochs} epochs, batch 128:"
        row: dict[str, Any] = {"rows": n, "obs_dim": obs_dim, "epochs": epochs,
                               "batch_size": 128, "hidden": [64, 64], "activation": "tanh"}
        for name, ts in times.items():
            line += f" {name} {1e3 * np.median(ts):.1f} ms (min {1e3 * min(ts):.1f})"
            row[f"{name}_cpu_ms"] = [1e3 * x for x in ts]
            row[f"{name}_cpu_ms_median"] = 1e3 * float(np.median(ts))
        for suffix in ("", *(f"_{d}" for d in dtypes if d != "float64")):
            if f"baseline{suffix}" in times and f"ours{suffix}" in times:
                ratio = (np.median(times[f"baseline{suffix}"])
                         / np.median(times[f"ours{suffix}"]))
                diff = np.max(np.abs(thetas[f"ours{suffix}"] - thetas[f"baseline{suffix}"]))
                line += f"; baseline/ours{suffix} {ratio:.2f}x, max |theta diff| {diff:.1e}"
                row[f"baseline_over_ours{suffix}"] = float(ratio)
                row[f"max_abs_theta_diff{suffix}"] = float(diff)
        if "ours" in times and "ours_float32" in times:
            ratio = np.median(times["ours"]) / np.median(times["ours_float32"])
            diff = np.max(np.abs(thetas["ours"] - thetas["ours_float32"]))
            line += f"; float64/float32 {ratio:.2f}x, max |theta diff| {diff:.1e}"
            row["float64_over_float32"] = float(ratio)
            row["max_abs_theta_diff_float32"] = float(diff)
        shapes[label] = row
        print(line, flush=True)
    return {"benchmark": "value_fit_micro", "clock": "process_time", "blas_threads": 1,
            "repeats": repeats, "baseline": None if baseline is None else str(baseline),
            "dtypes": list(dtypes), "shapes": shapes,
            "load_average_1_5_15min": {"before": load_before, "after": os.getloadavg()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pb = sub.add_parser("batches", help="record batches, compare the fitters on them")
    pb.add_argument("envs", nargs="+")
    pb.add_argument("--seeds", type=int, nargs="+", default=[0])
    pb.add_argument("--updates", type=int, default=30)
    pb.add_argument("--repeats", type=int, default=3)
    pb.add_argument("--fitters", nargs="+", default=list(FITTERS))
    pl = sub.add_parser("learn", help="100k-step learning runs with each fitter")
    pl.add_argument("envs", nargs="+")
    pl.add_argument("--seeds", type=int, nargs="+", default=list(TUNING_SEEDS))
    pl.add_argument("--timesteps", type=int, default=100_000)
    pl.add_argument("--fitters", nargs="+", default=list(FITTERS))
    pl.add_argument("--force", action="store_true")
    sub.add_parser("summary", help="tables of every result file")
    pm = sub.add_parser("micro", help="CPU time of the compiled Adam fit")
    pm.add_argument("--baseline", type=Path, default=None,
                    help="another checkout whose adam_fit is timed alongside")
    pm.add_argument("--repeats", type=int, default=10)
    pm.add_argument("--dtypes", nargs="+", choices=sorted(MICRO_KERNELS),
                    default=["float64"], help="precisions of the passes to time, "
                    "interleaved (TRPOConfig.value_dtype); default float64")
    pm.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    if args.command == "micro":
        with blas_one_thread():  # as TRPO trains (TRPOConfig.blas_threads = 1)
            payload = micro(args.baseline, args.repeats, tuple(args.dtypes))
        if args.out is not None:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from bench_trpo_learn import machine_info

            write_json(args.out, {**payload, "machine": machine_info()})
        return 0

    if args.command == "summary":
        files = sorted(RESULTS_DIR.glob("value_fit_*.json"))
        res = [json.loads(p.read_text()) for p in files]
        batch_res = [r for r in res if r.get("benchmark") == "value_fit_batches"]
        for r in batch_res:
            print(f"{r['env_id']} seeds {r['seeds']}, {r['updates']} updates:\n")
            print(batches_table(r["runs"]), "\n")
        print(learn_table([r for r in res if r.get("benchmark") == "value_fit_learn"]))
        return 0
    check_seeds(args.seeds)
    with blas_one_thread():
        if args.command == "batches":
            for env_id in args.envs:
                runs = [compare_batches(env_id, s, args.updates, args.fitters, args.repeats)
                        for s in args.seeds]
                payload = {"benchmark": "value_fit_batches", "env_id": env_id,
                           "seeds": args.seeds, "updates": args.updates, "runs": runs,
                           "command": " ".join([Path(sys.executable).name, *sys.argv])}
                write_json(RESULTS_DIR / f"value_fit_batches_{env_id}.json", payload)
                print(batches_table(runs))
        else:
            results = []
            for env_id in args.envs:
                for spec in args.fitters:
                    for seed in args.seeds:
                        r = learn_one(env_id, seed, spec, args.timesteps, args.force)
                        print(f"{env_id} seed {seed} {spec}: {r['final_eval_mean']:.1f} "
                              f"(critic {r['critic_fit_wall_s']:.2f} s, "
                              f"update {r['update_time_s']:.2f} s)", flush=True)
                        results.append(r)
            print(learn_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
