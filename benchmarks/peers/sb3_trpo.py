"""Measure the peer: SB3-contrib's TRPO (PyTorch, CPU) with the rl-baselines3-zoo hyperparameters.

Subcommands (each writes ``benchmarks/results/sb3_<what>.json`` with the machine and versions):

``fvp``
    Time of SB3-contrib's Hessian-vector product ``TRPO.hessian_vector_product`` on 2048
    HalfCheetah-v5 observations (random actions, seed 0) for the zoo's 64x64 policy, set up
    exactly as ``TRPO.train`` sets it up (KL gradient built with ``create_graph=True``), and of
    a CG solve with SB3's own ``conjugate_gradient_solver`` over that product.
``steps``
    End-to-end ``TRPO.learn`` throughput (steps/s) on HalfCheetah-v5 with one env, the time
    spent inside ``env.step``/``env.reset`` during that run, and the env-only rate (the same
    env stepped with random actions) to split the run into environment and everything else.
``learn``
    One learning run (env, seed): deterministic evaluation over 10 episodes every
    ``--eval-freq`` steps and at the end, peak RSS; writes
    ``benchmarks/results/sb3_learn_<env>_seed<k>.json``, rewritten after every evaluation
    (``"status": "running"``) and a last time with ``"status": "finished"``.

Run from the repository root, e.g. ``.venv/bin/python benchmarks/peers/sb3_trpo.py fvp``.
Torch uses one thread unless ``--threads 0`` (torch's default) or another count is given.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from sb3_contrib import TRPO
from sb3_contrib.common.utils import conjugate_gradient_solver
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import kl_divergence
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, sync_envs_normalization

if __package__:
    from .common import collect_random_observations, write_json
    from .zoo_hyperparams import ZOO_SOURCE, ZOO_TRPO, effective_config, trpo_kwargs
else:  # run as a script: this file's folder is on sys.path
    from common import collect_random_observations, write_json
    from zoo_hyperparams import ZOO_SOURCE, ZOO_TRPO, effective_config, trpo_kwargs

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
MUJOCO_ENV = "HalfCheetah-v5"


# ----------------------------------------------------------------------------- plumbing


def set_threads(threads: int) -> None:
    """Fix torch's intra-op thread count (0 keeps torch's default, one per core)."""
    if threads > 0:
        th.set_num_threads(threads)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def machine_info() -> dict[str, Any]:
    packages = ["numpy", "torch", "stable_baselines3", "sb3_contrib", "gymnasium", "mujoco"]
    versions = {name: importlib.metadata.version(name) for name in packages}
    versions["python"] = platform.python_version()
    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "versions": versions,
        "torch_threads": th.get_num_threads(),
        "torch_interop_threads": th.get_num_interop_threads(),
        "load_average_1_5_15min": os.getloadavg(),  # the cores are shared: context for timings
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def both_clocks() -> tuple[float, float]:
    """(wall, process CPU) time in seconds.

    The two cores are shared with other jobs, so wall time includes waiting for a core; with
    torch on one thread, process CPU time is the work itself and stays steady under load.
    """
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = both_clocks()
    return wall - start[0], cpu - start[1]


def time_calls(fn: Callable[[], object], repeats: int, warmup: int) -> dict[str, float]:
    """Per-call wall and CPU time of ``fn`` in ms: median and spread over ``repeats`` calls."""
    for _ in range(warmup):
        fn()
    wall_ms, cpu_ms = [], []
    for _ in range(repeats):
        start = both_clocks()
        fn()
        wall, cpu = since(start)
        wall_ms.append(wall * 1e3)
        cpu_ms.append(cpu * 1e3)
    q10, q90 = np.percentile(wall_ms, [10, 90])
    return {
        "median_ms": statistics.median(wall_ms),
        "mean_ms": statistics.fmean(wall_ms),
        "p10_ms": float(q10),
        "p90_ms": float(q90),
        "min_ms": min(wall_ms),
        "cpu_median_ms": statistics.median(cpu_ms),
        "cpu_mean_ms": statistics.fmean(cpu_ms),
        "repeats": repeats,
    }


def make_model(env: VecEnv, env_id: str, seed: int, **overrides: Any) -> TRPO:
    kwargs = {**trpo_kwargs(env_id), **overrides}
    return TRPO(ZOO_TRPO[env_id]["policy"], env, seed=seed, device="cpu", **kwargs)


def maybe_normalize(venv: VecEnv, env_id: str, *, evaluation: bool) -> VecEnv:
    """The zoo's ``normalize: true``: VecNormalize with the algorithm's gamma.

    An evaluation env uses the training statistics (synced before each evaluation) without
    updating them and without reward normalization, as the zoo does.
    """
    if not ZOO_TRPO[env_id].get("normalize", False):
        return venv
    gamma = effective_config(env_id)["gamma"]
    if evaluation:
        return VecNormalize(venv, gamma=gamma, training=False, norm_reward=False)
    return VecNormalize(venv, gamma=gamma)


# ----------------------------------------------------------------------------- fvp


def build_sb3_hvp(
    model: TRPO, observations: np.ndarray, actions: np.ndarray, seed: int
) -> tuple[Callable[..., th.Tensor], th.Tensor, Callable[[], object]]:
    """Reproduce ``TRPO.train`` up to the CG call; return (hvp, policy gradient, setup fn).

    Same graph as in ``train``: old distribution under ``no_grad``, surrogate and mean KL on the
    full batch, KL gradient with ``create_graph=True`` via ``TRPO._compute_actor_grad``, and
    ``partial(model.hessian_vector_product, actor_params, grad_kl)`` (damping included).
    """
    policy = model.policy
    policy.set_training_mode(True)
    obs_t = th.as_tensor(observations)
    act_t = th.as_tensor(actions)
    advantages = th.as_tensor(np.random.default_rng(seed).standard_normal(len(observations)))
    advantages = advantages.to(th.float32)

    def setup() -> tuple[Callable[..., th.Tensor], th.Tensor]:
        with th.no_grad():
            old_distribution = copy.copy(policy.get_distribution(obs_t))
            old_log_prob = old_distribution.log_prob(act_t)
        distribution = policy.get_distribution(obs_t)
        log_prob = distribution.log_prob(act_t)
        adv = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        ratio = th.exp(log_prob - old_log_prob)
        policy_objective = (adv * ratio).mean()
        kl_div = kl_divergence(distribution, old_distribution).mean()
        policy.optimizer.zero_grad()
        actor_params, grad_objective, grad_kl, _ = model._compute_actor_grad(
            kl_div, policy_objective
        )
        return partial(model.hessian_vector_product, actor_params, grad_kl), grad_objective

    hvp, grad_objective = setup()
    return hvp, grad_objective, setup


def count_hvp_calls(
    hvp: Callable[..., th.Tensor], b: th.Tensor, max_iter: int, residual_tol: float
) -> int:
    calls = 0

    def counted(v: th.Tensor) -> th.Tensor:
        nonlocal calls
        calls += 1
        return hvp(v)

    conjugate_gradient_solver(counted, b, max_iter=max_iter, residual_tol=residual_tol)
    return calls


def cmd_fvp(args: argparse.Namespace) -> dict[str, Any]:
    env_id = MUJOCO_ENV
    th.manual_seed(args.seed)
    observations, actions = collect_random_observations(env_id, args.batch, args.seed)
    venv = make_vec_env(env_id, n_envs=1, seed=args.seed)
    model = make_model(venv, env_id, args.seed)
    hvp, grad_objective, setup = build_sb3_hvp(model, observations, actions, args.seed)
    n_params = grad_objective.numel()
    vector = th.randn(n_params, generator=th.Generator().manual_seed(args.seed))

    hvp_time = time_calls(lambda: hvp(vector), args.hvp_repeats, warmup=20)
    # SB3 stops CG once |r|^2 < 1e-10 (its default residual_tol); residual_tol=0 forces exactly
    # max_iter iterations, the figure to compare with a fixed-iteration CG.
    cg_times = {}
    for iters in sorted({15, effective_config(env_id)["cg_max_steps"]}):
        for label, tol in ((f"cg{iters}", 0.0), (f"cg{iters}_sb3_default_tol", 1e-10)):
            timing = time_calls(
                lambda iters=iters, tol=tol: conjugate_gradient_solver(
                    hvp, grad_objective, max_iter=iters, residual_tol=tol
                ),
                args.cg_repeats,
                warmup=3,
            )
            timing["residual_tol"] = tol
            timing["hvp_calls_per_solve"] = count_hvp_calls(hvp, grad_objective, iters, tol)
            cg_times[label] = timing
    setup_time = time_calls(setup, args.cg_repeats, warmup=3)

    return {
        "benchmark": "sb3_fvp",
        "env_id": env_id,
        "batch": args.batch,
        "observation_source": f"{env_id} with random actions, seed {args.seed}",
        "policy": "MlpPolicy, net_arch pi=[64,64] vf=[64,64], tanh (zoo/SB3 default)",
        "actor_parameters": n_params,
        "cg_damping": model.cg_damping,
        "hvp": hvp_time,
        **cg_times,
        "setup_forward_kl_grad": setup_time,
        "notes": [
            "hvp = TRPO.hessian_vector_product(actor_params, grad_kl, v): double backprop of the"
            " KL gradient (create_graph=True), plus cg_damping * v",
            "conjugate_gradient_solver starts from 1e-4*randn, so a max_iter=k solve calls the"
            " hvp k+1 times; TRPO.train calls it once more for the step length",
            "setup = forward on the batch + surrogate + mean KL + _compute_actor_grad, once per"
            " update in TRPO.train",
            "median_ms etc.: wall clock; cpu_*: process CPU time (steady when the cores are"
            " shared)",
        ],
    }


# ----------------------------------------------------------------------------- steps


class EnvStepTimer(gym.Wrapper):
    """Accumulates the wall and CPU time spent in the wrapped env's ``step`` and ``reset``."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.steps = 0

    def _add(self, start: tuple[float, float]) -> None:
        wall, cpu = since(start)
        self.seconds += wall
        self.cpu_seconds += cpu

    def step(self, action):  # type: ignore[no-untyped-def]
        start = both_clocks()
        out = self.env.step(action)
        self._add(start)
        self.steps += 1
        return out

    def reset(self, **kwargs):  # type: ignore[no-untyped-def]
        start = both_clocks()
        out = self.env.reset(**kwargs)
        self._add(start)
        return out


