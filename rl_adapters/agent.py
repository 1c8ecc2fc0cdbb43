"""The TRPO agent (Schulman et al., 2015) on Gymnasium environments, in NumPy.

One update, top to bottom (see ``docs/trpo_update.md`` for the map to this file):

1. collect ``n_envs * n_steps`` transitions with the current policy;
2. evaluate the critic, compute GAE advantages and lambda-returns;
3. the policy gradient ``g`` of the surrogate ``L(theta) = mean(ratio * A)``;
4. CG on ``(F + lambda I) d = g`` with Fisher-vector products ``J^T M J v``, and the step
   ``s = sqrt(2 delta / d^T F d) d`` (``trustregion.natural_gradient_step``);
5. backtracking line search on the surrogate under ``mean KL <= delta``
   (``trustregion.backtracking_line_search``); the parameters only change to an
   accepted trial;
6. fit the critic to the lambda-returns.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, fields
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from rl_adapters import critic_process
from rl_adapters._blas import blas_threads as _blas_threads
from rl_adapters._memory import keep_freed_memory
from rl_adapters.checkpoint import read_state, write_state
from rl_adapters.config import TRPOConfig
from rl_adapters.env_checks import (
    CheckedEnv,
    UnknownEnvError,
    check_env_id,
    env_name,
    same_spaces,
)
from rl_adapters.normalization import RewardScaler, RunningMeanStd
from rl_adapters.policies import FisherOperator, Policy, make_policy
from rl_adapters.rollout import Collector, advantages_and_returns, make_env_groups
from rl_adapters.sde import StateDependentNoise, make_sde_policy
from rl_adapters.seeding import (
    generator_state_dict,
    load_generator_state_dict,
    predict_generator,
)
from rl_adapters.validation import (
    CheckpointError,
    ConfigError,
    EnvOutputError,
    StateError,
    as_observations,
    check_generator_state,
    check_keys,
    float_array,
    int_array,
    int_scalar,
    nested,
    str_scalar,
)
from rl_adapters.value import ValueFunction
from rl_adapters.value_trust_region import TrustRegionValueFit
from trustregion import backtracking_line_search, natural_gradient_step

__all__ = ["TRPO"]

@dataclass
class PolicyStepMetrics:
    """What one policy step (steps 3-5) reports; the defaults are those of a step not taken."""

    kl: float = 0.0
    """Mean KL(old || new) of the accepted parameters (0 if none was accepted)."""
    surrogate_improvement: float = 0.0
    """Surrogate (plus entropy bonus) at the new parameters minus at the old ones."""
    expected_improvement: float = 0.0
    """``g^T s``, the improvement the linearized surrogate predicts for the full step."""
    backtracks: float = 0.0
    """Line-search backtracks."""
    step_accepted: float = 0.0
    """1 if the parameters changed, else 0."""
    step_fraction: float = 0.0
    """Fraction of the full step taken."""
    step_status: str = ""
    """Name of the natural-gradient step's status (``BOUNDARY`` when a step was produced)."""
    cg_iters: float = 0.0
    """CG iterations for ``(F + lambda I) d = g``."""
    cg_residual: float = 0.0
    """CG's final residual norm."""
    fisher_eig_max: float = float("nan")
    """Largest Ritz value of the damped Fisher ``F + lambda I`` from CG's coefficients (no
    extra product): a lower bound on its largest eigenvalue."""
    fisher_eig_min: float = float("nan")
    """Smallest Ritz value: an upper bound on the smallest eigenvalue. Close to ``cg_damping``
    means the damping dominates the small directions (too large a damping, or a rank-deficient
    Fisher); far above it means the damping does little."""
    fisher_condition: float = float("nan")
    """``fisher_eig_max / fisher_eig_min``, a lower bound on the condition number the CG solve
    faced: large values explain slow CG (raise ``cg_damping`` or ``cg_iters``)."""
    entropy: float = 0.0
    """Mean policy entropy on the batch, before the step."""


@dataclass
class UpdateMetrics:
    """One row of the per-update metrics (the CSV of ``trpo train``): see :data:`METRIC_KEYS`."""

    update: float
    timesteps: float
    ep_return_mean: float
    """Mean return of the last 100 finished training episodes."""
    ep_return_recent: float
    """Mean return of the episodes that finished in this update's rollout."""
    ep_len_mean: float
    n_episodes: float
    policy_step: PolicyStepMetrics
    explained_variance: float
    value_loss: float
    """Critic's mean squared error before its fit."""
    value_mse_after: float
    """Critic's mean squared error on the same batch after its fit."""
    value_fit_status: str
    """Name of the trust-region critic fit's status (``ACCEPTED``, ``NO_IMPROVEMENT``, ...);
    empty for Adam and L-BFGS."""
    steps_per_sec: float
    env_time: float
    policy_time: float
    update_time: float
    wall_time: float

    def as_dict(self) -> dict[str, float | str]:
        """Flat ``{metric: value}`` in :data:`METRIC_KEYS` order."""
        out: dict[str, float | str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, PolicyStepMetrics):
                out.update(vars(value))
            else:
                out[f.name] = value
        return out


#: learn() runs shorter than this many updates fit an L-BFGS critic on the update's thread
#: even with ``config.critic_process``: the worker's start (a Python interpreter importing
#: NumPy and SciPy, about 0.4 s of CPU) would cost them more than it saves.
CRITIC_PROCESS_MIN_UPDATES = 20

#: Columns of the per-update metrics (the CSV written by ``trpo train``), from the fields of
#: :class:`UpdateMetrics` with :class:`PolicyStepMetrics` in place of ``policy_step``.
METRIC_KEYS = tuple(
    name for f in fields(UpdateMetrics)
    for name in ([g.name for g in fields(PolicyStepMetrics)] if f.name == "policy_step"
                 else [f.name])
)
#: The columns that hold text (a status name) rather than a number.
TEXT_METRIC_KEYS = frozenset(f.name for cls in (PolicyStepMetrics, UpdateMetrics)
                             for f in fields(cls) if f.type in (str, "str"))


