"""Speed benchmark, our side: Fisher-vector product, CG, end-to-end steps/s on HalfCheetah-v5.

Mirrors ``benchmarks/peers/sb3_trpo.py`` (same observations, same network, same
hyperparameters) and writes ``benchmarks/results/ours_<what>.json``:

``fvp``
    Our Fisher-vector product ``(1/N) J^T M J v`` (forward pass cached once per update) on
    2048 HalfCheetah-v5 observations (random actions, seed 0) for a 64x64 tanh Gaussian
    policy, and CG solves with exactly 15 and 25 iterations (``rtol=0``) and with the
    default tolerance, through ``trustregion.cg`` with damping 0.1; plus the once-per-update
    setup (forward with cache, policy gradient).
``steps``
    End-to-end ``TRPO.learn`` throughput with one env and the zoo's HalfCheetah settings,
    the time inside the raw env's ``step``/``reset`` (a timing wrapper directly around
    ``gym.make``), the time inside the vector env's ``step``, and the env-only rate.

Run from the repository root::

    .venv/bin/python benchmarks/bench_trpo_speed.py fvp
    .venv/bin/python benchmarks/bench_trpo_speed.py steps --timesteps 50000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trpo_learn import RESULTS_DIR, machine_info, peak_rss_mib, write_json, zoo_config
from common import collect_random_observations

from rl_adapters import TRPO
from rl_adapters.agent import _blas_threads
from rl_adapters.policies import DiagGaussianPolicy, FisherOperator
from rl_adapters.rollout import SnapshotWrapper
from trustregion import cg

ENV_ID = "HalfCheetah-v5"


def time_calls(fn, repeats: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    q10, q90 = np.percentile(samples, [10, 90])
    return {"median_ms": statistics.median(samples), "mean_ms": statistics.fmean(samples),
            "p10_ms": float(q10), "p90_ms": float(q90), "min_ms": min(samples),
            "repeats": repeats}


def cmd_fvp(args: argparse.Namespace) -> dict[str, Any]:
    obs, actions = collect_random_observations(ENV_ID, args.batch, args.seed, np.float64)
    rng = np.random.default_rng(args.seed)
    env = gym.make(ENV_ID)
    policy = DiagGaussianPolicy(obs.shape[1], actions.shape[1], (64, 64), "tanh", 0.0,
                                env.action_space.low, env.action_space.high)
    theta = policy.init_params(rng)
    adv = rng.standard_normal(len(obs))
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    damping = 0.1

    dtype = np.dtype(args.dtype)

    def setup():
        out, cache = policy.outputs(theta, obs, keep_cache=True)
        g = policy.surrogate_gradient(theta, cache, out, actions, adv)
        return FisherOperator(policy, theta, cache, out, dtype), g

    fisher, g = setup()
    v = rng.standard_normal(policy.n_params)
    other = FisherOperator(policy, theta, *policy.outputs(theta, obs, keep_cache=True)[::-1],
                           np.float64 if dtype == np.float32 else np.float32)
    with _blas_threads(args.threads):
        result: dict[str, Any] = {
            "benchmark": "ours_fvp", "env_id": ENV_ID, "batch": args.batch,
            "observation_source": f"{ENV_ID} with random actions, seed {args.seed}",
            "policy": "DiagGaussianPolicy, MLP 64x64 tanh, state-independent log std",
            "actor_parameters": policy.n_params, "cg_damping": damping,
            "fvp_dtype": str(dtype), "blas_threads": args.threads,
            "fvp": time_calls(lambda: fisher(v), args.fvp_repeats, warmup=20),
            f"fvp_{other.dtype}": time_calls(lambda: other(v), args.fvp_repeats, warmup=20),
        }
        for iters in (15, 25):
            counter = FisherOperator(policy, fisher.theta, fisher.cache, fisher.outputs, dtype)
            cg(counter, g, rtol=0.0, maxiter=iters, damping=damping)
            timing = time_calls(lambda iters=iters: cg(fisher, g, rtol=0.0, maxiter=iters,
                                                        damping=damping),
                                args.cg_repeats, warmup=3)
            timing["rtol"] = 0.0
            timing["fvp_calls_per_solve"] = counter.n_calls
            result[f"cg{iters}"] = timing
            counter = FisherOperator(policy, fisher.theta, fisher.cache, fisher.outputs, dtype)
            cg(counter, g, rtol=1e-10, maxiter=iters, damping=damping)
            timing = time_calls(lambda iters=iters: cg(fisher, g, rtol=1e-10, maxiter=iters,
                                                        damping=damping),
                                args.cg_repeats, warmup=3)
            timing["rtol"] = 1e-10
            timing["fvp_calls_per_solve"] = counter.n_calls
            result[f"cg{iters}_default_tol"] = timing
        result["setup_forward_grad"] = time_calls(setup, args.cg_repeats, warmup=3)
    if args.with_peer:
        result["peer_same_process"] = peer_fvp(args)
        peer = result["peer_same_process"]
        result["ratios_peer_over_ours"] = {
            "fvp": peer["hvp"]["median_ms"] / result["fvp"]["median_ms"],
            "cg15": peer["cg15"]["median_ms"] / result["cg15"]["median_ms"],
            "cg25": peer["cg25"]["median_ms"] / result["cg25"]["median_ms"],
        }
    result["notes"] = [
        "fvp = JVP through the cached forward pass, diag-Gaussian Fisher product "
        "(trustregion.distributions), VJP; no damping inside (CG adds it); in fvp_dtype on "
        "copies of the cache (float32 by default, as the agent), result in float64",
        "cgK: trustregion.cg with maxiter=K, rtol=0 (exactly K iterations, K matvecs)",
        "setup = forward pass with cache + policy gradient, once per update",
    ]
    result["machine"] = machine_info()
    return result


def peer_fvp(args: argparse.Namespace) -> dict[str, Any]:
    """SB3-contrib's Hessian-vector product and CG, timed in this process right after ours.

    Uses the peer script's own setup (``benchmarks/peers/sb3_trpo.py``: same observations,
    zoo model, ``TRPO.hessian_vector_product`` with ``create_graph=True``), torch on
    ``args.threads`` threads.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
    import sb3_trpo as peer
    import torch as th
    from sb3_contrib.common.utils import conjugate_gradient_solver
    from stable_baselines3.common.env_util import make_vec_env

    peer.set_threads(args.threads)
    th.manual_seed(args.seed)
    observations, actions = peer.collect_random_observations(ENV_ID, args.batch, args.seed)
    model = peer.make_model(make_vec_env(ENV_ID, n_envs=1, seed=args.seed), ENV_ID, args.seed)
    hvp, grad, _ = peer.build_sb3_hvp(model, observations, actions, args.seed)
    vector = th.randn(grad.numel(), generator=th.Generator().manual_seed(args.seed))
    out = {"torch": th.__version__, "torch_threads": th.get_num_threads(),
           "hvp": time_calls(lambda: hvp(vector), args.fvp_repeats, warmup=20)}
    for iters in (15, 25):
        out[f"cg{iters}"] = time_calls(
            lambda iters=iters: conjugate_gradient_solver(hvp, grad, max_iter=iters,
                                                          residual_tol=0.0),
            args.cg_repeats, warmup=3)
        out[f"cg{iters}"]["note"] = f"residual_tol=0: {iters} iterations, {iters + 1} hvp calls"
    return out