def rate(steps: int, start: tuple[float, float]) -> dict[str, float]:
    wall, cpu = since(start)
    return {
        "steps": steps,
        "seconds": wall,
        "steps_per_s": steps / wall,
        "cpu_seconds": cpu,
        "steps_per_cpu_s": steps / cpu,
    }


def env_only_rate(env_id: str, n_steps: int, seed: int) -> dict[str, float]:
    """Steps/s of ``gym.make(env_id)`` alone, uniform random actions drawn beforehand."""
    env = gym.make(env_id)
    space = env.action_space
    rng = np.random.default_rng(seed)
    actions = rng.uniform(space.low, space.high, size=(n_steps, *space.shape)).astype(space.dtype)
    env.reset(seed=seed)
    start = both_clocks()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    result = rate(n_steps, start)
    env.close()
    return result


def vec_env_rate(env_id: str, n_steps: int, seed: int) -> dict[str, float]:
    """Steps/s of the env as SB3 steps it (Monitor, DummyVecEnv, VecNormalize), no policy."""
    venv = maybe_normalize(make_vec_env(env_id, n_envs=1, seed=seed), env_id, evaluation=False)
    space = venv.action_space
    rng = np.random.default_rng(seed)
    actions = rng.uniform(space.low, space.high, size=(n_steps, 1, *space.shape))
    venv.reset()
    start = both_clocks()
    for action in actions.astype(np.float32):
        venv.step(action)
    result = rate(n_steps, start)
    venv.close()
    return result