class TRPO:
    """Trust Region Policy Optimization with NumPy policies.

    Parameters
    ----------
    env : str or gymnasium.Env or gymnasium.vector.VectorEnv or list of VectorEnv
        A registered environment id (recommended: the agent builds ``n_envs`` copies and
        can rebuild them on load), an environment instance (``n_envs`` must be 1), a
        vector env in ``SAME_STEP`` autoreset mode, or a list of such vector envs: groups
        of environments stepped side by side (:class:`~rl_adapters.rollout.EnvGroup`);
        training is the same however ``n_envs`` environments are grouped.
    seed : int
        Root of every random stream (:mod:`rl_adapters.seeding`): initialization and
        minibatches, one stream per environment (its reset seeds and action noise), and
        stochastic :meth:`predict`.  Same seed, same machine: identical runs.
    config : TRPOConfig, optional
        Full configuration; by default ``TRPOConfig.for_env(env_id)``.
    **overrides
        Fields of :class:`~rl_adapters.config.TRPOConfig` to change.

    Examples
    --------
    >>> agent = TRPO("CartPole-v1", seed=0, n_steps=64)
    >>> _ = agent.learn(256)
    >>> agent.num_timesteps
    256
    """

    def __init__(self, env: Any, *, seed: int = 0, config: TRPOConfig | None = None,
                 **overrides: Any) -> None:
        if not _is_seed(seed):
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if isinstance(env, str) or not isinstance(env, gym.Env | gym.vector.VectorEnv
                                                  | list | tuple):
            # Ray workers also take a picklable factory of one env (docs/ray.md).
            ray_env = (config.vector_env if config is not None
                       else overrides.get("vector_env")) == "ray"
            if isinstance(env, str) or not (callable(env) and ray_env):
                check_env_id(env)
        # The id's family gives the defaults; the id itself is kept (saved, and used by
        # evaluate() and load()) only if gymnasium.make rebuilds this very environment.
        family_id = _env_id(env)
        self.env_id = _env_id(env, rebuildable=True)
        if config is None:
            config = TRPOConfig.for_env(family_id, **overrides)
        elif overrides:
            config = config.replace(**overrides)
        self.seed = int(seed)
        config.check_scale_out()
        if config.vector_env == "ray":
            # The environments live on Ray workers (rl_adapters.ray_workers, docs/ray.md).
            from rl_adapters.ray_workers import env_spaces

            groups = []
            obs_space, act_space = env_spaces(env)
        else:
            given = _env_count(env)
            if "n_envs" in overrides and given is not None and given != config.n_envs \
                    and not isinstance(env, gym.Env):
                # (an env instance with n_envs != 1 is refused by make_env_groups)
                raise ValueError(f"n_envs={overrides['n_envs']!r}: env is vector envs of "
                                 f"{given} environments in all; leave n_envs out (the vector "
                                 "env decides) or pass a vector env of that many")
            groups = make_env_groups(env, config.n_envs, config.vector_env, self.seed)
            n_envs = sum(g.n_envs for g in groups)
            if n_envs != config.n_envs:
                # Ready-made vector envs decide the number of environments.
                config = config.replace(n_envs=n_envs)
            obs_space = groups[0].venv.single_observation_space
            act_space = groups[0].venv.single_action_space
        self.config = config
        n_envs = config.n_envs
        if config.use_sde:
            if not isinstance(act_space, gym.spaces.Box):
                raise ConfigError(
                    f"config use_sde=True: gSDE perturbs continuous actions and does not fit "
                    f"the action space {act_space} of {self.env_id or 'this env'}",
                    "set use_sde=False")
            self.policy: Policy = make_sde_policy(
                obs_space, act_space, hidden=config.policy_hidden,
                activation=config.activation, log_std_init=config.log_std_init,
                full_std=config.sde_full_std, use_expln=config.sde_use_expln)
        else:
            self.policy = make_policy(
                obs_space, act_space, hidden=config.policy_hidden,
                activation=config.activation, log_std_init=config.log_std_init,
            )
        obs_dim = int(obs_space.shape[0])
        # Random streams (rl_adapters.seeding): training (this one: initialization, then
        # Fisher subsamples and critic minibatches), one per environment (in the groups),
        # predict.
        self._rng = np.random.default_rng(self.seed)
        self.theta: NDArray = self.policy.init_params(self._rng)
        self._value = ValueFunction(obs_dim, config.value_hidden, config.activation)
        self._value.init(self._rng)
        # The trust-region critic fit keeps only its settings (from the config).
        self.value_fit = (
            TrustRegionValueFit(
                self._value.net, epsilon=config.value_tr_epsilon,
                cg_iters=config.value_tr_cg_iters, damping=config.value_tr_damping,
                outer_iters=config.value_tr_outer_iters, gn_subsample=config.value_tr_subsample,
                gn_dtype=config.value_tr_dtype)
            if config.value_optimizer == "trust_region" else None)
        self.obs_rms = RunningMeanStd((obs_dim,)) if config.normalize_obs else None
        self.reward_scaler = (
            RewardScaler(n_envs, config.gamma, config.clip_reward)
            if config.normalize_reward else None
        )
        sde_noise = (StateDependentNoise(self.policy, n_envs, config.sde_sample_freq)
                     if config.use_sde else None)
        if config.vector_env == "ray":
            from rl_adapters.ray_workers import RayCollector

            self.collector: Collector = RayCollector(env, config, self.seed, self.policy,
                                                     self.obs_rms, self.reward_scaler)
        else:
            self.collector = Collector(groups, self.policy, self.obs_rms, self.reward_scaler,
                                       config.clip_obs, config.obs_norm_update,
                                       sde_noise=sde_noise)
        self._fisher_shards: Any = None  # rl_adapters.ray_workers.FisherShards, on first use
        self._critic_thread: futures.ThreadPoolExecutor | None = None  # parallel_update
        # A critic fit still running from the last update inside learn(), and that
        # update's metrics row, whose critic columns it fills in (_join_critic).
        self._critic_fit: futures.Future | None = None
        self._critic_row: dict[str, float | str] | None = None
        # The L-BFGS critic's worker process (config.critic_process), started by learn().
        self._critic_process: critic_process.CriticProcess | None = None
        #: The worker's CPU seconds and peak RSS (MiB) once it is closed (close()).
        self.critic_process_usage: dict[str, float] | None = None
        self.collector.reset()
        self.num_timesteps = 0
        self.n_updates = 0
        self.episode_returns: deque[float] = deque(maxlen=100)
        self.episode_lengths: deque[int] = deque(maxlen=100)
        self.metrics: list[dict[str, float | str]] = []
        self._predict_rng = predict_generator(self.seed)

    # ----------------------------------------------------------------- training
    @property
    def value(self) -> ValueFunction:
        """The critic ``V(s)`` (its fit from the last update finished first)."""
        self._join_critic()
        return self._value

    @property
    def rng(self) -> np.random.Generator:
        """The training stream: initialization, Fisher subsamples, critic minibatches."""
        self._join_critic()
        return self._rng

    def learn(self, total_timesteps: int, *, callback: Callable[..., Any] | None = None,
              progress_bar: bool = False) -> TRPO:
        """Train for ``total_timesteps`` more environment steps (whole updates).

        ``callback(agent, metrics)`` runs after every update; returning ``False`` stops.

        With ``config.parallel_update`` the critic's fit of an update runs on through the
        callback and the next rollout, which do not need it (the rollout only acts; the
        critic values its observations after it): the same bits, less wall clock. The
        critic's columns of ``metrics`` (``value_loss``, ``value_mse_after``,
        ``value_fit_status``) are then NaN and ``"PENDING"`` when the callback sees them,
        and filled in, in the same dict, when the fit ends: before the next update's
        advantages, or when :meth:`wait_for_critic` is called, or when ``learn`` returns.
        Reading ``agent.value``, ``agent.rng`` or :meth:`state_dict` waits for the fit.

        The first call asks glibc's malloc to keep freed memory for reuse, for the rest of
        the process (:mod:`rl_adapters._memory`: the same bits, fewer page faults).
        """
        if isinstance(total_timesteps, bool) or not isinstance(total_timesteps, int | np.integer) \
                or total_timesteps < 0:
            raise ValueError(f"total_timesteps must be an int >= 0, got {total_timesteps!r}")
        target = self.num_timesteps + int(total_timesteps)
        keep_freed_memory()  # rl_adapters._memory: the same bits, fewer page faults
        with _blas_threads(self.config.blas_threads):
            return self._learn(target, int(total_timesteps), callback, progress_bar)

    def _learn(self, target: int, total: int, callback, progress_bar: bool) -> TRPO:
        self._start_critic_process(total)
        bar = None
        if progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="step", dynamic_ncols=True)
        try:
            while self.num_timesteps < target:
                metrics = self._update(critic_runs_on=self.config.parallel_update)
                if bar is not None:
                    # The last update may overshoot the budget: keep the bar at 100%.
                    bar.update(min(self.config.batch_size, bar.total - bar.n))
                    bar.set_postfix(ret=f"{metrics['ep_return_mean']:.1f}", refresh=False)
                if callback is not None and callback(self, metrics) is False:
                    break
        except BaseException:
            self._join_critic(raise_error=False)  # the error in flight comes first
            raise
        finally:
            if bar is not None:
                bar.close()
        self._join_critic(charge=True)
        return self

    def _start_critic_process(self, total: int) -> None:
        """Start the critic's worker process (config.critic_process) for a run of at least
        ``CRITIC_PROCESS_MIN_UPDATES`` updates, early: it imports NumPy and SciPy during
        the first rollout."""
        cfg = self.config
        if (self._critic_process is None and self.critic_process_usage is None
                and cfg.critic_process and cfg.parallel_update and self.value_fit is None
                and cfg.value_optimizer == "lbfgs" and critic_process.available()
                and total >= CRITIC_PROCESS_MIN_UPDATES * cfg.batch_size):
            self._critic_process = critic_process.CriticProcess(
                tuple(self._value.net.sizes), self._value.net.activation, cfg.blas_threads)

    def train_one_update(self) -> dict[str, float | str]:
        """Collect one batch and make one TRPO update; return its metrics."""
        return self._update(critic_runs_on=False)

    def wait_for_critic(self) -> None:
        """Wait for the critic's fit still running from the last update of :meth:`learn`
        (``parallel_update``), and fill in the critic's columns of that update's metrics.
        Nothing to wait for outside a :meth:`learn` callback."""
        self._join_critic()

    def _join_critic(self, raise_error: bool = True, charge: bool = False) -> None:
        """Wait for a critic fit left running by :meth:`_update` and fill in its row.

        ``charge`` adds the wait to that row's clocks: at the end of :meth:`learn`, where
        no later row counts it (a wait in the next update is in that update's clocks).
        """
        fit, row = self._critic_fit, self._critic_row
        if fit is None or row is None:
            return
        self._critic_fit = self._critic_row = None
        t0 = time.perf_counter()
        futures.wait([fit])
        if charge:
            waited = time.perf_counter() - t0
            row["update_time"] = float(row["update_time"]) + waited
            row["wall_time"] = float(row["wall_time"]) + waited
        try:
            value_loss, value_mse_after, status = fit.result()
        except BaseException:
            row["value_fit_status"] = "FAILED"
            if raise_error:
                raise
            return
        row.update(value_loss=value_loss, value_mse_after=value_mse_after,
                   value_fit_status=status)

    def _update(self, critic_runs_on: bool) -> dict[str, float | str]:
        """One update; with ``critic_runs_on`` the critic's fit is left running (learn)."""
        cfg = self.config
        t_start = time.perf_counter()
        # 1. Collect. A critic fit still running from the last update overlaps it: the
        # rollout reads neither the critic nor self._rng.
        try:
            batch = self.collector.collect(self.theta, cfg.n_steps)
        except EnvOutputError as err:
            # (a critic fit still running is waited for by learn(), where errors pass)
            raise err.located(f"{err.at} of the update from timestep {self.num_timesteps}") \
                from None
        except (ConnectionError, EOFError) as err:
            # A worker process of an async vector env was killed: its pipe broke.
            gone = _ended_env_workers(self.collector)
            if not gone:
                raise
            cause = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            raise RuntimeError(
                f"vector_env={cfg.vector_env!r}: the environment worker process "
                f"{', '.join(gone)} ended during the update from timestep "
                f"{self.num_timesteps} ({cause}); its environments are lost, so this run "
                "cannot go on: load its last checkpoint (TRPO.load) to resume") from None
        t_collect = time.perf_counter()
        self._join_critic()
        self.episode_returns.extend(batch.episode_returns)
        self.episode_lengths.extend(batch.episode_lengths)
        # 2. Returns and advantages.
        adv_tn, returns_tn, values_tn = advantages_and_returns(
            batch, self._value, cfg.gamma, cfg.gae_lambda
        )
        T, E, obs_dim = batch.obs.shape
        n = T * E
        obs = batch.obs.reshape(n, obs_dim)
        actions = batch.actions.reshape(n, -1)
        returns = returns_tn.reshape(n)
        values = values_tn.reshape(n)
        adv = adv_tn.reshape(n)
        if cfg.normalize_advantage and n > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        # 3-6. Policy step and critic fit. They share only the batch, which neither writes,
        # and the critic's fit is the only user of self._rng once the policy step's Fisher
        # subsample is drawn (first, as in a sequential update): on a second thread the
        # critic gives the same bits, and its BLAS calls and nogil kernels overlap the
        # policy step's (and, with critic_runs_on, the next rollout's).
        fvp_rows = self._fvp_rows(n)
        critic: futures.Future | None = None
        if cfg.parallel_update:
            critic = self._update_pool().submit(self._fit_value, obs, returns)
            try:
                step_info = self._policy_step(obs, actions, adv, fvp_rows)
            except BaseException:
                futures.wait([critic])  # never leave the critic running past an error
                raise
            if not critic_runs_on:
                value_loss, value_mse_after, value_fit_status = critic.result()
            else:
                value_loss, value_mse_after, value_fit_status = float("nan"), float("nan"), \
                    "PENDING"
        else:
            step_info = self._policy_step(obs, actions, adv, fvp_rows)
            value_loss, value_mse_after, value_fit_status = self._fit_value(obs, returns)
        t_end = time.perf_counter()
        self.num_timesteps += n
        self.n_updates += 1
        var_ret = float(np.var(returns))
        explained = (float("nan") if var_ret == 0
                     else 1.0 - float(np.var(returns - values)) / var_ret)
        metrics = UpdateMetrics(
            update=float(self.n_updates),
            timesteps=float(self.num_timesteps),
            ep_return_mean=_mean(self.episode_returns),
            ep_return_recent=_mean(batch.episode_returns),
            ep_len_mean=_mean(self.episode_lengths),
            n_episodes=float(len(batch.episode_returns)),
            policy_step=step_info,
            explained_variance=explained,
            value_loss=value_loss,
            value_mse_after=value_mse_after,
            value_fit_status=value_fit_status,
            steps_per_sec=n / (t_end - t_start),
            env_time=batch.env_time,
            policy_time=batch.policy_time,
            update_time=t_end - t_collect,
            wall_time=t_end - t_start,
        ).as_dict()
        self.metrics.append(metrics)
        if critic_runs_on and critic is not None:
            self._critic_fit, self._critic_row = critic, metrics
        return metrics

    def _update_pool(self) -> futures.ThreadPoolExecutor:
        """The thread that fits the critic during the policy step (made on first use)."""
        if self._critic_thread is None:
            self._critic_thread = futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="trpo-critic")
        return self._critic_thread

    def _fvp_rows(self, n: int) -> NDArray | None:
        """The Fisher subsample's rows (``fvp_subsample < 1``), drawn from ``self._rng``."""
        frac = self.config.fvp_subsample
        if frac >= 1.0:
            return None
        k = max(1, round(frac * n))
        return np.sort(self._rng.choice(n, size=k, replace=False))

    def _fit_value(self, obs: NDArray, returns: NDArray) -> tuple[float, float, str]:
        """Fit the critic to the lambda-returns: (MSE before, MSE after, status name)."""
        cfg = self.config
        worker = self._critic_process
        if worker is not None:
            # the same fit in the worker process (rl_adapters.critic_process); None if the
            # worker is gone, which has warned: then here, as below
            fitted = worker.fit(
                self._value.theta, obs, returns, l2=cfg.value_l2,
                lbfgs_iters=cfg.value_lbfgs_iters, dtype=cfg.value_dtype)
            if fitted is not None:
                self._value.theta, value_loss, value_mse_after = fitted
                return value_loss, value_mse_after, ""
        if self.value_fit is not None:
            theta, info = self.value_fit.fit(self._value.theta, obs, returns, rng=self._rng)
            self._value.theta = theta
            return float(info["mse_before"]), float(info["mse_after"]), info["status"].name
        value_loss = self._value.fit(
            obs, returns, self._rng, optimizer=cfg.value_optimizer, lr=cfg.value_lr,
            epochs=cfg.value_epochs, batch_size=cfg.value_batch_size,
            lbfgs_iters=cfg.value_lbfgs_iters, l2=cfg.value_l2, dtype=cfg.value_dtype,
        )
        return value_loss, self._value.mse(obs, returns), ""

    def _policy_step(self, obs: NDArray, actions: NDArray, adv: NDArray,
                     fvp_rows: NDArray | None = None) -> PolicyStepMetrics:
        cfg = self.config
        policy = self.policy
        theta_old = self.theta
        out_old, cache = policy.outputs(theta_old, obs, keep_cache=True)
        logp_old = policy.log_prob(theta_old, out_old, actions)
        entropy_old = float(np.mean(policy.entropy(theta_old, out_old)))
        # The surrogate gradient at theta_old: mean(A grad log pi) (+ entropy bonus).
        g = policy.surrogate_gradient(theta_old, cache, out_old, actions, adv, cfg.entropy_coef)
        # Fisher-vector products reuse the forward pass (or one on a subsample).
        fisher: Callable[[NDArray], NDArray]
        if fvp_rows is not None:
            fisher = self._fisher(theta_old, obs[fvp_rows])
        elif cfg.fvp_workers > 1:
            fisher = self._fisher(theta_old, obs)
        else:
            fisher = FisherOperator(policy, theta_old, cache, out_old, np.dtype(cfg.fvp_dtype))
        max_kl = self.trust_region_radius()
        nat = natural_gradient_step(g, fisher, max_kl, cg_iters=cfg.cg_iters,
                                    damping=cfg.cg_damping, cg_rtol=cfg.cg_rtol)
        f0 = float(np.mean(adv)) + cfg.entropy_coef * entropy_old

        def surrogate_and_kl(theta: NDArray) -> tuple[float, float]:
            out, _ = policy.outputs(theta, obs)
            if not np.all(np.isfinite(out)) or not np.all(np.isfinite(theta)):
                return float("nan"), float("nan")
            ratio = np.exp(policy.log_prob(theta, out, actions) - logp_old)
            objective = float(np.mean(ratio * adv))
            if cfg.entropy_coef:
                objective += cfg.entropy_coef * float(np.mean(policy.entropy(theta, out)))
            kl = float(np.mean(policy.kl(theta_old, out_old, theta, out)))
            return objective, kl

        info = PolicyStepMetrics(
            expected_improvement=nat.expected_improvement,
            cg_iters=float(nat.cg.nit),
            cg_residual=float(nat.cg.residual_norm),
            step_status=nat.status.name,
            fisher_eig_max=_or_nan(nat.spectrum.eig_max),
            fisher_eig_min=_or_nan(nat.spectrum.eig_min),
            fisher_condition=_or_nan(nat.spectrum.condition),
            entropy=entropy_old,
        )
        if not nat.success:
            # No usable direction: keep the parameters (reported in the metrics).
            return info
        if cfg.line_search:
            ls = backtracking_line_search(
                surrogate_and_kl, theta_old, nat.step,
                expected_improvement=nat.expected_improvement,
                max_constraint=max_kl, shrink=cfg.ls_shrink,
                max_backtracks=cfg.ls_max_backtracks, accept_ratio=cfg.ls_accept_ratio,
                constraint_slack=cfg.ls_kl_slack, f0=f0,
            )
            # ls.x is theta_old itself when every trial was rejected.
            self.theta = ls.x
            info.kl = float(ls.constraint) if ls.accepted else 0.0
            info.surrogate_improvement = float(ls.objective - f0) if ls.accepted else 0.0
            info.backtracks = float(ls.n_backtracks)
            info.step_accepted = float(ls.accepted)
            info.step_fraction = float(ls.step_fraction)
        else:
            # Natural policy gradient: take the scaled step without a line search.
            new_theta = theta_old + nat.step
            objective, kl = surrogate_and_kl(new_theta)
            self.theta = new_theta
            info.kl, info.surrogate_improvement = kl, objective - f0
            info.step_accepted = info.step_fraction = 1.0
        return info

    def trust_region_radius(self) -> float:
        """The KL radius of the next update: ``max_kl``, decayed linearly with the timesteps
        trained so far to ``max_kl_end_fraction * max_kl`` at ``max_kl_decay_steps``.

        It depends on ``num_timesteps`` alone, so a resumed run continues the schedule.
        """
        cfg = self.config
        done = min(self.num_timesteps / cfg.max_kl_decay_steps, 1.0)
        # exactly max_kl when max_kl_end_fraction is 1 (the default): 1 - 0 * done = 1
        return cfg.max_kl * (1.0 - (1.0 - cfg.max_kl_end_fraction) * done)

    def _fisher(self, theta: NDArray, obs: NDArray) -> Callable[[NDArray], NDArray]:
        """The Fisher-vector product on ``obs``: here, or summed over ``fvp_workers`` shards."""
        cfg = self.config
        if cfg.fvp_workers == 1:
            return self.policy.fisher_operator(theta, obs, dtype=np.dtype(cfg.fvp_dtype))
        if self._fisher_shards is None:
            from rl_adapters.ray_workers import FisherShards

            self._fisher_shards = FisherShards(self.policy, cfg.fvp_workers)
        return self._fisher_shards.operator(theta, obs, np.dtype(cfg.fvp_dtype))

    # ---------------------------------------------------------------- acting
    def normalize_obs(self, obs: NDArray) -> NDArray:
        """Apply the running observation normalization (without updating it).

        ``obs`` is one observation ``(obs_dim,)`` or a batch ``(N, obs_dim)`` of finite
        numbers (ValueError otherwise); the result has its shape, in float64.
        """
        x, single = as_observations(obs, self.policy.net.sizes[0])
        out = self._normalize_rows(x)
        return out[0] if single else out

    def _normalize_rows(self, x: NDArray) -> NDArray:
        """``normalize_obs`` for a checked float64 ``(N, obs_dim)`` batch."""
        if self.obs_rms is None:
            return x
        return self.obs_rms.normalize(x, self.config.clip_obs)

    def predict(self, obs: Any, deterministic: bool = True) -> NDArray:
        """Action(s) for one observation ``(obs_dim,)`` or a batch ``(N, obs_dim)``.

        Raises
        ------
        ValueError
            If ``obs`` has another shape, is not numeric, or has a NaN or infinite entry.
        TypeError
            If ``deterministic`` is not a bool.
        """
        _check_bool("deterministic", deterministic)
        x, single = as_observations(obs, self.policy.net.sizes[0])
        batch = self._normalize_rows(x)
        env_actions, _, _ = self.policy.act(self.theta, batch, self._predict_rng,
                                            bool(deterministic))
        return env_actions[0] if single else env_actions

    def evaluate(self, n_episodes: int = 10, *, deterministic: bool = True,
                 seed: int | Sequence[int] | None = None, env: gym.Env | None = None,
                 max_episode_steps: int = 100_000) -> tuple[float, float]:
        """Mean and std of the undiscounted return over ``n_episodes`` fresh episodes.

        Runs on a separate environment (``gym.make(env_id)`` unless ``env`` is given)
        and does not touch the training state or its random generators.  Episode ``i``
        starts from ``reset(seed=seed + i)`` for an int ``seed``, from
        ``reset(seed=seed[i])`` for a sequence of ``n_episodes`` ints (the start states a
        comparison declares, e.g. the same ones for two implementations), and unseeded
        for ``None``.  An episode is cut after ``max_episode_steps`` steps, so an
        environment without a time limit cannot hang the evaluation.

        Raises
        ------
        ValueError
            If ``n_episodes`` or ``max_episode_steps`` is not a positive int, ``env`` has
            another observation shape or action space than the agent's, or ``seed`` is a
            sequence whose length is not ``n_episodes`` or which holds something other
            than non-negative ints.
        TypeError
            If ``deterministic`` is not a bool or ``env`` not a ``gymnasium.Env``.
        EnvOutputError
            If the environment returns an unusable observation or reward.
        """
        for name, count in (("n_episodes", n_episodes), ("max_episode_steps", max_episode_steps)):
            if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
                raise ValueError(f"{name} must be a positive int, got {count!r}")
        n_episodes, max_episode_steps = int(n_episodes), int(max_episode_steps)
        _check_bool("deterministic", deterministic)
        if env is not None and not isinstance(env, gym.Env):
            raise TypeError(f"env: expected a gymnasium.Env, got {type(env).__name__}")
        episode_seeds = _episode_seeds(seed, n_episodes)
        if env is None:
            if self.env_id is None:
                raise ValueError("env: this agent has no env id; pass env= to evaluate()")
            # made here, so closed here (an env the caller passes stays the caller's)
            with contextlib.closing(gym.make(self.env_id)) as own_env:
                return self._evaluate(own_env, n_episodes, deterministic, seed, episode_seeds,
                                      max_episode_steps)
        return self._evaluate(env, n_episodes, deterministic, seed, episode_seeds,
                              max_episode_steps)

    def _evaluate(self, env: gym.Env, n_episodes: int, deterministic: bool, seed: Any,
                  episode_seeds: list[int] | None,
                  max_episode_steps: int) -> tuple[float, float]:
        """:meth:`evaluate` on ``env`` with its arguments checked."""
        venv = self.collector.groups[0].venv
        same_spaces(env, venv.single_observation_space, venv.single_action_space)
        checked = CheckedEnv(env)
        # An int seed keeps the action stream of earlier versions; a sequence seeds it
        # with all the episode seeds.
        rng = np.random.default_rng(
            episode_seeds if isinstance(seed, Sequence | np.ndarray) else seed)
        returns = []
        for i in range(n_episodes):
            obs, _ = checked.reset(seed=None if episode_seeds is None else episode_seeds[i])
            total, done, steps = 0.0, False, 0
            while not done and steps < max_episode_steps:
                x = self._evaluation_obs(checked, obs, f"episode {i}, step {steps}")
                steps += 1
                action, _, _ = self.policy.act(self.theta, x, rng, deterministic)
                obs, reward, terminated, truncated, _ = checked.step(action[0])
                total += float(reward)
                if not np.isfinite(reward):
                    raise EnvOutputError(f"is {reward!r} (not finite)", env=env_name(env),
                                         field="reward", at=f"episode {i}, step {steps}")
                done = bool(terminated or truncated)
            returns.append(total)
        return float(np.mean(returns)), float(np.std(returns))

    def _evaluation_obs(self, env: gym.Env, obs: Any, at: str) -> NDArray:
        """One observation of ``evaluate``'s env, checked and normalized, as a 1-row batch."""
        try:
            x, _ = as_observations(np.reshape(obs, (1, -1)), self.policy.net.sizes[0])
        except ValueError as err:
            raise EnvOutputError(str(err).removeprefix("obs"), env=env_name(env),
                                 field="observation", at=at) from None
        return self._normalize_rows(x)

    # ------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """The whole training state as a nested dict of arrays, scalars and strings.

        Each component contributes its own ``state_dict()``: ``policy`` (the network and
        action space layout; the parameters are ``theta``), ``value`` (critic and its Adam
        state), ``obs_rms`` and ``reward_scaler`` (when enabled), ``collector`` (current
        observations, episode accumulators, environment snapshots), ``rng`` and
        ``predict_rng`` (generator states).  ``config`` is the configuration's JSON.  The
        arrays are the live ones: copy them to keep a snapshot.
        """
        state: dict[str, Any] = {
            "config": self.config.to_json(),
            "env_id": self.env_id or "",
            "seed": self.seed,
            "theta": self.theta,
            "policy": self.policy.state_dict(),
            "value": self.value.state_dict(),
            "rng": generator_state_dict(self.rng),
            "predict_rng": generator_state_dict(self._predict_rng),
            "num_timesteps": self.num_timesteps,
            "n_updates": self.n_updates,
            "episode_returns": np.asarray(self.episode_returns, dtype=np.float64),
            "episode_lengths": np.asarray(self.episode_lengths, dtype=np.int64),
            "metrics": _metric_columns(self.metrics),
            "collector": self.collector.state_dict(),
        }
        if self.value_fit is not None:  # settings only, equal to the config's
            state["value_fit"] = self.value_fit.state_dict()
        if self.obs_rms is not None:
            state["obs_rms"] = self.obs_rms.state_dict()
        if self.reward_scaler is not None:
            state["reward_scaler"] = self.reward_scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into this agent (built with the same config and env).

        Every entry is checked against this agent before anything changes: its key, dtype
        and shape (each component checks its own part), the policy and the spaces (a state
        of another environment does not fit), finite parameters.  A state that does not
        fit leaves the agent as it was.

        Raises
        ------
        StateError
            A ``ValueError`` whose message starts with the path of the entry that does not
            fit (``value/adam/m: shape (10,), expected (4545,)``).
        """
        mine = self.state_dict()
        check_keys(state, set(mine) - {"metrics"}, {"metrics"})
        # compared as configurations, not as text: a file saved before a field was added
        # has no entry for it, which means its default
        try:
            saved_config = TRPOConfig.from_json(str_scalar(state, "config"))
        except (ValueError, TypeError) as err:
            raise StateError("config", f"not a configuration: {err}") from None
        if saved_config != self.config:
            raise StateError("config", "saved with a different configuration; build the agent "
                             "with TRPOConfig.from_json(state['config']) or use TRPO.load")
        env_id = str_scalar(state, "env_id")
        seed = int_scalar(state, "seed", low=0)
        with nested("policy"):
            self.policy.load_state_dict(state["policy"])
        theta = float_array(state, "theta", (self.policy.n_params,))
        check_generator_state(state["rng"], self.rng, "rng")
        check_generator_state(state["predict_rng"], self._predict_rng, "predict_rng")
        num_timesteps = int_scalar(state, "num_timesteps", low=0)
        n_updates = int_scalar(state, "n_updates", low=0)
        returns = float_array(state, "episode_returns", None)
        lengths = int_array(state, "episode_lengths", None, low=0)
        for key, arr in (("episode_returns", returns), ("episode_lengths", lengths)):
            if arr.ndim != 1 or arr.size > 100:
                raise StateError(key, f"shape {arr.shape}, expected (n,) with n <= 100")
        metrics = _checked_metric_columns(state.get("metrics", {}))
        # Every component's part is checked (loaded into a scratch copy) before anything
        # changes: a state that does not fit leaves the agent as it was.
        parts = [("value", self.value)]
        parts += [(name, getattr(self, name)) for name in ("obs_rms", "reward_scaler",
                                                           "value_fit")
                  if getattr(self, name) is not None]
        for name, component in parts:
            with nested(name):
                copy.deepcopy(component).load_state_dict(state[name])
        with nested("collector"):
            self.collector.check_state(state["collector"])
        for name, component in parts:
            component.load_state_dict(state[name])
        self.theta = theta
        self.env_id = self.env_id or (env_id or None)
        self.seed = seed
        with nested("rng"):
            _load_generator(self.rng, state["rng"])
        with nested("predict_rng"):
            _load_generator(self._predict_rng, state["predict_rng"])
        self.num_timesteps = num_timesteps
        self.n_updates = n_updates
        self.episode_returns.clear()
        self.episode_returns.extend(returns.tolist())
        self.episode_lengths.clear()
        self.episode_lengths.extend(int(x) for x in lengths)
        self.metrics = _metric_rows(metrics)
        # The saved episodes continue if every environment has a snapshot; otherwise new
        # ones start from the environments' restored streams.
        with nested("collector"):
            self.collector.load_state_dict(state["collector"])

    def save(self, path: str) -> None:
        """Write the whole training state (:meth:`state_dict`) to one ``.npz`` file, atomically.

        ``path`` names a file in an existing directory (ValueError for an empty path or a
        directory, FileNotFoundError for a missing directory).
        """
        write_state(path, self.state_dict())

    @classmethod
    def load(cls, path: str, env: Any = None) -> TRPO:
        """Restore an agent saved with :meth:`save`; training continues the same run.

        ``env`` defaults to the saved environment id (required if the agent was trained on
        an environment instance without a registered id, or one ``gymnasium.make(id)``
        does not rebuild: wrapped by the user, or made with other arguments).

        Raises
        ------
        CheckpointError
            The file is damaged or not a checkpoint, of another format version, or an entry
            does not fit the agent rebuilt from the saved configuration and ``env`` (another
            environment's spaces, a truncated parameter vector...): the message names the
            path and the entry.
        UnknownEnvError
            The saved environment id is not registered here (a ValueError and a
            ``gymnasium.error.Error``); pass ``env=``.
        """
        state = read_state(path)
        where = f"path={os.fspath(path)!r}"
        try:
            check_keys(state, ("config", "env_id", "seed"), set(state))
            try:
                config = TRPOConfig.from_json(str_scalar(state, "config"))
            except (ValueError, TypeError, KeyError) as err:
                if isinstance(err, StateError):
                    raise
                raise StateError("config", f"not a valid configuration ({err})") from None
            seed = int_scalar(state, "seed", low=0)
            saved_id = str_scalar(state, "env_id")
        except StateError as err:
            raise CheckpointError(f"{where}: {err}") from None
        if env is None and saved_id:
            try:
                check_env_id(saved_id)
            except UnknownEnvError as err:
                # Not a damaged file: an environment this installation does not have.
                raise UnknownEnvError(f"{where}: the saved {err}") from None
        if env is None:
            env = saved_id or None
            if env is None:
                raise ValueError("env: the checkpoint has no env id; pass the env to load()")
        given = _env_count(env)
        if given is not None and given != config.n_envs:
            kind = ("an env instance is one environment" if isinstance(env, gym.Env)
                    else f"the vector env(s) run {given} environment(s)")
            raise CheckpointError(
                f"{where}: env: {kind}, but the checkpoint was saved with "
                f"n_envs={config.n_envs}: pass an id, or vector envs of {config.n_envs} "
                "environments in all") from None
        try:
            agent = cls(env, seed=seed, config=config)
        except ConfigError as err:
            # The saved configuration does not fit ``env`` (use_sde=True on Discrete actions).
            # Its advice (change the config) is for someone writing one, not loading a file.
            saved = f" (saved with env {saved_id!r})" if saved_id else ""
            raise CheckpointError(
                f"{where}: the saved {err.problem}; the checkpoint{saved} only loads onto an "
                f"environment its configuration fits") from None
        try:
            agent.load_state_dict(state)
        except StateError as err:
            agent.close()
            raise CheckpointError(f"{where}: {err}") from None
        return agent

    def close(self) -> None:
        """Close the environments, the critic's worker process and thread, and the Fisher
        shards; the others even if closing the environments fails (which then raises)."""
        self._join_critic(raise_error=False)
        try:
            self.collector.close()
        finally:
            self._close_workers()

    def _close_workers(self) -> None:
        if self._critic_thread is not None:
            self._critic_thread.shutdown()
            self._critic_thread = None
        if self._critic_process is not None:
            worker, self._critic_process = self._critic_process, None
            worker.close()
            if worker.cpu_seconds is not None:
                self.critic_process_usage = {
                    "cpu_seconds": worker.cpu_seconds,
                    "peak_rss_mib": math.nan if worker.peak_rss_mib is None
                    else worker.peak_rss_mib}
        if self._fisher_shards is not None:
            self._fisher_shards.close()



