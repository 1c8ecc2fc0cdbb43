"""Scale-out benchmark: steps/s against the number of Ray workers K, and Ray's costs.

Writes ``benchmarks/results/ours_ray.json``; ``docs/benchmarks/ray.md`` reads it.

``steps``
    For each environment (HalfCheetah-v5; ``Sleepy1ms``, a tiny env whose ``step`` sleeps
    1 ms, the stand-in for a slow simulator), ``TRPO.learn`` updates with the local sync and
    async vector envs and with ``vector_env="ray"`` for K workers, all with
    ``obs_norm_update="per_rollout"`` (identical training for every row).  Per update:
    the rollout's steps/s (collection only) and the whole update's steps/s; medians over
    the timed updates after one warm-up update.
``costs``
    Ray's per-update overheads measured with a bare actor: the latency of one actor call,
    the broadcast (``ray.put`` of the policy parameters and K workers reading them) and the
    gather (K workers returning a rollout segment of a given size); and the
    data-parallel Fisher product against the in-process one for a few batch and network
    sizes.

Run from the repository root (measure one thing at a time on a shared machine)::

    .venv/bin/python benchmarks/bench_ray.py steps --repeats 3
    .venv/bin/python benchmarks/bench_ray.py costs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rl_adapters import TRPO
from rl_adapters.rollout import LeanSyncVectorEnv, SnapshotWrapper

RESULTS = Path(__file__).resolve().parent / "results" / "ours_ray.json"


class Sleepy1ms(gym.Env):
    """4-d random-walk observations, 2-d Box actions, 1 ms of sleep per step, 200 steps."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float64)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float64)

    def __init__(self) -> None:
        self.state = np.zeros(4)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = self.np_random.standard_normal(4)
        self.t = 0
        return self.state.copy(), {}

    def step(self, action):
        time.sleep(0.001)
        self.t += 1
        self.state = 0.9 * self.state + 0.1 * self.np_random.standard_normal(4)
        reward = -float(np.sum(np.square(action)))
        return self.state.copy(), reward, False, self.t >= 200, {}


def _load() -> dict[str, Any]:
    return {"load_average": list(os.getloadavg()), "cpus": os.cpu_count()}


def _local_env(env: Any, n_envs: int, kind: str):
    if isinstance(env, str):
        return env
    fns = [lambda: SnapshotWrapper(env())] * n_envs
    if kind == "async":
        return gym.vector.AsyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    return LeanSyncVectorEnv(fns)


def measure(env: Any, settings: dict[str, Any], kind: str, k: int, updates: int
            ) -> dict[str, float]:
    """Median rollout and update steps/s over ``updates`` updates after one warm-up."""
    overrides = dict(settings, obs_norm_update="per_rollout")
    if kind == "ray":
        overrides.update(vector_env="ray", n_workers=k)
        agent = TRPO(env, seed=0, **overrides)
    else:
        overrides["vector_env"] = "sync" if kind == "sync" else "async"
        agent = TRPO(_local_env(env, settings["n_envs"], kind), seed=0, **overrides)
    try:
        agent.learn(agent.config.batch_size)  # warm-up: actor start, JIT caches
        n = agent.config.batch_size
        rollout, update = [], []
        for _ in range(updates):
            t0 = time.perf_counter()
            metrics = agent.train_one_update()
            wall = time.perf_counter() - t0
            update.append(n / wall)
            rollout.append(n / (wall - metrics["update_time"]))
        return {"rollout_steps_per_s": statistics.median(rollout),
                "update_steps_per_s": statistics.median(update)}
    finally:
        agent.close()


ENVS: dict[str, tuple[Any, dict[str, Any]]] = {
    "Sleepy1ms": (Sleepy1ms, {"n_envs": 8, "n_steps": 64, "value_optimizer": "adam",
                              "value_epochs": 2}),
    "HalfCheetah-v5": ("HalfCheetah-v5", {"n_envs": 8, "n_steps": 256,
                                          "normalize_obs": True}),
}