def train_throughput(env_id: str, timesteps: int, seed: int, n_steps: int) -> dict[str, Any]:
    """Time ``TRPO.learn`` with one env; split env time, rollout overhead and ``train()``."""
    timers: list[EnvStepTimer] = []

    def make_timed_env() -> gym.Env:
        timers.append(EnvStepTimer(gym.make(env_id)))
        return timers[-1]

    venv = make_vec_env(make_timed_env, n_envs=1, seed=seed)
    venv = maybe_normalize(venv, env_id, evaluation=False)
    model = make_model(venv, env_id, seed, n_steps=n_steps)

    train_wall, train_cpu = 0.0, 0.0
    untimed_train = model.train

    def timed_train() -> None:
        nonlocal train_wall, train_cpu
        start = both_clocks()
        untimed_train()
        wall, cpu = since(start)
        train_wall += wall
        train_cpu += cpu

    model.train = timed_train  # type: ignore[method-assign]
    start = both_clocks()
    model.learn(total_timesteps=timesteps)
    run = rate(model.num_timesteps, start)
    env_wall, env_cpu = timers[0].seconds, timers[0].cpu_seconds
    return {
        "n_envs": 1,
        "n_steps": n_steps,
        "timesteps": run.pop("steps"),
        "updates": model._n_updates,
        **run,
        "env_seconds_in_run": env_wall,
        "env_cpu_seconds_in_run": env_cpu,
        "train_seconds": train_wall,
        "train_cpu_seconds": train_cpu,
        "rollout_seconds_outside_env": run["seconds"] - env_wall - train_wall,
        "rollout_cpu_seconds_outside_env": run["cpu_seconds"] - env_cpu - train_cpu,
        "fraction_outside_env": 1.0 - env_wall / run["seconds"],
        "fraction_outside_env_cpu": 1.0 - env_cpu / run["cpu_seconds"],
        "peak_rss_mib": peak_rss_mib(),
    }


