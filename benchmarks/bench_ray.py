"""Scale-out benchmark: steps/s against the number of Ray workers K, and Ray's costs.

Writes ``benchmarks/results/ours_ray.json``; ``docs/benchmarks/ray.md`` reads it.

``steps``
    For each environment (HalfCheetah-v5; ``Sleepy1ms``, a tiny env whose ``step`` sleeps
    1 ms, the stand-in for a slow simulator), ``TRPO.learn`` updates with the local sync and
    async vector envs and with ``vector_env="ray"`` for K workers, all with
    ``obs_norm_update="per_rollout"`` (identical training for every row), and SB3-contrib's
    TRPO with ``SubprocVecEnv`` (one subprocess per env, the same number of envs and steps
    per update, the same networks and update sizes: :func:`sb3_kwargs`).  Per update: the
    rollout's steps/s (collection only) and the whole update's steps/s; medians over the
    timed updates after one warm-up update.  The rows run interleaved within each repeat,
    and each row's ratio to the SB3-contrib row of the same repeat is recorded.
``costs``
    Ray's per-update overheads measured with a bare actor: the latency of one actor call,
    the broadcast (``ray.put`` of the policy parameters and K workers reading them) and the
    gather (K workers returning a rollout segment of a given size); the size of one
    update's gathered segments for the ``steps`` settings, as sent (final observations of
    truncated episodes only) and as a dense ``(T, E, obs_dim)`` final-observation array
    would make it, and the gather time of both; and the data-parallel Fisher product
    against the in-process one for a few batch and network sizes.

The SB3-contrib row needs the ``bench`` extra (torch, SB3-contrib: benchmarks/README.md);
``--no-sb3`` skips it.  Run from the repository root (measure one thing at a time on a
shared machine)::

    .venv/bin/python benchmarks/bench_ray.py steps
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

from rl_adapters import TRPO, TRPOConfig
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


def sb3_kwargs(env: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """SB3-contrib ``TRPO`` arguments doing the update our ``settings`` do.

    The inverse of :meth:`TRPOConfig.from_sb3` for the fields that set the work per update:
    batch, networks, CG iterations, critic epochs and minibatch (Adam on both sides).
    """
    cfg = TRPOConfig.for_env(env if isinstance(env, str) else None,
                             **{k: v for k, v in settings.items() if k != "n_envs"})
    return {"n_steps": cfg.n_steps, "batch_size": cfg.value_batch_size,
            "learning_rate": cfg.value_lr, "gamma": cfg.gamma, "gae_lambda": cfg.gae_lambda,
            "cg_max_steps": cfg.cg_iters, "n_critic_updates": cfg.value_epochs,
            "policy_kwargs": {"net_arch": {"pi": list(cfg.policy_hidden),
                                           "vf": list(cfg.value_hidden)}}}


def measure_sb3(env: Any, settings: dict[str, Any], updates: int) -> dict[str, float]:
    """The same figures for SB3-contrib's TRPO on ``SubprocVecEnv`` (torch on one thread).

    An update's wall time runs from one rollout's start to the next's (rollout, ``train``
    and SB3's bookkeeping); the rollout's is that minus ``train``.
    """
    import torch
    from sb3_contrib import TRPO as SB3TRPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv, VecNormalize

    torch.set_num_threads(1)  # as our learner (blas_threads=1)
    n_envs = settings["n_envs"]
    venv = make_vec_env(env, n_envs=n_envs, seed=0, vec_env_cls=SubprocVecEnv)
    if settings.get("normalize_obs") or settings.get("normalize_reward"):
        venv = VecNormalize(venv, norm_obs=bool(settings.get("normalize_obs")),
                            norm_reward=bool(settings.get("normalize_reward")))
    model = SB3TRPO("MlpPolicy", venv, seed=0, device="cpu", **sb3_kwargs(env, settings))
    starts: list[float] = []
    trains: list[float] = []

    class RolloutStarts(BaseCallback):
        def _on_rollout_start(self) -> None:
            starts.append(time.perf_counter())

        def _on_step(self) -> bool:
            return True

    train = model.train

    def timed_train() -> None:
        t0 = time.perf_counter()
        train()
        trains.append(time.perf_counter() - t0)

    model.train = timed_train  # type: ignore[method-assign]
    batch = n_envs * model.n_steps
    try:
        # updates + 2 rollouts: the first is the warm-up, the last closes the timed ones.
        model.learn(total_timesteps=(updates + 2) * batch, callback=RolloutStarts())
    finally:
        venv.close()
    walls = np.diff(starts)[1 : updates + 1]
    train_s = np.asarray(trains[1 : updates + 1])
    return {"rollout_steps_per_s": statistics.median(batch / (walls - train_s)),
            "update_steps_per_s": statistics.median(batch / walls)}


ENVS: dict[str, tuple[Any, dict[str, Any]]] = {
    "Sleepy1ms": (Sleepy1ms, {"n_envs": 8, "n_steps": 64, "value_optimizer": "adam",
                              "value_epochs": 2}),
    # 8 x 128 = 1024 steps per update (the MuJoCo family's defaults otherwise, Adam critic).
    "HalfCheetah-v5": ("HalfCheetah-v5", {"n_envs": 8, "n_steps": 128, "normalize_obs": True,
                                          "value_optimizer": "adam"}),
}
SB3_LABEL = "SB3-contrib SubprocVecEnv"


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
            if not args.no_sb3:
                rows.append(("sb3", settings["n_envs"]))
        labels = [{"ray": f"ray K={k}", "sb3": SB3_LABEL}.get(kind, kind) for kind, k in rows]
        runs: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
        # Rows interleaved within each repeat: a change of the machine's load hits all rows.
        for _ in range(args.repeats):
            for (kind, k), label in zip(rows, labels, strict=True):
                load = os.getloadavg()[0]
                result = (measure_sb3(env, settings, args.updates) if kind == "sb3" else
                          measure(env, settings, kind, k, args.updates))
                runs[label].append({**result, "load1": load})
            if SB3_LABEL in runs:  # ratios within this repeat
                peer = runs[SB3_LABEL][-1]
                for label in labels:
                    run = runs[label][-1]
                    for what in ("rollout", "update"):
                        key = f"{what}_steps_per_s"
                        run[f"{what}_vs_sb3"] = run[key] / peer[key]
        out[name] = {"settings": settings, "rows": {}}
        if SB3_LABEL in runs:
            out[name]["sb3_kwargs"] = sb3_kwargs(env, settings)
        for label in labels:
            med = {key: statistics.median(r[key] for r in runs[label])
                   for key in runs[label][0]}
            out[name]["rows"][label] = {"median": med, "runs": runs[label]}
            ratio = (f"  x{med['rollout_vs_sb3']:.2f} / x{med['update_vs_sb3']:.2f} SB3"
                     if "rollout_vs_sb3" in med else "")
            print(f"{name:15s} {label:26s} rollout {med['rollout_steps_per_s']:7.0f} steps/s  "
                  f"update {med['update_steps_per_s']:7.0f} steps/s  load "
                  f"{med['load1']:.1f}{ratio}", flush=True)
    ray.shutdown()
    return out


def _timeit(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def payload(name: str, actors: list, workers: list[int]) -> dict[str, Any]:
    """Bytes of one update's segments for ``ENVS[name]``, sparse and dense, and their gather.

    The rollout runs ``max(n_steps, episode length + 10)`` steps from a reset, so that every
    env truncates once in it (a rollout of ``n_steps`` sees ``n_steps / episode length`` of
    that on average); the figures are scaled to ``n_steps`` per update.
    """
    import pickle

    import ray

    env, settings = ENVS[name]
    n_envs, n_steps = settings["n_envs"], settings["n_steps"]
    agent = TRPO(_local_env(env, n_envs, "sync"), seed=0,
                 **dict(settings, obs_norm_update="per_rollout"))
    episode = 1000 if isinstance(env, str) else 200
    segments = []
    finish = agent.collector.finish_rollout
    agent.collector.finish_rollout = lambda seg, frozen: segments.append(seg) or finish(
        seg, frozen)
    agent.collector.collect(agent.theta, max(n_steps, episode + 10))
    agent.close()
    (seg,) = segments
    T, E, obs_dim = seg.obs.shape
    sparse_rollout = len(pickle.dumps(seg, protocol=5))
    sparse_rows = seg.final_obs.nbytes + seg.final_steps.nbytes + seg.final_envs.nbytes
    dense_rollout = sparse_rollout - sparse_rows + seg.dense_final_obs().nbytes
    # Per update of n_steps: the per-step arrays scale with n_steps, the truncations with
    # n_steps / episode (one per env per episode), the rest (last observations, pickle's
    # framing) is fixed.
    per_step = sum(getattr(seg, f).nbytes for f in ("obs", "actions", "log_probs", "rewards",
                                                    "terminated", "truncated")) / T
    fixed = sparse_rollout - per_step * T - sparse_rows
    per_truncation = 8 * obs_dim + 16
    sparse = int(fixed + n_steps * per_step + per_truncation * E * n_steps / episode)
    dense = int(fixed + n_steps * per_step + 8 * obs_dim * E * n_steps)
    out: dict[str, Any] = {"n_envs": n_envs, "n_steps": n_steps, "episode_steps": episode,
                           "measured_rollout_steps": T, "sparse_bytes_rollout": sparse_rollout,
                           "dense_bytes_rollout": dense_rollout,
                           "sparse_bytes_per_update": sparse, "dense_bytes_per_update": dense,
                           "gather_s": {}}
    for k in workers:
        group = actors[:k]
        for label, n_bytes in (("sparse", sparse), ("dense", dense)):
            def gather(group=group, n_bytes=n_bytes):
                ray.get([a.give.remote(n_bytes // len(group)) for a in group])

            out["gather_s"][f"K={k} {label}"] = _timeit(gather, 20)
    return out


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
    out["payload"] = {name: payload(name, actors, args.workers) for name in args.envs}
    print(json.dumps({k: out[k] for k in ("latency", "broadcast", "gather", "payload")},
                     indent=1))
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
    parser.add_argument("--repeats", type=int, default=2, help="runs per row (median)")
    parser.add_argument("--n-steps", type=int, default=None, help="steps per env per update")
    parser.add_argument("--ray-only", action="store_true",
                        help="skip the local vector envs and SB3-contrib")
    parser.add_argument("--no-sb3", action="store_true", help="skip SB3-contrib")
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