def _env_count(env: Any) -> int | None:
    """How many environments ``env`` runs if it decides that itself (an env instance, a
    vector env or a list of them), else None (an id: the agent makes ``n_envs``)."""
    if isinstance(env, gym.Env):
        return 1
    venvs = env if isinstance(env, list | tuple) else [env]
    if not venvs or not all(isinstance(v, gym.vector.VectorEnv) for v in venvs):
        return None
    counts = [getattr(v, "num_envs", None) for v in venvs]
    if not all(isinstance(c, int | np.integer) and not isinstance(c, bool) for c in counts):
        return None  # make_env_groups names the bad vector env
    return int(sum(counts))


def _env_id(env: Any, rebuildable: bool = False) -> str | None:
    """The registered id of ``env`` (an id, an instance, a vector env or a list of them).

    With ``rebuildable``, only an id that ``gymnasium.make`` turns into the same
    environment: not that of an instance the user wrapped (``NormalizeObservation``, another
    ``TimeLimit``) or made with other keyword arguments, whose checkpoint must not load
    silently onto the plain registered environment.
    """
    if isinstance(env, str):
        return env
    if isinstance(env, list | tuple):
        return _env_id(env[0], rebuildable) if env else None
    spec = getattr(env, "spec", None)
    if spec is None and isinstance(env, gym.vector.VectorEnv):
        # Gymnasium's vector envs have no spec of their own: ask the first sub-env.
        try:
            spec = env.get_attr("spec")[0]
        except Exception:  # a custom vector env without per-env attributes
            spec = None
    env_id = getattr(spec, "id", None)
    if env_id is None or not rebuildable:
        return env_id
    try:
        registered = gym.spec(env_id)
    except gym.error.Error:
        return env_id  # not registered here: loading it by id fails loudly anyway
    same = (_user_wrappers(spec) == _user_wrappers(registered)
            and all(getattr(spec, f, None) == getattr(registered, f, None)
                    for f in ("entry_point", "max_episode_steps")))
    try:
        same = same and bool(_make_kwargs(spec) == _make_kwargs(registered))
    except Exception:  # kwargs that do not compare (arrays)
        same = False
    return env_id if same else None