def cmd_steps(args: argparse.Namespace) -> dict[str, Any]:
    env_id = MUJOCO_ENV
    cfg = effective_config(env_id)
    runs = []
    for n_steps in args.n_steps or [cfg["n_steps"]]:
        run = train_throughput(env_id, args.timesteps, args.seed, n_steps)
        runs.append(run)
        print(
            f"n_steps={n_steps}: {run['steps_per_s']:.0f} steps/s,"
            f" {run['steps_per_cpu_s']:.0f} steps/CPU-s",
            flush=True,
        )
    env_only = env_only_rate(env_id, args.timesteps, args.seed)
    vec_env = vec_env_rate(env_id, args.timesteps, args.seed)
    for run in runs:
        run["fraction_outside_env_from_env_only_rate"] = (
            1.0 - (run["timesteps"] / env_only["steps_per_s"]) / run["seconds"]
        )
        run["fraction_outside_env_from_env_only_cpu_rate"] = (
            1.0 - (run["timesteps"] / env_only["steps_per_cpu_s"]) / run["cpu_seconds"]
        )
    return {
        "benchmark": "sb3_steps",
        "env_id": env_id,
        "hyperparameters": {k: v for k, v in cfg.items() if k != "n_envs"},
        "zoo_source": ZOO_SOURCE,
        "runs": runs,
        "env_only": env_only,
        "sb3_vec_env_only": vec_env,
        "notes": [
            "one env (the zoo uses n_envs=2); n_steps is per env, so a rollout of n_steps samples",
            "env_seconds_in_run: time inside gym.make(env) step/reset during learn (wrapper"
            " under Monitor); fraction_outside_env = 1 - env_seconds_in_run / seconds",
            "cpu_* and *_cpu_*: the same with process CPU time (time.process_time), steady"
            " when other jobs share the cores",
            "env_only: gym.make(env) stepped with pre-drawn uniform actions, same step count",
            "sb3_vec_env_only: Monitor + DummyVecEnv + VecNormalize stepped without a policy",
        ],
    }


# ----------------------------------------------------------------------------- learn


