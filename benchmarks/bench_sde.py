"""Cost of gSDE against the plain diagonal Gaussian policy, same process, same data.

On a HalfCheetah-sized problem (obs 17, act 6, MLP 64x64 tanh, batch 2048 observations of
HalfCheetah-v5 under random actions, seed 0; standard-normal observations with
``--synthetic`` or when MuJoCo is missing), times, interleaved within every repeat so both
policies see the same background load:

- ``fvp``: one Fisher-vector product through a :class:`~rl_adapters.policies.FisherOperator`
  (forward pass cached once), in float64 and float32;
- ``setup``: the once-per-update forward pass with cache plus the policy gradient;
- ``act``: one collector step for ``n_envs`` environments (``act_from_noise`` for the
  diagonal Gaussian, :meth:`StateDependentNoise.act` without a redraw for gSDE).

The figure of merit is the ratio gSDE / diagonal per measurement.  BLAS is pinned to
``--threads`` threads (default 1).  Writes ``benchmarks/results/ours_sde.json``.

Run from the repository root::

    .venv/bin/python benchmarks/bench_sde.py [--repeats 300] [--clock cpu] [--synthetic]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trpo_learn import RESULTS_DIR, machine_info, write_json
from common import collect_random_observations

from rl_adapters.policies import DiagGaussianPolicy, FisherOperator
from rl_adapters.sde import StateDependentGaussianPolicy, StateDependentNoise

OBS_DIM, ACT_DIM, HIDDEN = 17, 6, (64, 64)


def observations(batch: int, seed: int, synthetic: bool) -> tuple[np.ndarray, str]:
    if not synthetic:
        try:
            obs, _ = collect_random_observations("HalfCheetah-v5", batch, seed, np.float64)
            return obs, f"HalfCheetah-v5 with random actions, seed {seed}"
        except Exception as exc:  # MuJoCo not installed: say so in the result
            reason = f"{type(exc).__name__}: {exc}"
        else:  # pragma: no cover
            reason = ""
    else:
        reason = "--synthetic"
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, OBS_DIM)), f"standard normal ({reason})"


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def interleaved(contenders: dict[str, Any], repeats: int, warmup: int,
                clock=time.perf_counter) -> dict[str, dict]:
    """Median (and spread) per call in ms, the contenders timed in turn in every repeat."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            t0 = clock()
            fn()
            samples[name].append((clock() - t0) * 1e3)
    out = {}
    for name, s in samples.items():
        q10, q90 = np.percentile(s, [10, 90])
        out[name] = {"median_ms": statistics.median(s), "p10_ms": float(q10),
                     "p90_ms": float(q90), "repeats": repeats}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--act-repeats", type=int, default=3000)
    parser.add_argument("--n-envs", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or process CPU time (robust to other load on the "
                             "machine; BLAS is single-threaded by default)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "ours_sde.json")
    args = parser.parse_args(argv)

    obs, source = observations(args.batch, args.seed, args.synthetic)
    rng = np.random.default_rng(args.seed)
    diag = DiagGaussianPolicy(OBS_DIM, ACT_DIM, HIDDEN, "tanh", 0.0)
    sde = StateDependentGaussianPolicy(OBS_DIM, ACT_DIM, HIDDEN, "tanh", log_std_init=-2.0)
    policies = {"diag": diag, "sde": sde}
    thetas = {name: p.init_params(rng) for name, p in policies.items()}
    adv = rng.standard_normal(args.batch)
    actions = {}
    for name, p in policies.items():
        _, actions[name], _ = p.act(thetas[name], obs, rng)

    result: dict[str, Any] = {
        "benchmark": "ours_sde", "batch": args.batch, "observation_source": source,
        "obs_dim": OBS_DIM, "act_dim": ACT_DIM, "hidden": list(HIDDEN),
        "parameters": {name: p.n_params for name, p in policies.items()},
        "blas_threads": args.threads, "clock": args.clock,
    }
    clock = CLOCKS[args.clock]
    with threadpool_limits(limits=args.threads, user_api="blas"):
        for dtype in (np.float64, np.float32):
            ops, vs = {}, {}
            for name, p in policies.items():
                out, cache = p.outputs(thetas[name], obs, keep_cache=True)
                ops[name] = FisherOperator(p, thetas[name], cache, out, dtype)
                vs[name] = rng.standard_normal(p.n_params)
            calls = {name: (lambda op=ops[name], v=vs[name]: op(v)) for name in policies}
            timing = interleaved(calls, args.repeats, warmup=20, clock=clock)
            timing["ratio_sde_over_diag"] = (timing["sde"]["median_ms"]
                                             / timing["diag"]["median_ms"])
            result[f"fvp_{np.dtype(dtype).name}"] = timing

        def setup(name):
            p, th = policies[name], thetas[name]
            out, cache = p.outputs(th, obs, keep_cache=True)
            return p.surrogate_gradient(th, cache, out, actions[name], adv)

        timing = interleaved({name: (lambda n=name: setup(n)) for name in policies},
                             max(args.repeats // 3, 10), warmup=5, clock=clock)
        timing["ratio_sde_over_diag"] = timing["sde"]["median_ms"] / timing["diag"]["median_ms"]
        result["setup_forward_grad"] = timing

        for n_envs in args.n_envs:
            step_obs = np.ascontiguousarray(obs[:n_envs])
            noise = diag.draw_noise(rng, (n_envs,))
            act_out = np.empty((n_envs, ACT_DIM))
            explore = StateDependentNoise(sde, n_envs, sample_freq=-1)
            rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(1).spawn(n_envs)]
            explore.begin_rollout()
            explore.act(thetas["sde"], step_obs, rngs, act_out)  # the draw, then no more
            timing = interleaved({
                "diag": lambda o=step_obs, z=noise, a=act_out: diag.act_from_noise(
                    thetas["diag"], o, z, a),
                "sde": lambda o=step_obs, e=explore, r=rngs, a=act_out: e.act(
                    thetas["sde"], o, r, a),
            }, args.act_repeats, warmup=50, clock=clock)
            timing["ratio_sde_over_diag"] = (timing["sde"]["median_ms"]
                                             / timing["diag"]["median_ms"])
            result[f"act_{n_envs}_envs"] = timing
    result["notes"] = [
        "fvp: FisherOperator call, forward pass cached; gSDE adds the variance's JVP/VJP "
        "(two (N, 64) x (64, 6) products, phi^2 and the metric) to the network's JVP/VJP",
        "act: per-step sampling for n_envs rows; gSDE without a matrix redraw "
        "(sde_sample_freq=-1 after the first step)",
        "interleaved medians; ratio = sde / diag",
    ]
    result["machine"] = machine_info()
    write_json(args.out, result)
    for key, value in result.items():
        if isinstance(value, dict) and "ratio_sde_over_diag" in value:
            print(f"{key:22s} diag {value['diag']['median_ms']:8.4f} ms   "
                  f"sde {value['sde']['median_ms']:8.4f} ms   "
                  f"ratio {value['ratio_sde_over_diag']:.2f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