class EnvStepTimer(gym.Wrapper):
    """Wall time inside the wrapped env's ``step`` and ``reset`` (same as the peer's)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.seconds = 0.0

    def step(self, action):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        out = self.env.step(action)
        self.seconds += time.perf_counter() - start
        return out

    def reset(self, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        out = self.env.reset(**kwargs)
        self.seconds += time.perf_counter() - start
        return out


def env_only_rate(n_steps: int, seed: int) -> dict[str, float]:
    env = gym.make(ENV_ID)
    space = env.action_space
    rng = np.random.default_rng(seed)
    actions = rng.uniform(space.low, space.high, size=(n_steps, *space.shape)).astype(space.dtype)
    env.reset(seed=seed)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    seconds = time.perf_counter() - start
    return {"steps": n_steps, "seconds": seconds, "steps_per_s": n_steps / seconds}


def cmd_steps(args: argparse.Namespace) -> dict[str, Any]:
    config, _ = zoo_config(ENV_ID)
    runs = []
    for n_steps in args.n_steps or [config.n_steps]:
        cfg = config.replace(n_envs=1, n_steps=n_steps, vector_env="sync")
        timer = EnvStepTimer(gym.make(ENV_ID))
        venv = gym.vector.SyncVectorEnv([lambda timer=timer: SnapshotWrapper(timer)],
                                        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        agent = TRPO(venv, seed=args.seed, config=cfg)
        timer.seconds = 0.0  # the first reset belongs to construction
        start, cpu_start = time.perf_counter(), time.process_time()
        agent.learn(args.timesteps)
        total = time.perf_counter() - start
        cpu_total = time.process_time() - cpu_start
        m = agent.metrics
        vec_seconds = sum(x["env_time"] for x in m)
        update_seconds = sum(x["update_time"] for x in m)
        policy_seconds = sum(x["policy_time"] for x in m)
        run = {
            "n_envs": 1, "n_steps": n_steps, "timesteps": agent.num_timesteps,
            "updates": agent.n_updates, "seconds": total,
            "steps_per_s": agent.num_timesteps / total,
            "cpu_seconds": cpu_total,
            "steps_per_cpu_s": agent.num_timesteps / cpu_total,
            "env_seconds_in_run": timer.seconds,
            "vector_env_step_seconds": vec_seconds,
            "update_seconds": update_seconds,
            "rollout_policy_seconds": policy_seconds,
            "fraction_outside_env": 1.0 - timer.seconds / total,
            "fraction_outside_vector_env_step": 1.0 - vec_seconds / total,
            "peak_rss_mib": peak_rss_mib(),
        }
        runs.append(run)
        print(f"n_steps={n_steps}: {run['steps_per_s']:.0f} steps/s, "
              f"outside env {run['fraction_outside_env']:.1%}", flush=True)
    env_only = env_only_rate(args.timesteps, args.seed)
    peer = None
    if args.with_peer:
        sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
        import sb3_trpo

        sb3_trpo.set_threads(args.threads)
        peer = [sb3_trpo.train_throughput(ENV_ID, args.timesteps, args.seed, run["n_steps"])
                for run in runs]
        for ours, theirs in zip(runs, peer, strict=True):
            ours["peer_steps_per_s_same_process"] = theirs["steps_per_s"]
            ours["ratio_ours_over_peer"] = ours["steps_per_s"] / theirs["steps_per_s"]
            ours["peer_steps_per_cpu_s_same_process"] = theirs.get("steps_per_cpu_s")
            if theirs.get("steps_per_cpu_s"):
                ours["ratio_ours_over_peer_cpu"] = (ours["steps_per_cpu_s"]
                                                    / theirs["steps_per_cpu_s"])
            print(f"peer n_steps={theirs['n_steps']}: {theirs['steps_per_s']:.0f} steps/s; "
                  f"ratio {ours['ratio_ours_over_peer']:.2f}", flush=True)
    for run in runs:
        run["fraction_outside_env_from_env_only_rate"] = (
            1.0 - (run["timesteps"] / env_only["steps_per_s"]) / run["seconds"])
    return {
        "benchmark": "ours_steps", "env_id": ENV_ID,
        "config": json.loads(config.replace(n_envs=1).to_json()), "runs": runs,
        "env_only": env_only,
        "peer_same_process": peer,
        "notes": [
            "one env; n_steps per update as in the peer's run",
            "env_seconds_in_run: time inside gym.make(env) step/reset during learn; "
            "fraction_outside_env = 1 - env_seconds_in_run / seconds (the peer's definition)",
            "vector_env_step_seconds adds Gymnasium's SyncVectorEnv and our snapshot wrapper",
        ],
        "machine": machine_info(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads")
    sub = parser.add_subparsers(dest="command", required=True)
    fvp = sub.add_parser("fvp")
    fvp.add_argument("--batch", type=int, default=2048)
    fvp.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                     help="FVP precision (the agent's default fvp_dtype is float32)")
    fvp.add_argument("--fvp-repeats", type=int, default=1000)
    fvp.add_argument("--cg-repeats", type=int, default=100)
    fvp.add_argument("--with-peer", action="store_true",
                     help="also time SB3-contrib's HVP and CG in this process (needs torch)")
    steps = sub.add_parser("steps")
    steps.add_argument("--timesteps", type=int, default=50_000)
    steps.add_argument("--n-steps", type=int, nargs="*")
    steps.add_argument("--with-peer", action="store_true",
                       help="also time SB3-contrib's TRPO.learn in this process (needs torch)")
    args = parser.parse_args(argv)
    result = cmd_fvp(args) if args.command == "fvp" else cmd_steps(args)
    out = RESULTS_DIR / f"ours_{args.command}.json"
    write_json(out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