class CurveCallback(BaseCallback):
    """Deterministic evaluation every ``eval_freq`` steps; rewrites the result file each time."""

    def __init__(
        self,
        eval_env: VecEnv,
        eval_freq: int,
        n_episodes: int,
        on_eval: Callable[[], None],
        episode_seeds: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.eval_env = eval_env
        self.eval_freq = eval_freq
        self.n_episodes = n_episodes
        # None: the zoo's way (episodes continue the eval env's own generator); a list:
        # episode i starts from reset(seed=episode_seeds[i]), the starts a comparison
        # declares for both sides.
        self.episode_seeds = episode_seeds
        self.on_eval = on_eval
        self.next_eval = eval_freq
        self.timesteps: list[int] = []
        self.means: list[float] = []
        self.stds: list[float] = []
        self.eval_seconds = 0.0

    def evaluate(self) -> tuple[float, float]:
        start = time.perf_counter()
        sync_envs_normalization(self.model.get_env(), self.eval_env)
        if self.episode_seeds is None:
            mean, std = evaluate_policy(
                self.model, self.eval_env, n_eval_episodes=self.n_episodes, deterministic=True
            )
        else:
            returns = []
            for episode_seed in self.episode_seeds:
                self.eval_env.seed(int(episode_seed))  # applied by evaluate_policy's reset
                r, _ = evaluate_policy(
                    self.model, self.eval_env, n_eval_episodes=1, deterministic=True
                )
                returns.append(float(r))
            mean, std = float(np.mean(returns)), float(np.std(returns))
        self.eval_seconds += time.perf_counter() - start
        return float(mean), float(std)

    def play_one(self, reset_seed: int) -> float:
        """Return of one deterministic episode from ``reset(seed=reset_seed)``."""
        sync_envs_normalization(self.model.get_env(), self.eval_env)
        self.eval_env.seed(int(reset_seed))  # applied by evaluate_policy's reset
        r, _ = evaluate_policy(self.model, self.eval_env, n_eval_episodes=1, deterministic=True)
        return float(r)

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_eval:
            self.next_eval += self.eval_freq
            mean, std = self.evaluate()
            self.timesteps.append(self.num_timesteps)
            self.means.append(mean)
            self.stds.append(std)
            self.on_eval()
        return True


def cmd_learn(args: argparse.Namespace) -> dict[str, Any]:
    env_id = args.env
    zoo = ZOO_TRPO[env_id]
    timesteps = args.timesteps or zoo["n_timesteps"]
    out = RESULTS_DIR / f"sb3_learn_{env_id}_seed{args.seed}.json"
    rss_before = peak_rss_mib()

    venv = maybe_normalize(
        make_vec_env(env_id, n_envs=zoo["n_envs"], seed=args.seed), env_id, evaluation=False
    )
    # The zoo seeds its evaluation env with the training seed too.
    eval_env = maybe_normalize(
        make_vec_env(env_id, n_envs=1, seed=args.seed), env_id, evaluation=True
    )
    model = make_model(venv, env_id, args.seed)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "sb3_learn",
        "env_id": env_id,
        "seed": args.seed,
        "status": "running",
        "total_timesteps": timesteps,
        "hyperparameters": effective_config(env_id),
        "zoo_source": ZOO_SOURCE,
        "eval": {"episodes": args.eval_episodes, "deterministic": True, "every": args.eval_freq},
        "machine": machine_info(),
    }

    def record(status: str) -> None:
        result["status"] = status
        result["curve"] = {
            "timesteps": callback.timesteps,
            "eval_mean": callback.means,
            "eval_std": callback.stds,
        }
        result["elapsed_seconds"] = time.perf_counter() - started
        result["eval_seconds"] = callback.eval_seconds
        result["peak_rss_mib"] = peak_rss_mib()
        write_json(out, result)

    episode_seeds = getattr(args, "episode_seeds", None)
    if episode_seeds is not None:
        result["eval"]["episode_seeds"] = [int(s) for s in episode_seeds]
    callback = CurveCallback(
        eval_env, args.eval_freq, args.eval_episodes, lambda: record("running"),
        episode_seeds=episode_seeds,
    )
    model.learn(total_timesteps=timesteps, callback=callback)
    train_seconds = time.perf_counter() - started - callback.eval_seconds
    final_mean, final_std = callback.evaluate()
    episodes = [info["r"] for info in model.ep_info_buffer]
    result["final"] = {
        "timesteps": model.num_timesteps,
        "eval_mean": final_mean,
        "eval_std": final_std,
        "train_episode_return_last100": float(np.mean(episodes)) if episodes else None,
    }
    result["train_seconds_excluding_eval"] = train_seconds
    result["train_steps_per_s"] = model.num_timesteps / train_seconds
    result["peak_rss_mib_before_env_and_model"] = rss_before
    final_eval = getattr(args, "final_eval", None)
    if final_eval is not None:  # compare.py --final-eval-episodes
        result["final_wide"] = final_eval(callback.play_one)
    record("finished")
    print(f"{env_id} seed {args.seed}: final {final_mean:.1f} +- {final_std:.1f} -> {out}")
    return result


# ----------------------------------------------------------------------------- summary