def _make_kwargs(spec: Any) -> dict:
    """The keyword arguments ``spec`` makes its env with, but ``render_mode`` (display only)."""
    return {k: v for k, v in (getattr(spec, "kwargs", None) or {}).items()
            if k != "render_mode"}


def _user_wrappers(spec: Any) -> tuple:
    """The wrappers ``spec`` records beyond ``gymnasium.make``'s, but the agent's own checks
    and snapshots."""
    return tuple(w for w in getattr(spec, "additional_wrappers", None) or ()
                 if getattr(w, "name", None) not in ("CheckedEnv", "SnapshotWrapper"))


def _metric_columns(metrics: list[dict[str, Any]]) -> dict[str, NDArray]:
    """Per-update metric rows -> one array per metric (numbers as float64, names as str)."""
    if not metrics:
        return {}
    return {key: np.asarray([m[key] for m in metrics]) for key in metrics[0]}


def _checked_metric_columns(columns: Any) -> dict[str, NDArray]:
    """Saved metric columns: 1-D arrays of numbers or strings, all of one length."""
    if isinstance(columns, dict) and not columns:
        return {}
    with nested("metrics"):
        check_keys(columns, set(columns) if isinstance(columns, dict) else ())
        lengths = set()
        for key, col in columns.items():
            if not isinstance(col, np.ndarray) or col.ndim != 1 or col.dtype.kind not in "biufU":
                raise StateError(key, "expected a 1-D array of numbers or strings, got "
                                      f"{type(col).__name__} {getattr(col, 'shape', '')}")
            lengths.add(col.size)
        if len(lengths) > 1:
            raise StateError("", f"columns of different lengths {sorted(lengths)}")
    return columns