def steps(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    out: dict[str, Any] = {}
    for name in args.envs:
        env, settings = ENVS[name]
        if args.n_steps:
            settings = {**settings, "n_steps": args.n_steps}
        rows = [("ray", k) for k in args.workers]
        if not args.ray_only:
            rows = [("sync", 1), ("async", 1), *rows]
        labels = [kind if kind != "ray" else f"ray K={k}" for kind, k in rows]
        runs: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
        # Rows interleaved within each repeat: a change of the machine's load hits all rows.
        for _ in range(args.repeats):
            for (kind, k), label in zip(rows, labels, strict=True):
                load = os.getloadavg()[0]
                runs[label].append({**measure(env, settings, kind, k, args.updates),
                                    "load1": load})
        out[name] = {"settings": settings, "rows": {}}
        for label in labels:
            med = {key: statistics.median(r[key] for r in runs[label])
                   for key in runs[label][0]}
            out[name]["rows"][label] = {"median": med, "runs": runs[label]}
            print(f"{name:15s} {label:9s} rollout {med['rollout_steps_per_s']:9.0f} steps/s  "
                  f"update {med['update_steps_per_s']:9.0f} steps/s  load {med['load1']:.1f}",
                  flush=True)
    ray.shutdown()
    return out


def _timeit(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def costs(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from rl_adapters.ray_workers import FisherShards

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)

    @ray.remote
    class Echo:
        def noop(self):
            return None

        def take(self, x):
            return x.shape[0]

        def give(self, n_bytes):
            return np.ones(n_bytes // 8)

    out: dict[str, Any] = {"latency": {}, "broadcast": {}, "gather": {}, "fvp": {}}
    actors = [Echo.remote() for _ in range(max(args.workers))]
    ray.get([a.noop.remote() for a in actors])
    out["latency"]["one_call_s"] = _timeit(lambda: ray.get(actors[0].noop.remote()), 200)
    for k in args.workers:
        group = actors[:k]
        for n_params in (5_000, 100_000):  # a 64x64 policy; a 256x256 one
            theta = np.ones(n_params)

            def broadcast(group=group, theta=theta):
                ref = ray.put(theta)
                ray.get([a.take.remote(ref) for a in group])

            out["broadcast"][f"K={k} params={n_params}"] = _timeit(broadcast, 50)
        for seg_bytes in (100_000, 1_000_000, 10_000_000):
            def gather(group=group, seg_bytes=seg_bytes):
                ray.get([a.give.remote(seg_bytes // len(group)) for a in group])

            out["gather"][f"K={k} bytes={seg_bytes}"] = _timeit(gather, 20)
    print(json.dumps({k: out[k] for k in ("latency", "broadcast", "gather")}, indent=1))
    for a in actors:
        ray.kill(a)
    from gymnasium import spaces
    from threadpoolctl import threadpool_limits

    from rl_adapters.policies import make_policy

    # One BLAS thread, as TRPO.learn runs (blas_threads=1) and as Ray's workers run.
    limit = threadpool_limits(limits=1, user_api="blas")
    rng = np.random.default_rng(0)
    for hidden in ((64, 64), (256, 256)):
        policy = make_policy(spaces.Box(-1, 1, (17,)), spaces.Box(-1, 1, (6,)), hidden=hidden)
        theta = policy.init_params(rng)
        for n in (2048, 16_384, 65_536):
            obs = rng.standard_normal((n, 17))
            v = rng.standard_normal(policy.n_params)
            single = policy.fisher_operator(theta, obs, dtype=np.float32)
            row = {"in_process_s": _timeit(lambda single=single, v=v: single(v), 10)}
            for k in (2,):
                shards = FisherShards(policy, k)
                op = shards.operator(theta, obs, np.float32)
                op(v)
                row[f"shards_{k}_s"] = _timeit(lambda op=op, v=v: op(v), 10)
                shards.close()
            out["fvp"][f"hidden={hidden} N={n}"] = row
            print(f"fvp hidden={hidden} N={n}: {row}", flush=True)
    limit.restore_original_limits()
    ray.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("steps", "costs"))
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--updates", type=int, default=3, help="timed updates per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row (median)")
    parser.add_argument("--n-steps", type=int, default=None, help="steps per env per update")
    parser.add_argument("--ray-only", action="store_true", help="skip the local vector envs")
    parser.add_argument("--key", default=None, help="result key (default: the command)")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    before = _load()
    t0 = time.time()
    data = steps(args) if args.what == "steps" else costs(args)
    results[args.key or args.what] = {"data": data, "command": " ".join(sys.argv),
                                      "load_before": before, "load_after": _load(),
                                      "seconds": time.time() - t0}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