def cmd_summary(_: argparse.Namespace) -> None:
    """Print the finished figures as Markdown tables (for docs/benchmarks/peers.md)."""
    for path in sorted(RESULTS_DIR.glob("sb3_fvp_t*.json")):
        r = json.loads(path.read_text())
        load = r["machine"].get("load_average_1_5_15min", ["?"])[0]
        print(f"\n`{path.name}` (threads: {r['thread_setting']}, 1-min load {load})\n")
        print("| measurement | hvp calls | wall median ms | wall p10-p90 ms | CPU median ms |")
        print("|---|---:|---:|---:|---:|")
        keys = ("hvp", "cg15", "cg15_sb3_default_tol", "cg25", "cg25_sb3_default_tol")
        for key in (*keys, "setup_forward_kl_grad"):
            if key not in r:
                continue
            t = r[key]
            calls = t.get("hvp_calls_per_solve", 1 if key == "hvp" else "")
            cpu = f"{t['cpu_median_ms']:.2f}" if "cpu_median_ms" in t else "-"
            print(
                f"| {key} | {calls} | {t['median_ms']:.2f} "
                f"| {t['p10_ms']:.2f}-{t['p90_ms']:.2f} | {cpu} |"
            )
    for path in sorted(RESULTS_DIR.glob("sb3_steps_t*.json")):
        r = json.loads(path.read_text())
        env_only, vec_env = r["env_only"], r["sb3_vec_env_only"]
        load = r["machine"].get("load_average_1_5_15min", ["?"])[0]
        print(
            f"\n`{path.name}` (threads: {r['thread_setting']}, 1-min load {load}; env alone "
            f"{env_only['steps_per_s']:.0f} steps/s, "
            f"{env_only.get('steps_per_cpu_s', float('nan')):.0f} steps/CPU-s; SB3 vec env "
            f"without policy {vec_env['steps_per_s']:.0f} steps/s)\n"
        )
        print(
            "| n_steps | steps | steps/s | steps/CPU-s | env s | train() s | rest of rollout s "
            "| outside env (wall) | outside env (CPU) | peak RSS MiB |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for run in r["runs"]:
            per_cpu = run.get("steps_per_cpu_s", float("nan"))
            frac_cpu = run.get("fraction_outside_env_cpu", float("nan"))
            print(
                f"| {run['n_steps']} | {run['timesteps']} | {run['steps_per_s']:.0f} "
                f"| {per_cpu:.0f} | {run['env_seconds_in_run']:.1f} "
                f"| {run['train_seconds']:.1f} | {run['rollout_seconds_outside_env']:.1f} "
                f"| {run['fraction_outside_env']:.0%} | {frac_cpu:.0%} "
                f"| {run['peak_rss_mib']:.0f} |"
            )
    print(
        "\n| env | seed | status | steps | final eval (10 ep.) | best curve point "
        "| peak RSS MiB | train steps/s |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for path in sorted(RESULTS_DIR.glob("sb3_learn_*_seed*.json")):
        r = json.loads(path.read_text())
        curve = r.get("curve", {})
        best = max(curve.get("eval_mean") or [float("nan")])
        final = r.get("final")
        if final:
            steps = final["timesteps"]
            figure = f"{final['eval_mean']:.1f} +- {final['eval_std']:.1f}"
            speed = f"{r['train_steps_per_s']:.0f}"
        else:
            steps = (curve.get("timesteps") or [0])[-1]
            figure, speed = "-", "-"
        print(
            f"| {r['env_id']} | {r['seed']} | {r['status']} | {steps} | {figure} "
            f"| {best:.1f} | {r['peak_rss_mib']:.0f} | {speed} |"
        )


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=int, default=1, help="torch threads; 0 = torch default")
    common.add_argument("--seed", type=int, default=0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    fvp = sub.add_parser("fvp", parents=[common], help="time SB3's Hessian-vector product and CG")
    fvp.add_argument("--batch", type=int, default=2048, help="observations in the batch")
    fvp.add_argument("--hvp-repeats", type=int, default=1000)
    fvp.add_argument("--cg-repeats", type=int, default=100)
    fvp.add_argument("--out", type=Path, default=None, help="default results/sb3_fvp_t<threads>")

    steps = sub.add_parser(
        "steps", parents=[common], help="end-to-end training steps/s on HalfCheetah-v5"
    )
    steps.add_argument("--timesteps", type=int, default=50_000)
    steps.add_argument(
        "--n-steps", type=int, nargs="*", help="rollout lengths to try (default: the zoo's)"
    )
    steps.add_argument(
        "--out", type=Path, default=None, help="default results/sb3_steps_t<threads>"
    )

    learn = sub.add_parser(
        "learn", parents=[common], help="one learning run with an evaluation curve"
    )
    learn.add_argument("env", choices=sorted(ZOO_TRPO))
    learn.add_argument("--timesteps", type=int, default=0, help="default: the zoo's n_timesteps")
    learn.add_argument("--eval-freq", type=int, default=10_000, help="steps between evaluations")
    learn.add_argument("--eval-episodes", type=int, default=10)

    sub.add_parser("summary", help="print the finished figures as Markdown tables")

    args = parser.parse_args(argv)
    if args.command == "summary":
        cmd_summary(args)
        return 0
    set_threads(args.threads)
    if args.command == "learn":
        cmd_learn(args)
        return 0
    measure = {"fvp": cmd_fvp, "steps": cmd_steps}[args.command]
    result = measure(args)
    result["thread_setting"] = args.threads or "torch default"
    result["machine"] = machine_info()
    result["peak_rss_mib"] = peak_rss_mib()
    out = args.out or RESULTS_DIR / f"sb3_{args.command}_t{args.threads or 'default'}.json"
    write_json(out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