def _load_generator(rng: np.random.Generator, state: dict[str, Any]) -> None:
    """Restore a generator whose saved layout was checked; reject values it refuses."""
    try:
        load_generator_state_dict(rng, state)
    except (ValueError, TypeError, OverflowError) as err:
        raise StateError("", f"not a valid generator state ({err})") from None


def _metric_rows(columns: dict[str, Any]) -> list[dict[str, Any]]:
    lists = {key: np.atleast_1d(col).tolist() for key, col in columns.items()}
    n_rows = len(next(iter(lists.values()))) if lists else 0
    return [{key: col[i] for key, col in lists.items()} for i in range(n_rows)]


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _episode_seeds(seed: Any, n_episodes: int) -> list[int] | None:
    """``evaluate``'s per-episode reset seeds from its ``seed`` argument (see there)."""
    if seed is None:
        return None
    if isinstance(seed, int | np.integer) and not isinstance(seed, bool):
        if not _is_seed(seed):
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        return [int(seed) + i for i in range(n_episodes)]
    if (isinstance(seed, (str, bytes)) or not isinstance(seed, Sequence | np.ndarray)
            or (isinstance(seed, np.ndarray) and seed.ndim == 0)):  # (nor a sequence)
        got = f"the 0-d array {seed!r}" if isinstance(seed, np.ndarray) else type(seed).__name__
        raise ValueError(f"seed must be None, an int or a sequence of {n_episodes} ints, "
                         f"got {got}")
    seeds = list(seed)
    if len(seeds) != n_episodes:
        raise ValueError(f"seed: {len(seeds)} episode seeds for n_episodes={n_episodes}")
    for k, s in enumerate(seeds):
        if not _is_seed(s):
            raise ValueError(f"seed[{k}] must be a non-negative int, got {s!r}")
    return [int(s) for s in seeds]


def _ended_env_workers(collector: Any) -> list[str]:
    """The collector's ended async env workers (waiting up to a second for one whose pipe
    just broke to exit): :meth:`rl_adapters.rollout.EnvGroup.ended_workers`."""
    return [w for group in getattr(collector, "groups", ()) for w in group.ended_workers(1.0)]


def _check_bool(name: str, value: Any) -> None:
    """TypeError naming ``name`` unless ``value`` is a bool (NumPy's included)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool, got {value!r}")


def _is_seed(value: Any) -> bool:
    """A non-negative int (NumPy's included), not a bool: what the agent's and the
    environments' seeds must be."""
    return not isinstance(value, bool) and isinstance(value, int | np.integer) and value >= 0
