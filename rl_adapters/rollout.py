"""Rollouts from Gymnasium vector environments, GAE, and environment snapshots.

The collector steps a :class:`gymnasium.vector.VectorEnv` built in ``SAME_STEP`` autoreset
mode: when a sub-environment's episode ends, ``step`` returns the first observation of
the next episode and the last observation of the finished one in
``info["final_obs"]``.  The policy is evaluated once per step for the whole batch of
environments; the critic is evaluated after the rollout, in one batched call, on every
stored observation, on the final observations of truncated episodes (the bootstrap
values) and on the observations the rollout stops at.

Generalized advantage estimation (Schulman et al., 2016):

.. math::

    \\delta_t = r_t + \\gamma\\, \\hat V_{t+1} - V(s_t), \\qquad
    A_t = \\delta_t + \\gamma\\lambda\\,(1 - d_t)\\, A_{t+1},

where ``d_t`` marks the end of an episode (terminated or truncated) and the next-state
value is ``V(s_{t+1})`` inside an episode, ``0`` on termination and ``V(s_final)`` on
truncation (a time limit is not a terminal state of the MDP).
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from rl_adapters._kernels import (
    STEP_ACTED,
    STEP_CHECK,
    STEP_EPISODE_END,
    categorical_act_rows,
    gae_advantages,
    normalize_and_act_rows,
    record_and_act,
    record_step,
    rms_normalize,
    rms_normalize_into,
    rms_update,
)
from rl_adapters.env_checks import (
    CheckedEnv,
    _describe,
    check_batch,
    check_spaces,
    env_name,
    has_own_wrappers,
    insert_innermost,
)
from rl_adapters.policies import CategoricalPolicy, DiagGaussianPolicy
from rl_adapters.seeding import env_generators, generator_state_dict, load_generator_state_dict
from rl_adapters.validation import (
    EnvOutputError,
    StateError,
    check_generator_state,
    check_keys,
    check_like,
    float_array,
    int_array,
    nested,
)

__all__ = ["Collector", "EnvGroup", "FrozenObsNorm", "LeanSyncVectorEnv", "RolloutBatch",
           "Segment", "SnapshotWrapper", "act_rowwise", "collect_segment", "compute_gae",
           "make_env_groups", "make_vector_env"]


def compute_gae(rewards: NDArray, values: NDArray, next_values: NDArray,
                episode_ends: NDArray, gamma: float, lam: float) -> NDArray:
    """GAE(gamma, lambda) advantages, arrays of shape ``(T, n_envs)``.

    Parameters
    ----------
    rewards, values : ndarray
        ``r_t`` and ``V(s_t)``.
    next_values : ndarray
        The value of the state after ``t``: ``V(s_{t+1})``, ``0`` if the episode
        terminated at ``t``, ``V(s_final)`` if it was truncated at ``t``.
    episode_ends : ndarray of bool
        True where the episode ended at ``t`` (terminated or truncated): the recursion
        does not carry advantages across it.

    Examples
    --------
    >>> r = np.array([[1.0], [1.0]]); v = np.zeros((2, 1))
    >>> compute_gae(r, v, np.zeros((2, 1)), np.array([[False], [True]]), 0.5, 1.0)[:, 0]
    array([1.5, 1. ])
    """
    return gae_advantages(np.asarray(rewards, dtype=np.float64), np.asarray(values, np.float64),
                       np.asarray(next_values, np.float64), np.asarray(episode_ends, bool),
                       float(gamma), float(lam))


# ---------------------------------------------------------------- environments
class SnapshotWrapper(gym.Wrapper):
    """Outermost wrapper exposing the attribute ``trpo_snapshot`` (get and set).

    A snapshot holds what is needed to continue an episode bitwise after a restart: the
    environment's RNG state, the ``TimeLimit`` step counter and the simulator state
    (MuJoCo's full integration state via ``mj_getState`` and the derived quantities a live
    run holds between steps, see :data:`MUJOCO_DERIVED_FIELDS`; or the ``state`` array of
    the classic-control environments).  For other environments the snapshot is ``None``
    and a resumed run starts new episodes there.  Vector envs reach it per sub-env through
    ``get_attr`` / ``set_attr``, which also works across processes (async).
    """

    @property
    def trpo_snapshot(self) -> dict | None:
        base = self.env.unwrapped
        snap: dict = {"np_random": generator_state_dict(base.np_random)}
        steps = _time_limit(self.env)
        snap["elapsed_steps"] = -1 if steps is None else int(steps._elapsed_steps or 0)
        if hasattr(base, "model") and hasattr(base, "data") and type(base).__module__.startswith(
            "gymnasium.envs.mujoco"
        ):
            import mujoco

            spec = mujoco.mjtState.mjSTATE_INTEGRATION
            state = np.empty(mujoco.mj_stateSize(base.model, spec))
            mujoco.mj_getState(base.model, base.data, state, spec)
            snap["mujoco_state"] = state
            snap["mujoco_derived"] = _get_mujoco_derived(base.data)
        elif _is_state(getattr(base, "state", None)):
            # (MountainCar-v0 keeps a tuple of two floats after a step, an array after reset;
            # restored as an array, which its step unpacks to the same floats)
            snap["state"] = np.array(base.state)
            if hasattr(base, "steps_beyond_terminated"):
                sbt = base.steps_beyond_terminated
                snap["steps_beyond_terminated"] = -1 if sbt is None else int(sbt)
        else:
            return None
        return snap

    @trpo_snapshot.setter
    def trpo_snapshot(self, snap: dict | None) -> None:
        if snap is None:
            return
        base = self.env.unwrapped
        load_generator_state_dict(base.np_random, snap["np_random"])
        steps = _time_limit(self.env)
        if steps is not None and int(snap["elapsed_steps"]) >= 0:
            steps._elapsed_steps = int(snap["elapsed_steps"])
        if "mujoco_state" in snap:
            import mujoco

            spec = mujoco.mjtState.mjSTATE_INTEGRATION
            mujoco.mj_setState(base.model, base.data, np.asarray(snap["mujoco_state"]), spec)
            # Fills every derived field (the contacts and constraints too) from the state;
            # the fixed-size ones then get the live run's values back.  A snapshot without
            # them (a checkpoint from before they were saved) restores as mj_forward has it.
            mujoco.mj_forward(base.model, base.data)
            if "mujoco_derived" in snap:
                _set_mujoco_derived(base.data, snap["mujoco_derived"])
        elif "state" in snap:
            base.state = np.array(snap["state"])
            if "steps_beyond_terminated" in snap:
                sbt = int(snap["steps_beyond_terminated"])
                base.steps_beyond_terminated = None if sbt < 0 else sbt


#: The MjData fields a MuJoCo snapshot saves besides the integration state: the quantities
#: ``mj_step`` derives from the state, in the order of its pipeline.
#:
#: ``mj_step`` runs a full forward pass on the state (``mjSTATE_INTEGRATION``: time, qpos,
#: qvel, act, the controls and applied forces, mocap poses, ``qacc_warmstart``, ...) before
#: it integrates, and every field below is an output of that pass, never an input.  So the
#: physics after a restore is the same whatever these fields hold; what differs without
#: them is what code reads *between* steps.  A live run holds those of the last forward
#: pass inside its last substep: at the state before the integration (Euler, implicit), or
#: at the last stage of the RK4 integrator (Ant, Hopper, ...), plus the forces Gymnasium's
#: ``mj_rnePostConstraint`` computes from them after ``mj_step``; ``mj_forward`` on the
#: restored state gives those of the integrated state instead.  Ant-v5 and Humanoid-v5 read
#: a body position or the centre of mass before they step (their forward reward), so without
#: these fields the first reward after a resume differs.
#:
#: Only fields sized by the model (nbody, ngeom, nsite, ncam, nlight, nv, nM, nu, na,
#: ntendon, nwrap, nsensordata, ...) are listed, so the saved vector has a fixed length
#: per model.  Left to ``mj_forward``: the contacts and ``efc_*``/``iefc_*`` constraint rows
#: and the island arrays (their number changes with the contacts; the next step rebuilds
#: them, so they only matter to a reader of ``data.contact`` before the step), the integer
#: index structures (``moment_*``, ``ten_wrapadr``/``ten_wrapnum``, ``wrap_obj``: fixed for
#: joint transmissions and fixed tendons, as in the Gymnasium models, and garbage there
#: could crash a renderer), solver and integrator workspaces (``qH``, ``qLU``, ``qDeriv``,
#: ``efm_*``), sleep bookkeeping and diagnostics (``solver*``, ``warning``, ``timer``).
#: Names this MuJoCo version does not have (``qM`` became ``M``) are skipped.
MUJOCO_DERIVED_FIELDS = (
    # mj_fwdPosition: kinematics, centre of mass, cameras and lights, tendons, flexes,
    # composite inertia, mass matrix and its factor, actuator lengths and moments
    "xpos", "xquat", "xmat", "xipos", "ximat", "xiquat", "xanchor", "xaxis",
    "geom_xpos", "geom_xmat", "geom_xquat", "site_xpos", "site_xmat", "site_xquat",
    "cam_xpos", "cam_xmat", "light_xpos", "light_xdir", "subtree_com", "cdof", "cinert",
    "ten_length", "ten_J", "wrap_xpos", "flexvert_xpos", "flexedge_length",
    "actuator_length", "actuator_moment", "crb", "qM", "M", "qLD", "qLDiagInv",
    # mj_fwdVelocity: velocities, bias and passive forces
    "ten_velocity", "flexedge_velocity", "actuator_velocity", "cvel", "cdof_dot",
    "qfrc_bias", "qfrc_spring", "qfrc_damper", "qfrc_gravcomp", "qfrc_fluid",
    "qfrc_passive", "subtree_linvel", "subtree_angmom",
    # mj_fwdActuation, mj_fwdAcceleration, mj_fwdConstraint (the per-dof results),
    # mj_rnePostConstraint, sensors and energy
    "act_dot", "actuator_force", "qfrc_actuator", "qfrc_adhesion", "qfrc_smooth",
    "qacc_smooth", "qfrc_constraint", "qacc", "cacc", "cfrc_int", "cfrc_ext",
    "sensordata", "energy",
)


def _mujoco_derived_arrays(data) -> list[NDArray]:
    """The :data:`MUJOCO_DERIVED_FIELDS` of ``data`` (live views), those this MuJoCo has."""
    return [getattr(data, name) for name in MUJOCO_DERIVED_FIELDS if hasattr(data, name)]


def _get_mujoco_derived(data) -> NDArray:
    """The derived fields of ``data`` as one float64 vector (one checkpoint entry)."""
    return np.concatenate([np.ravel(a) for a in _mujoco_derived_arrays(data)]).astype(
        np.float64)


def _set_mujoco_derived(data, saved: Any) -> None:
    """Write a vector from :func:`_get_mujoco_derived` back into ``data``'s fields."""
    arrays = _mujoco_derived_arrays(data)
    size = sum(a.size for a in arrays)
    saved = np.asarray(saved)
    if saved.dtype != np.float64 or saved.shape != (size,):
        raise StateError("mujoco_derived", f"expected a float64 array of shape ({size},), "
                                           f"got a {saved.dtype} array of shape {saved.shape}")
    start = 0
    for a in arrays:
        a[...] = saved[start:start + a.size].reshape(a.shape)
        start += a.size


def _is_state(state: Any) -> bool:
    """Whether ``state`` is a classic-control env's state: an array, or a tuple of floats."""
    if isinstance(state, np.ndarray):
        return True
    return (isinstance(state, tuple) and len(state) > 0
            and all(isinstance(x, float | np.floating) for x in state))


def _with_saved_state_precision(template: dict, saved: Any) -> dict:
    """``template`` with its classic-control ``state`` in the saved array's float precision.

    Gymnasium's classic-control envs change their state's dtype within an episode
    (Acrobot-v1: float32 after ``reset``, float64 after a step; MountainCarContinuous-v0 the
    other way round), so a snapshot taken mid-episode and one of a fresh env may differ in
    precision alone. Both are the env's own; the setter restores the saved array as it is,
    so the resumed episode continues in the precision it was saved in.
    """
    state = saved.get("state") if isinstance(saved, Mapping) else None
    mine = template.get("state")
    if (isinstance(state, np.ndarray) and isinstance(mine, np.ndarray)
            and state.dtype in _STATE_PRECISIONS and mine.dtype in _STATE_PRECISIONS):
        return {**template, "state": mine.astype(state.dtype)}
    return template


_STATE_PRECISIONS = (np.dtype(np.float32), np.dtype(np.float64))


def _snapshot_template(template: dict, saved: Any) -> dict:
    """The layout ``saved`` must have: ``template`` (a fresh env's snapshot) in the saved
    state's precision (:func:`_with_saved_state_precision`), without ``mujoco_derived`` if
    ``saved`` has none (a checkpoint written before snapshots held the derived quantities:
    it restores the integration state and recomputes the rest, as it did then)."""
    template = _with_saved_state_precision(template, saved)
    if ("mujoco_derived" in template and isinstance(saved, Mapping)
            and "mujoco_derived" not in saved):
        template = {k: v for k, v in template.items() if k != "mujoco_derived"}
    return template


def _time_limit(env: gym.Env):
    while True:
        if isinstance(env, gym.wrappers.TimeLimit):
            return env
        if not isinstance(env, gym.Wrapper):
            return None
        env = env.env


def make_env_fn(env_id: str, **kwargs):
    def thunk():
        env = gym.make(env_id, disable_env_checker=True, **kwargs)
        check_spaces(env.observation_space, env.action_space, env_id)
        outer_check = has_own_wrappers(env)
        # Innermost, so that Gymnasium's wrappers never see an output that fails the checks.
        env = insert_innermost(env, lambda base: CheckedEnv(base, env_id))
        if outer_check:
            # The env's entry point wrapped it (a user's wrapper, or one that transforms
            # outputs): what those wrappers return is what the agent reads, so check it too.
            env = CheckedEnv(env, env_id)
        return SnapshotWrapper(env)

    return thunk


class LeanSyncVectorEnv(gym.vector.VectorEnv):
    """A sequential vector env in ``SAME_STEP`` autoreset mode, with lean ``infos``.

    Same stepping, seeding (``reset(seed=s)`` seeds sub-env ``i`` with ``s + i``, a list
    of seeds one each) and
    autoreset semantics as :class:`gymnasium.vector.SyncVectorEnv` with
    ``autoreset_mode=SAME_STEP``, but ``infos`` only carries what TRPO reads at episode
    ends (``final_obs``, ``final_info`` and their ``_``-masks): Gymnasium's per-key
    merging of every sub-env's info dict costs more than a MuJoCo step here.  Use
    ``vector_env="gym_sync"`` for the full Gymnasium behaviour.
    """

    def __init__(self, env_fns) -> None:
        self.envs = [fn() for fn in env_fns]
        self.num_envs = len(self.envs)
        first = self.envs[0]
        self.metadata = {**first.metadata,
                         "autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
        self.spec = first.spec
        self.render_mode = first.render_mode
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = gym.vector.utils.batch_space(first.observation_space,
                                                              self.num_envs)
        self.action_space = gym.vector.utils.batch_space(first.action_space, self.num_envs)
        space = first.observation_space
        self._obs = np.zeros((self.num_envs, *space.shape), dtype=space.dtype)

    def reset(self, *, seed=None, options=None):
        if seed is None or isinstance(seed, int | np.integer):
            seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
        infos: dict = {}
        for i, (env, s) in enumerate(zip(self.envs, seeds, strict=True)):
            try:
                obs, _ = env.reset(seed=s, options=options)
            except EnvOutputError as err:
                raise err.located(f"reset, env index {i}") from None
            self._obs[i] = obs
        return self._obs.copy(), infos

    def step(self, actions):
        n = self.num_envs
        rewards = np.zeros(n)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        infos: dict = {}
        for i, env in enumerate(self.envs):
            try:
                obs, reward, term, trunc, info = env.step(actions[i])
            except EnvOutputError as err:
                raise err.located(f"env index {i}") from None
            rewards[i] = reward
            terminated[i] = term
            truncated[i] = trunc
            if term or trunc:
                if not infos:
                    infos = {"final_obs": np.full(n, None, dtype=object),
                             "_final_obs": np.zeros(n, dtype=bool),
                             "final_info": np.full(n, None, dtype=object),
                             "_final_info": np.zeros(n, dtype=bool)}
                infos["final_obs"][i] = obs
                infos["_final_obs"][i] = True
                infos["final_info"][i] = info
                infos["_final_info"][i] = True
                try:
                    obs, _ = env.reset()
                except EnvOutputError as err:
                    raise err.located(f"the reset after an episode's end, env index {i}") \
                        from None
            self._obs[i] = obs
        return self._obs.copy(), rewards, terminated, truncated, infos

    def get_attr(self, name: str):
        return tuple(env.get_wrapper_attr(name) for env in self.envs)

    def set_attr(self, name: str, values) -> None:
        if not isinstance(values, list | tuple):
            values = [values] * self.num_envs
        for env, value in zip(self.envs, values, strict=True):
            setattr(env, name, value)

    def call(self, name: str, *args, **kwargs):
        out = []
        for env in self.envs:
            fn = env.get_wrapper_attr(name)
            out.append(fn(*args, **kwargs) if callable(fn) else fn)
        return tuple(out)

    def close_extras(self, **kwargs) -> None:
        for env in self.envs:
            env.close()


def make_vector_env(env, n_envs: int, kind: str = "sync") -> gym.vector.VectorEnv:
    """A vector env in SAME_STEP autoreset mode from an id, an env instance or a vector env."""
    same_step = gym.vector.AutoresetMode.SAME_STEP
    if isinstance(env, gym.vector.VectorEnv):
        if getattr(env, "closed", False) is True:
            raise ValueError(f"env: the vector env ({type(env).__name__}) is closed; pass "
                             "an open one")
        num = getattr(env, "num_envs", None)
        if isinstance(num, bool) or not isinstance(num, int | np.integer) or num < 1:
            raise ValueError(f"env: the vector env ({type(env).__name__}) has num_envs={num!r}; "
                             "it must run one or more environments")
        mode = env.metadata.get("autoreset_mode")
        if mode != same_step:
            raise ValueError(
                f"env: vector envs must use autoreset_mode=AutoresetMode.SAME_STEP, got {mode!r}"
            )
        check_spaces(env.single_observation_space, env.single_action_space, _venv_name(env))
        return env
    if isinstance(env, gym.Env):
        if n_envs != 1:
            raise ValueError(f"n_envs={n_envs}: an env instance gives one env; pass an id instead")
        check_spaces(env.observation_space, env.action_space, env_name(env))
        wrapped = env if isinstance(env, SnapshotWrapper) else SnapshotWrapper(CheckedEnv(env))
        return LeanSyncVectorEnv([lambda: wrapped])
    fns = [make_env_fn(env) for _ in range(n_envs)]
    if kind == "async":
        return gym.vector.AsyncVectorEnv(fns, autoreset_mode=same_step)
    if kind == "gym_sync":
        return gym.vector.SyncVectorEnv(fns, autoreset_mode=same_step)
    return LeanSyncVectorEnv(fns)


def make_env_groups(env, n_envs: int, kind: str, seed: int) -> list[EnvGroup]:
    """The collector's environment groups, with the per-env streams of ``seed``.

    ``env`` is an id, an env instance or a vector env (one group, see
    :func:`make_vector_env`), or a list of ``SAME_STEP`` vector envs: the groups, in env
    order (``n_envs`` and ``kind`` are then ignored).
    """
    if isinstance(env, list | tuple):
        if not env or not all(isinstance(v, gym.vector.VectorEnv) for v in env):
            raise ValueError("env: a list must hold one or more vector envs (the groups)")
        venvs = [make_vector_env(v, v.num_envs, kind) for v in env]
        first = venvs[0]
        for v in venvs[1:]:
            if (v.single_observation_space != first.single_observation_space
                    or v.single_action_space != first.single_action_space):
                raise ValueError("env: the vector envs of a list must have the same spaces")
    else:
        venvs = [make_vector_env(env, n_envs, kind)]
    rngs = env_generators(seed, sum(v.num_envs for v in venvs))
    groups, start = [], 0
    for v in venvs:
        groups.append(EnvGroup(v, rngs[start : start + v.num_envs]))
        start += v.num_envs
    return groups


# ---------------------------------------------------------------- the batch
@dataclass
class RolloutBatch:
    """One rollout of ``T`` steps from ``E`` environments (time-major arrays).

    ``obs`` are the (normalized) observations the policy saw; ``rewards`` are the
    (possibly scaled) rewards used for learning; ``final_obs`` holds, at ``[t, e]`` where
    episode ``e`` was truncated at ``t``, its last (normalized) observation.
    """

    obs: NDArray  # (T, E, obs_dim)
    actions: NDArray  # (T, E, act_dim)
    log_probs: NDArray  # (T, E)
    rewards: NDArray  # (T, E)
    terminated: NDArray  # (T, E) bool
    truncated: NDArray  # (T, E) bool
    final_obs: NDArray  # (T, E, obs_dim), meaningful where truncated
    last_obs: NDArray  # (E, obs_dim): the observation after the last step
    episode_returns: list[float]
    episode_lengths: list[int]
    env_time: float
    policy_time: float


class EnvGroup:
    """A vector env and the random streams of its environments: the unit of scale-out.

    The collector splits the ``n_envs`` environments into groups, in env order (one group
    by default); group ``g`` runs environments ``[start_g, start_g + k_g)`` as one vector
    env (in this process, in subprocesses, or later on a remote worker) with their own
    generators (:func:`rl_adapters.seeding.env_generators`).  Each generator gives its
    environment's reset seeds and the noise of the actions sent to it, so a group's
    transitions depend on its environments and the actions only, never on the grouping.

    Per step, :meth:`send` passes the group its slice of the actions and :meth:`receive`
    returns its ``(obs, rewards, terminated, truncated, infos)``: groups with an
    asynchronous vector env (``step_async``/``step_wait``) step in parallel.

    What the collector uses is this small protocol: ``n_envs``, :meth:`reset`,
    :meth:`draw_noise` (once per rollout), :meth:`send`/:meth:`receive` (once per step),
    :meth:`state_dict`/:meth:`load_state_dict`, :meth:`close`.  The exchange is per step
    because the learner acts for the whole batch with observation statistics updated at
    every step from all environments (``normalize_obs``).  With
    ``obs_norm_update="per_rollout"`` the statistics are frozen for the rollout, so a group
    can run a whole rollout on its own (:func:`collect_segment`): that is what a Ray
    worker does (:mod:`rl_adapters.ray_workers`).
    """

    def __init__(self, venv: gym.vector.VectorEnv, rngs: list[np.random.Generator]) -> None:
        if len(rngs) != venv.num_envs:
            raise ValueError(f"rngs: {len(rngs)} generators for {venv.num_envs} environments")
        self.venv = venv
        self.rngs = rngs
        self.n_envs = venv.num_envs
        self._pending: Any = None  # actions sent to a synchronous vector env

    def reset(self) -> NDArray:
        """Reset every environment with a seed drawn from its stream; the observations."""
        seeds = [int(rng.integers(2**32)) for rng in self.rngs]
        out = self.venv.reset(seed=seeds)
        if type(out) is not tuple or len(out) != 2:
            raise EnvOutputError(f"is {_describe(out)}: a vector env's reset() returns a tuple "
                                 "(observations, infos)", env=_venv_name(self.venv),
                                 field="output", at="reset")
        return np.asarray(out[0], dtype=np.float64)

    def draw_noise(self, policy, n_steps: int) -> NDArray:
        """``n_steps`` of sampling noise per environment, ``(n_steps, n_envs, ...)``."""
        return np.stack([policy.draw_noise(rng, (n_steps,)) for rng in self.rngs], axis=1)

    def send(self, actions: NDArray) -> None:
        if hasattr(self.venv, "step_async"):
            self.venv.step_async(actions)
        else:
            self._pending = actions

    def receive(self):
        """The vector env's ``(obs, rewards, terminated, truncated, infos)``; an
        EnvOutputError unless it is a 5-tuple with a dict of infos."""
        if self._pending is None:
            out = self.venv.step_wait()
        else:
            actions, self._pending = self._pending, None
            out = self.venv.step(actions)
        if type(out) is not tuple or len(out) != 5 or not isinstance(out[4], dict):
            self._bad_step(out)
        return out

    def _bad_step(self, out: Any) -> None:
        name = _venv_name(self.venv)
        if type(out) is not tuple or len(out) != 5:
            raise EnvOutputError(f"is {_describe(out)}: a vector env's step() returns "
                                 "(observations, rewards, terminated, truncated, infos)",
                                 env=name, field="output", at="step")
        raise EnvOutputError(f"is {_describe(out[4])}, expected a dict", env=name,
                             field="infos", at="step")

    def snapshots(self) -> list[dict | None]:
        """Each environment's :attr:`SnapshotWrapper.trpo_snapshot` (``None``: none).

        ``None`` for every environment once a worker process of the vector env has ended
        (with a warning): the episodes are lost, and the rest of the state can still be
        saved, to resume with new episodes.
        """
        gone = self.ended_workers()
        if gone:
            warnings.warn(f"the environment worker process {', '.join(gone)} has ended: "
                          "the state holds no episode snapshots, and a run resumed from it "
                          "starts new episodes", RuntimeWarning, stacklevel=2)
            return [None] * self.n_envs
        try:
            # Asked first: a sub-env of Gymnasium's AsyncVectorEnv that raises (no such
            # attribute) shuts its worker down, so get_attr alone would end a user's vector
            # env built without SnapshotWrapper.
            has = self.venv.call("has_wrapper_attr", "trpo_snapshot")
            if not all(has):
                return [None] * self.n_envs
            return list(self.venv.get_attr("trpo_snapshot"))
        except (AttributeError, NotImplementedError):
            # a vector env without Gymnasium's call/get_attr
            return [None] * self.n_envs

    def ended_workers(self, wait: float = 0.0) -> list[str]:
        """``"pid N (exit code C)"`` for each worker process of an async vector env that has
        ended, waiting up to ``wait`` seconds for one whose pipe just broke to exit."""
        procs = list(getattr(self.venv, "processes", None) or ())
        deadline = time.monotonic() + wait
        while procs:
            gone = [f"pid {p.pid} (exit code {p.exitcode})" for p in procs
                    if p.exitcode is not None]
            if gone or time.monotonic() >= deadline:
                return gone
            time.sleep(0.01)
        return []

    def state_dict(self) -> dict[str, Any]:
        """Generator states and environment snapshots, keyed by the env index in the group."""
        state: dict[str, Any] = {
            "rngs": {str(j): generator_state_dict(rng) for j, rng in enumerate(self.rngs)}}
        snaps = {str(j): snap for j, snap in enumerate(self.snapshots()) if snap is not None}
        if snaps:
            state["snapshots"] = snaps
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the generators, and the environments if ``state`` has every snapshot."""
        for j, rng in enumerate(self.rngs):
            load_generator_state_dict(rng, state["rngs"][str(j)])
        snaps = state.get("snapshots", {})
        if len(snaps) == self.n_envs:
            self.venv.set_attr("trpo_snapshot", [snaps[str(j)] for j in range(self.n_envs)])

    def close(self) -> None:
        if getattr(self.venv, "closed", True) is False and self.ended_workers():
            # A worker died: Gymnasium's polite close would wait forever for a step's answer
            # already consumed, or write to the broken pipe. Tear the workers down instead.
            procs = self.venv.processes
            for proc in procs:
                if proc.is_alive():
                    proc.kill()
            for pipe in self.venv.parent_pipes:
                if pipe is not None:
                    pipe.close()
            for proc in procs:
                proc.join()
            self.venv.closed = True
            return
        self.venv.close()


class Collector:
    """Steps the environment groups with the current policy; owns per-episode bookkeeping.

    The policy and the normalizers act on the whole batch of ``n_envs`` observations at
    each step (the observation statistics are updated per step with every environment's
    observation, in env order); the groups only step environments.
    """

    def __init__(self, groups: list[EnvGroup], policy, obs_rms, reward_scaler,
                 clip_obs: float, obs_norm_update: str = "per_step", sde_noise=None) -> None:
        if obs_norm_update not in ("per_step", "per_rollout"):
            raise ValueError(f"obs_norm_update={obs_norm_update!r}: expected 'per_step' or "
                             "'per_rollout'")
        self.obs_norm_update = obs_norm_update
        self.groups = list(groups)
        self.policy = policy
        self.obs_rms = obs_rms  # RunningMeanStd or None
        self.reward_scaler = reward_scaler  # RewardScaler or None
        self.clip_obs = clip_obs
        self.n_envs = sum(g.n_envs for g in self.groups)
        # gSDE (rl_adapters.sde.StateDependentNoise) or None: white noise from draw_noise.
        self.sde_noise = sde_noise
        # Group g runs the environments _slices[g] (global env indices).
        starts = np.cumsum([0, *(g.n_envs for g in self.groups)])
        self._slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(starts)]
        self.raw_obs: NDArray | None = None
        self.ep_return = np.zeros(self.n_envs)
        self.ep_length = np.zeros(self.n_envs, dtype=np.int64)

    def reset(self) -> None:
        """Start new episodes everywhere (reset seeds from the environments' streams)."""
        try:
            raw_obs = np.concatenate([g.reset() for g in self.groups])
        except EnvOutputError as err:
            raise err.located(err.at or "reset") from None
        self._check(raw_obs, None, None, None, "reset")
        self.raw_obs = raw_obs
        self.ep_return[:] = 0.0
        self.ep_length[:] = 0

    def state_dict(self) -> dict[str, Any]:
        """Per-env state by global env index: observations, accumulators, streams, snapshots.

        ``rngs`` and ``snapshots`` map the env index (as a string) to its generator state
        and :attr:`SnapshotWrapper.trpo_snapshot` (environments without one are left
        out), so a checkpoint loads under any grouping of the environments.
        """
        assert self.raw_obs is not None, "call reset() first"
        state: dict[str, Any] = {"raw_obs": self.raw_obs, "ep_return": self.ep_return,
                                 "ep_length": self.ep_length, "rngs": {}, "snapshots": {}}
        for group, sl in zip(self.groups, self._slices, strict=True):
            group_state = group.state_dict()
            for key in ("rngs", "snapshots"):
                for j, value in group_state.get(key, {}).items():
                    state[key][str(sl.start + int(j))] = value
        if not state["snapshots"]:
            del state["snapshots"]
        if self.sde_noise is not None:
            state["sde_noise"] = self.sde_noise.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the streams; continue the saved episodes if every env has a snapshot.

        Otherwise every environment starts a new episode, from a reset seed drawn from its
        restored stream.
        """
        self.check_state(state)
        if self.sde_noise is not None:
            self.sde_noise.load_state_dict(state["sde_noise"])
        snaps = state.get("snapshots", {})
        raw_obs = np.asarray(state["raw_obs"], dtype=np.float64)
        resume = len(snaps) == self.n_envs and raw_obs.shape == np.shape(self.raw_obs)
        for group, sl in zip(self.groups, self._slices, strict=True):
            local: dict[str, Any] = {
                "rngs": {str(j): state["rngs"][str(e)] for j, e in enumerate(range(
                    sl.start, sl.stop))}}
            if resume:
                local["snapshots"] = {str(j): snaps[str(e)]
                                      for j, e in enumerate(range(sl.start, sl.stop))}
            group.load_state_dict(local)
        if resume:
            self.raw_obs = raw_obs.copy()
            self.ep_return[:] = state["ep_return"]
            self.ep_length[:] = state["ep_length"]
        else:
            self.reset()

    def check_state(self, state: Any) -> None:
        """StateError (naming the entry) unless ``state`` fits these environments."""
        E, obs_dim = self.n_envs, self.policy.net.sizes[0]
        check_keys(state, ("raw_obs", "ep_return", "ep_length", "rngs"),
                   ("snapshots", "sde_noise"))
        if self.sde_noise is not None:
            with nested("sde_noise"):
                copy.deepcopy(self.sde_noise).load_state_dict(state.get("sde_noise", {}))
        float_array(state, "raw_obs", (E, obs_dim))
        float_array(state, "ep_return", (E,))
        int_array(state, "ep_length", (E,), low=0)
        env_keys = {str(e) for e in range(E)}
        with nested("rngs"):
            check_keys(state["rngs"], env_keys)
            for e, rng in enumerate(self._generator_templates()):
                check_generator_state(state["rngs"][str(e)], rng, str(e))
        if "snapshots" in state:
            with nested("snapshots"):
                check_keys(state["snapshots"], (), env_keys)
                self._check_snapshots(state["snapshots"])

    def _generator_templates(self) -> list[np.random.Generator]:
        """Generators of the kind each environment's saved stream must restore into."""
        return [rng for group in self.groups for rng in group.rngs]

    def _current_snapshots(self) -> list[dict | None]:
        """The snapshot each environment takes now (``None``: it has none), in env order."""
        return [snap for group in self.groups for snap in group.snapshots()]

    def _check_snapshots(self, snapshots: dict[str, Any]) -> None:
        """Each saved episode against the snapshot its environment takes now."""
        current = self._current_snapshots()
        for key, saved in snapshots.items():
            template = current[int(key)]
            if template is None:
                raise StateError(key, "a saved episode of an environment that has no "
                                      "snapshot here (another environment?)")
            check_like(saved, _snapshot_template(template, saved), key)

    def close(self) -> None:
        for group in self.groups:
            group.close()

    def normalize(self, raw: NDArray) -> NDArray:
        """Normalize with the current statistics (the step loop updates them)."""
        if self.obs_rms is None:
            return raw
        return self.obs_rms.normalize(raw, self.clip_obs)

    def _step(self, env_actions: NDArray):
        """Step every group with its slice of the actions; results in env order."""
        if len(self.groups) == 1:
            group = self.groups[0]
            group.send(env_actions)
            obs, reward, terminated, truncated, info = group.receive()
            return obs, reward, terminated, truncated, info.get("final_obs")
        for group, sl in zip(self.groups, self._slices, strict=True):
            group.send(env_actions[sl])
        results = [group.receive() for group in self.groups]
        final_obs = np.full(self.n_envs, None, dtype=object)
        for (*_, info), sl in zip(results, self._slices, strict=True):
            if "final_obs" in info:
                # row by row: the group's final_obs may be an object array, a list or a
                # 2-D array (read, and checked, by _final_observation where an episode ends)
                group_final = info["final_obs"]
                for j in range(min(sl.stop - sl.start, _len_or_zero(group_final))):
                    final_obs[sl.start + j] = group_final[j]
        return (np.concatenate([r[0] for r in results]),
                np.concatenate([np.asarray(r[1], dtype=np.float64) for r in results]),
                np.concatenate([r[2] for r in results]),
                np.concatenate([r[3] for r in results]), final_obs)

    def collect(self, theta: NDArray, n_steps: int) -> RolloutBatch:
        """``n_steps`` steps of every environment with the policy at ``theta``.

        Raises
        ------
        EnvOutputError
            An environment returned an unusable output; the normalizers, the episode
            accumulators and the random streams are then as before the call (the
            environments themselves have stepped: :meth:`reset` before collecting again).
        """
        saved = self._undo_record()
        try:
            return self._collect(theta, n_steps)
        except EnvOutputError:
            self._undo(saved)
            raise

    def _undo_record(self) -> tuple:
        """What a rollout changes in place, copied (restored by :meth:`_undo`)."""
        rms, scaler = self.obs_rms, self.reward_scaler
        return (
            None if rms is None else (rms.mean.copy(), rms.var.copy(), rms.count),
            None if scaler is None else (scaler.returns.copy(), scaler.rms.mean.copy(),
                                         scaler.rms.var.copy(), scaler.rms.count),
            self.ep_return.copy(), self.ep_length.copy(),
            [[rng.bit_generator.state for rng in g.rngs] for g in self.groups],
        )

    def _undo(self, saved: tuple) -> None:
        rms_saved, scaler_saved, ep_return, ep_length, rng_states = saved
        if rms_saved is not None:
            self.obs_rms.mean[...], self.obs_rms.var[...], self.obs_rms.count = rms_saved
        if scaler_saved is not None:
            scaler = self.reward_scaler
            scaler.returns[...], scaler.rms.mean[...], scaler.rms.var[...] = scaler_saved[:3]
            scaler.rms.count = scaler_saved[3]
        self.ep_return[...] = ep_return
        self.ep_length[...] = ep_length
        for group, states in zip(self.groups, rng_states, strict=True):
            for rng, state in zip(group.rngs, states, strict=True):
                rng.bit_generator.state = state

    def _check(self, obs: NDArray, rewards: NDArray | None, terminated: Any, truncated: Any,
               at: str) -> None:
        """Raise EnvOutputError if one step's (or a reset's) batch is unusable."""
        found = check_batch(obs, rewards, terminated, truncated, self.n_envs,
                            self.policy.net.sizes[0])
        if found is None:
            return
        field, problem, index = found
        where = at if index < 0 else f"{at}, env index {index}"
        if field == "observation" and "is inf " in problem:
            dtype = self._observation_dtype(index)
            if dtype is not None and dtype.kind == "f" and dtype.itemsize < 8:
                # the vector env stores observations in the space's dtype, where a value the
                # env returned finite but beyond that range arrives as inf
                problem += (f" (or beyond the {dtype} observation space's range, "
                            f"{float(np.finfo(dtype).max):.3g}, which reads as inf)")
        raise EnvOutputError(problem, env=self._env_name(index), field=field, at=where)

    def _group_at(self, index: int) -> tuple[Any, slice] | None:
        """The group running environment ``index`` (the first if negative) and its slice."""
        index = max(index, 0)
        for group, sl in zip(self.groups, self._slices, strict=True):
            if sl.start <= index < sl.stop:
                return group, sl
        return None

    def _observation_dtype(self, index: int) -> np.dtype | None:
        """The observation space's dtype of environment ``index`` (of the first if negative)."""
        found = self._group_at(index)
        space = None if found is None else getattr(found[0].venv, "single_observation_space",
                                                    None)
        return None if space is None else np.dtype(space.dtype)

    def _env_name(self, index: int) -> str:
        """The id (or class name) of environment ``index`` (of the first if negative)."""
        found = self._group_at(index)
        if found is None:
            return ""
        group, sl = found
        envs = getattr(group.venv, "envs", None)
        if envs is not None:
            return env_name(envs[max(index, 0) - sl.start])
        return _venv_name(group.venv)

    def _collect(self, theta: NDArray, n_steps: int) -> RolloutBatch:
        assert self.raw_obs is not None, "call reset() first"
        if self.obs_norm_update == "per_rollout":
            return self._collect_per_rollout(theta, n_steps)
        E = self.n_envs
        obs_dim = self.raw_obs.shape[1]
        policy = self.policy
        obs_buf, act_buf, logp_buf, rew_buf, term_buf, trunc_buf = _rollout_buffers(
            policy, n_steps, E, obs_dim)
        final_buf = np.zeros((n_steps, E, obs_dim))  # last observations of truncated episodes
        ep_returns: list[float] = []
        ep_lengths: list[int] = []
        env_time = 0.0
        policy_time = 0.0
        step = self._step
        clock = time.perf_counter
        raw = self.raw_obs
        groups = self.groups
        sde = self.sde_noise
        if sde is None:
            # The rollout's sampling noise, one draw per environment from its own stream.
            noise = self._draw_noise(n_steps)
        else:
            # gSDE: exploration matrices drawn from each environment's stream, in env order,
            # at the rollout's start and every sde_sample_freq steps.
            env_rngs = self._env_rngs()
            sde.begin_rollout()
        rms = self.obs_rms
        clip_obs = float(self.clip_obs)
        scaler = self.reward_scaler
        ep_return, ep_length = self.ep_return, self.ep_length
        # Per step, the checks that keep the loop safe (shapes, flags, finite observations:
        # a NaN would reach the policy's kernels); the rewards are checked after the loop
        # (an error then undoes the rollout's changes, see collect()).
        raw_rewards = np.empty((n_steps, E))
        obs_shape, rew_shape, bool_ = (E, obs_dim), (E,), np.dtype(bool)
        vdot, isfinite, ndarray = np.vdot, math.isfinite, np.ndarray
        # Gymnasium's vector envs and ours return arrays of the right shapes and dtypes.
        trusted = all(isinstance(g.venv, _TRUSTED_VECTOR_ENVS) for g in groups)
        # The common case (normalized observations, a Gaussian policy, a few rows) in one
        # compiled call before the env and one after it, where the general path makes a
        # dozen NumPy and kernel calls per step: the same arithmetic in the same order.
        fused_act = (sde is None and rms is not None and type(policy) is DiagGaussianPolicy
                     and E <= ROWWISE_CHUNK)
        # A categorical policy's sampling, likewise one call (the observations are
        # normalized before it as in the general path).
        fused_categorical = (sde is None and type(policy) is CategoricalPolicy
                             and E <= ROWWISE_CHUNK)
        if fused_act or fused_categorical:
            net = policy.net
            sizes, relu, n_net = net.sizes_array, net.activation == "relu", net.n_params
            env_act_buf = np.empty_like(act_buf)
        if fused_act:
            has_bounds = policy.low is not None
            low = policy.low if has_bounds else np.zeros(0)
            high = policy.high if has_bounds else np.zeros(0)
        # With a trusted vector env of float32, float64 or integer observations (the dtypes
        # the kernel compiles for), the compiled call after the env also acts for the next
        # step (record_and_act): one call per step.  The raw observations then live in a
        # buffer of this rollout.
        fused_step = fused_act and trusted and all(
            _fused_obs_dtype(g.venv.single_observation_space.dtype) for g in groups)
        if fused_step:
            raw = np.array(raw, dtype=np.float64)
        acted = False  # whether step t's actions are in the buffers already
        if fused_categorical:
            bounds = np.cumsum((0, *policy.nvec)).astype(np.int64)
            starts, multi = policy.start, policy.multi
        scale = scaler is not None
        if scale:
            returns, s_mean, s_var = (scaler.returns, scaler.rms.mean.reshape(-1),
                                      scaler.rms.var.reshape(-1))
            s_gamma, s_clip, s_eps = float(scaler.gamma), float(scaler.clip), \
                float(scaler.epsilon)
            s_count = scaler.rms.count
        else:
            returns, s_mean, s_var = np.zeros(E), np.zeros(1), np.ones(1)
            s_gamma, s_clip, s_eps, s_count = 0.0, 0.0, 0.0, 0.0
        done = np.zeros(E, dtype=bool)
        for t in range(n_steps):
            t0 = clock()
            if fused_act:
                if not acted:
                    rms.count = normalize_and_act_rows(
                        raw, rms.mean, rms.var, rms.count, rms.epsilon, clip_obs, obs_buf,
                        theta, sizes, relu, n_net, noise, low, high, has_bounds, act_buf,
                        env_act_buf, logp_buf, t)
                env_actions = env_act_buf[t]
            else:
                obs = obs_buf[t]
                if rms is None:
                    obs[...] = raw
                else:
                    rms.count = rms_update(rms.mean, rms.var, rms.count, raw)
                    rms_normalize_into(raw, rms.mean, rms.var, rms.epsilon, clip_obs, obs)
                if fused_categorical:
                    categorical_act_rows(obs, theta, sizes, relu, noise[t], bounds, starts,
                                         act_buf[t], env_act_buf[t], logp_buf[t])
                    env_actions = env_act_buf[t] if multi else env_act_buf[t, :, 0]
                elif sde is None:
                    env_actions, logp_buf[t] = policy.act_from_noise(theta, obs, noise[t],
                                                                     act_buf[t])
                else:
                    env_actions, logp_buf[t] = sde.act(theta, obs, env_rngs, act_buf[t])
            t1 = clock()
            try:
                next_raw, reward, terminated, truncated, final_obs = step(env_actions)
            except EnvOutputError as err:
                rest = "" if err.at in ("", "step") else f", {err.at}"
                raise err.located(f"rollout step {t}{rest}") from None
            t2 = clock()
            env_time += t2 - t1
            if fused_step:
                status, rms.count, s_count = record_and_act(
                    next_raw, reward, terminated, truncated, raw, ep_return, ep_length,
                    raw_rewards, rew_buf, term_buf, trunc_buf, done, scale, returns, s_mean,
                    s_var, s_count, s_gamma, s_clip, s_eps, rms.mean, rms.var, rms.count,
                    rms.epsilon, clip_obs, obs_buf, theta, sizes, relu, n_net, noise, low, high,
                    has_bounds, act_buf, env_act_buf, logp_buf, t)
                if status != STEP_CHECK:
                    if scale:
                        scaler.rms.count = s_count
                    acted = status == STEP_ACTED
                    if status == STEP_EPISODE_END:
                        self._end_episodes(t, done, terminated, truncated, final_obs, final_buf,
                                           ep_returns, ep_lengths)
                    policy_time += clock() - t2 + (t1 - t0)
                    continue
                acted = False  # the general path below checks and records this step
            next_raw = np.array(next_raw, dtype=np.float64)
            reward = np.asarray(reward, dtype=np.float64)
            if not isfinite(vdot(next_raw, next_raw)) or (not trusted and (
                    next_raw.shape != obs_shape or reward.shape != rew_shape
                    or type(terminated) is not ndarray or terminated.dtype is not bool_
                    or type(truncated) is not ndarray or truncated.dtype is not bool_
                    or terminated.shape != rew_shape or truncated.shape != rew_shape)):
                self._check(next_raw, reward, terminated, truncated, f"rollout step {t}")
            s_count, any_done = record_step(
                reward, terminated, truncated, ep_return, ep_length, raw_rewards, rew_buf,
                term_buf, trunc_buf, t, done, scale, returns, s_mean, s_var, s_count, s_gamma,
                s_clip, s_eps)
            if scale:
                scaler.rms.count = s_count
            if any_done:
                self._end_episodes(t, done, terminated, truncated, final_obs, final_buf,
                                   ep_returns, ep_lengths)
            raw = next_raw
            policy_time += clock() - t2 + (t1 - t0)
        if not isfinite(vdot(raw_rewards, raw_rewards)):
            for t in range(n_steps):  # find the first bad step
                self._check(obs_buf[t], raw_rewards[t], None, None, f"rollout step {t}")
        self.raw_obs = raw
        last_obs = self.normalize(raw)
        return RolloutBatch(obs_buf, act_buf, logp_buf, rew_buf, term_buf, trunc_buf, final_buf,
                            np.array(last_obs), ep_returns, ep_lengths, env_time, policy_time)

    def _end_episodes(self, t: int, done: NDArray, terminated: NDArray, truncated: NDArray,
                      final_obs: Any, final_buf: NDArray, returns_out: list[float],
                      lengths_out: list[int]) -> None:
        """Close the episodes that ended at step ``t`` (``done``): their return and length
        to the lists, the accumulators to zero, and a truncated episode's last
        observation, normalized with the current statistics, to ``final_buf[t]``."""
        ep_return, ep_length = self.ep_return, self.ep_length
        for e in np.flatnonzero(done):
            returns_out.append(float(ep_return[e]))
            lengths_out.append(int(ep_length[e]))
            ep_return[e] = 0.0
            ep_length[e] = 0
            if truncated[e] and not terminated[e]:
                last = self._final_observation(final_obs, e, t)
                final_buf[t, e] = self.normalize(last[None, :])[0]

    def _final_observation(self, final_obs: Any, e: int, t: int) -> NDArray:
        """The last observation of env ``e``'s truncated episode, checked."""
        try:
            value = None if final_obs is None else final_obs[e]
        except (IndexError, KeyError, TypeError):
            value = None
        if value is None:
            raise EnvOutputError(
                "is missing: the step's infos hold no 'final_obs' for this truncated episode "
                "(a vector env in SAME_STEP autoreset mode gives it)", env=self._env_name(e),
                field="final observation", at=f"rollout step {t}, env index {e}")
        try:
            row = np.array(value, dtype=np.float64).reshape(1, -1)
        except (ValueError, TypeError):
            row = np.full((1, 0), np.nan)
        found = check_batch(row, None, None, None, 1, self.policy.net.sizes[0])
        if found is not None:
            field, problem, _ = found
            raise EnvOutputError(problem, env=self._env_name(e), field=f"final {field}",
                                 at=f"rollout step {t}, env index {e}")
        return row[0]

    # ------------------------------------------------------ per_rollout collection
    def frozen_norm(self) -> FrozenObsNorm | None:
        """A copy of the observation statistics, frozen for one rollout (None: off)."""
        if self.obs_rms is None:
            return None
        rms = self.obs_rms
        return FrozenObsNorm(rms.mean.copy(), rms.var.copy(), float(rms.epsilon),
                             float(self.clip_obs))

    def _draw_noise(self, n_steps: int) -> NDArray:
        """The rollout's sampling noise, ``(n_steps, n_envs, ...)``: each environment's from
        its own stream, in env order."""
        groups = self.groups
        if len(groups) == 1:
            return groups[0].draw_noise(self.policy, n_steps)
        return np.concatenate([g.draw_noise(self.policy, n_steps) for g in groups], axis=1)

    def _env_rngs(self) -> list[np.random.Generator]:
        """Every environment's generator, in env order (gSDE draws its matrices from them)."""
        return [rng for g in self.groups for rng in g.rngs]

    def _collect_per_rollout(self, theta: NDArray, n_steps: int) -> RolloutBatch:
        frozen = self.frozen_norm()
        assert self.raw_obs is not None
        if self.sde_noise is None:
            segment = collect_segment(self._step, self._draw_noise(n_steps), self.policy,
                                      theta, frozen,
                                      self.raw_obs, n_steps, env_name=self._env_name(0))
        else:
            self.sde_noise.begin_rollout()
            segment = collect_segment(self._step, None, self.policy, theta, frozen,
                                      self.raw_obs, n_steps, env_name=self._env_name(0),
                                      sde=self.sde_noise,
                                      rngs=self._env_rngs())
        return self.finish_rollout(segment, frozen)

    def finish_rollout(self, segment: Segment, frozen: FrozenObsNorm | None) -> RolloutBatch:
        """The learner's half of a ``per_rollout`` collection, on the gathered batch.

        ``segment`` holds every environment's raw transitions in env order, whoever stepped
        them.  Here, in env order and step by step as :meth:`collect` does per step: the
        episode bookkeeping and the reward scaling (per-env running returns, one shared
        scale), then the observations normalized with the ``frozen`` statistics the policy
        acted with, and last the statistics updated with all the rollout's observations.
        Nothing depends on how the environments were grouped.
        """
        T, E, obs_dim = segment.obs.shape
        scaler = self.reward_scaler
        ep_return, ep_length = self.ep_return, self.ep_length
        rewards = np.empty((T, E))
        ep_returns: list[float] = []
        ep_lengths: list[int] = []
        for t in range(T):
            reward = segment.rewards[t]
            done = segment.terminated[t] | segment.truncated[t]
            ep_return += reward
            ep_length += 1
            rewards[t] = reward if scaler is None else scaler(reward, done)
            for e in np.flatnonzero(done):
                ep_returns.append(float(ep_return[e]))
                ep_lengths.append(int(ep_length[e]))
                ep_return[e] = 0.0
                ep_length[e] = 0
        obs = segment.obs if frozen is None else frozen.normalize(segment.obs)
        final_obs = segment.dense_final_obs(
            None if frozen is None else frozen.normalize(segment.final_obs))
        last_obs = segment.last_obs if frozen is None else frozen.normalize(segment.last_obs)
        if self.obs_rms is not None:
            self.obs_rms.update(segment.obs.reshape(T * E, obs_dim))
        self.raw_obs = np.array(segment.last_obs, dtype=np.float64)
        return RolloutBatch(obs, segment.actions, segment.log_probs, rewards,
                            segment.terminated, segment.truncated, final_obs,
                            np.array(last_obs), ep_returns, ep_lengths, segment.env_time,
                            segment.policy_time)


# ------------------------------------------------- rollouts with frozen statistics
@dataclass(frozen=True)
class FrozenObsNorm:
    """Observation statistics frozen for one rollout: ``clip((x - mean) / sqrt(var + eps))``.

    Workers and the learner normalize with the same elementwise kernel, so an observation
    normalizes to the same bits wherever it is normalized.
    """

    mean: NDArray
    var: NDArray
    epsilon: float
    clip: float

    def normalize(self, x: NDArray) -> NDArray:
        flat = np.ascontiguousarray(x, dtype=np.float64).reshape(-1, self.mean.shape[0])
        return rms_normalize(flat, self.mean, self.var, self.epsilon, self.clip).reshape(
            np.shape(x))


@dataclass
class Segment:
    """Raw transitions of ``E`` environments over ``T`` steps (time-major), for one rollout.

    What a group of environments (in this process or on a Ray worker) hands back to the
    learner: the raw observations the policy acted on, the actions and their
    log-probabilities, the raw rewards and the episode ends; the raw last observations of
    the episodes truncated during the rollout, sparse (``final_obs[i]`` ended at step
    ``final_steps[i]`` in environment ``final_envs[i]``, in (step, env) order: a handful of
    rows where a dense ``(T, E, obs_dim)`` array would be mostly zeros); ``last_obs`` the
    observations the rollout stops at.
    """

    obs: NDArray  # (T, E, obs_dim), raw
    actions: NDArray  # (T, E, act_dim)
    log_probs: NDArray  # (T, E)
    rewards: NDArray  # (T, E), raw
    terminated: NDArray  # (T, E) bool
    truncated: NDArray  # (T, E) bool
    final_steps: NDArray  # (n,) int64: the step of each truncation (not terminated)
    final_envs: NDArray  # (n,) int64: its environment (index within the segment)
    final_obs: NDArray  # (n, obs_dim), raw: the episode's last observation
    last_obs: NDArray  # (E, obs_dim), raw
    env_time: float
    policy_time: float

    @staticmethod
    def concatenate(segments: list[Segment]) -> Segment:
        """The segments of consecutive environment slices as one, in env order."""
        if len(segments) == 1:
            return segments[0]

        def cat(name: str, axis: int = 1) -> NDArray:
            return np.concatenate([getattr(s, name) for s in segments], axis=axis)

        offsets = np.cumsum([0, *(s.obs.shape[1] for s in segments[:-1])])
        steps = cat("final_steps", 0)
        envs = np.concatenate([s.final_envs + off for s, off in zip(segments, offsets,
                                                                    strict=True)])
        order = np.lexsort((envs, steps))  # (step, env) order, as one segment has them
        return Segment(cat("obs"), cat("actions"), cat("log_probs"), cat("rewards"),
                       cat("terminated"), cat("truncated"), steps[order], envs[order],
                       cat("final_obs", 0)[order], cat("last_obs", axis=0),
                       max(s.env_time for s in segments), max(s.policy_time for s in segments))

    def dense_final_obs(self, rows: NDArray | None = None) -> NDArray:
        """``(T, E, obs_dim)`` zeros with ``rows`` (default ``final_obs``) at the truncations."""
        T, E, obs_dim = self.obs.shape
        out = np.zeros((T, E, obs_dim))
        out[self.final_steps, self.final_envs] = self.final_obs if rows is None else rows
        return out


#: Rows per call of the policy's fused per-step kernels (``Policy.outputs`` and
#: ``DiagGaussianPolicy.act_from_noise`` take them for up to 8 rows).  They compute each
#: row on its own, in a fixed order; BLAS over a larger batch need not give a row the
#: same bits as over a smaller one.
ROWWISE_CHUNK = 8


def act_rowwise(policy, theta: NDArray, obs: NDArray, noise: NDArray,
                actions_out: NDArray) -> tuple[NDArray, NDArray]:
    """``policy.act_from_noise`` in chunks of at most :data:`ROWWISE_CHUNK` rows.

    Each row's action and log-probability are then the same bits whatever the batch it
    comes in: the property that makes a rollout independent of how the environments are
    split between workers.
    """
    n = obs.shape[0]
    if n <= ROWWISE_CHUNK:
        return policy.act_from_noise(theta, obs, noise, actions_out)
    env_parts, logp_parts = [], []
    for a in range(0, n, ROWWISE_CHUNK):
        b = min(a + ROWWISE_CHUNK, n)
        env_actions, logp = policy.act_from_noise(theta, obs[a:b], noise[a:b],
                                                  actions_out[a:b])
        env_parts.append(env_actions)
        logp_parts.append(logp)
    return np.concatenate(env_parts), np.concatenate(logp_parts)


def _rollout_buffers(policy, n_steps: int, E: int, obs_dim: int) -> tuple[NDArray, ...]:
    """One rollout's time-major buffers: observations, actions, log-probs, rewards and the
    two episode-end flags.

    ``actions[t]`` is a contiguous ``(E, act_dim)`` block: the policy writes it in place.
    """
    act_dim = getattr(policy, "act_dim", None) or len(policy.nvec)
    act_dtype = np.float64 if hasattr(policy, "act_dim") else np.int64
    return (np.empty((n_steps, E, obs_dim)), np.empty((n_steps, E, act_dim), dtype=act_dtype),
            np.empty((n_steps, E)), np.empty((n_steps, E)),
            np.zeros((n_steps, E), dtype=bool), np.zeros((n_steps, E), dtype=bool))


def _fused_obs_dtype(dtype: Any) -> bool:
    """Whether :func:`~rl_adapters._kernels.record_and_act` takes observations of ``dtype``
    (Numba has no float16 or long double conversion: those take the general path)."""
    dt = np.dtype(dtype)
    return dt.kind in "iu" or dt in (np.dtype(np.float32), np.dtype(np.float64))


_ENV_INDEX = re.compile(r"env index (\d+)")


def _raise_env_output(found: tuple[str, str, int], env_name: str, at: str,
                      first_env: int) -> None:
    field, problem, index = found
    where = at + (f", env index {first_env + index}" if index >= 0 else "")
    raise EnvOutputError(problem, env=env_name, field=field, at=where)


def collect_segment(step, noise: NDArray | None, policy, theta: NDArray,
                    frozen: FrozenObsNorm | None, raw_obs: NDArray, n_steps: int, *,
                    env_name: str = "", first_env: int = 0, sde=None,
                    rngs: list[np.random.Generator] | None = None) -> Segment:
    """``n_steps`` steps with the policy at ``theta`` and the ``frozen`` statistics.

    Every step's batch is checked before the policy acts on it: an unusable output raises
    :class:`~rl_adapters.validation.EnvOutputError` naming ``env_name``, the rollout step and
    the environment's index in the whole batch (``first_env`` + its index in this slice).

    ``step(env_actions)`` steps the environments and returns ``(obs, rewards, terminated,
    truncated, final_obs)`` (``final_obs`` an object array, or None when no episode
    ended); ``noise`` is the rollout's sampling noise, ``(n_steps, E, ...)``, drawn from
    the environments' own streams.  With gSDE, ``noise`` is None and ``sde`` (a
    :class:`~rl_adapters.sde.StateDependentNoise` for these ``E`` environments, after its
    ``begin_rollout``) draws each environment's exploration matrices from ``rngs[e]``, at
    the first step and every ``sde_sample_freq`` steps.  The policy acts row by row
    (:func:`act_rowwise`), so a slice of the environments gives the same rows as the whole
    batch.
    """
    raw = np.array(raw_obs, dtype=np.float64)
    E, obs_dim = raw.shape
    obs_buf, act_buf, logp_buf, rew_buf, term_buf, trunc_buf = _rollout_buffers(
        policy, n_steps, E, obs_dim)
    final_steps: list[int] = []
    final_envs: list[int] = []
    final_rows: list[NDArray] = []
    env_time = policy_time = 0.0
    clock = time.perf_counter
    for t in range(n_steps):
        t0 = clock()
        obs_buf[t] = raw
        obs = raw if frozen is None else frozen.normalize(raw)
        if sde is None:
            env_actions, logp_buf[t] = act_rowwise(policy, theta, obs, noise[t], act_buf[t])
        else:
            env_actions, logp_buf[t] = sde.act(theta, obs, rngs, act_buf[t],
                                               chunk=ROWWISE_CHUNK)
        t1 = clock()
        try:
            next_raw, reward, terminated, truncated, final_obs = step(env_actions)
        except EnvOutputError as err:
            rest = "" if err.at in ("", "step") else ", " + _ENV_INDEX.sub(
                lambda m: f"env index {first_env + int(m.group(1))}", err.at)
            raise err.located(f"rollout step {t}{rest}") from None
        t2 = clock()
        env_time += t2 - t1
        try:
            next_raw = np.ascontiguousarray(next_raw, dtype=np.float64)
            reward = np.asarray(reward, dtype=np.float64)
        except (TypeError, ValueError):
            next_raw, reward = np.full((0, obs_dim), np.nan), np.full(E, np.nan)
        found = check_batch(next_raw, reward, terminated, truncated, E, obs_dim)
        if found is not None:
            _raise_env_output(found, env_name, f"rollout step {t}", first_env)
        rew_buf[t] = reward
        term_buf[t] = terminated
        trunc_buf[t] = truncated
        for e in np.flatnonzero(trunc_buf[t] & ~term_buf[t]):
            try:
                row = np.array(final_obs[e], dtype=np.float64).reshape(1, -1)
            except (ValueError, TypeError):
                row = np.full((1, 0), np.nan)
            found = check_batch(row, None, None, None, 1, obs_dim)
            if found is not None:
                field, problem, _ = found
                _raise_env_output((f"final {field}", problem, e), env_name,
                                  f"rollout step {t}", first_env)
            final_steps.append(t)
            final_envs.append(int(e))
            final_rows.append(row[0])
        raw = np.array(next_raw, dtype=np.float64)
        policy_time += clock() - t2 + (t1 - t0)
    return Segment(obs_buf, act_buf, logp_buf, rew_buf, term_buf, trunc_buf,
                   np.array(final_steps, dtype=np.int64), np.array(final_envs, dtype=np.int64),
                   np.array(final_rows, dtype=np.float64).reshape(len(final_rows), obs_dim),
                   raw, env_time, policy_time)


#: Vector envs whose ``step`` returns (n_envs, ...) observations, (n_envs,) rewards and bool
#: flags by construction (their sub-envs' outputs are checked by :class:`CheckedEnv`).
_TRUSTED_VECTOR_ENVS = (LeanSyncVectorEnv, gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv)


def _len_or_zero(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        return 0


def _venv_name(venv: Any) -> str:
    """The id of a vector env's environments, or its class name."""
    spec = getattr(venv, "spec", None)
    if getattr(spec, "id", None):
        return str(spec.id)
    try:
        return str(venv.get_attr("spec")[0].id)
    except Exception:
        return type(venv).__name__


def advantages_and_returns(batch: RolloutBatch, value_fn, gamma: float, lam: float):
    """GAE advantages and lambda-returns for ``batch`` with the critic ``value_fn``.

    The critic is evaluated in one call on all stored observations, the observations
    after the last step and the final observations of truncated episodes.
    """
    T, E, obs_dim = batch.obs.shape
    trunc = batch.truncated & ~batch.terminated
    trunc_idx = np.flatnonzero(trunc.ravel())
    stacked = np.concatenate(
        [batch.obs.reshape(T * E, obs_dim), batch.last_obs,
         batch.final_obs.reshape(T * E, obs_dim)[trunc_idx]]
    )
    v_all = value_fn.predict(stacked)
    values = v_all[: T * E].reshape(T, E)
    last_values = v_all[T * E : T * E + E]
    next_values = np.empty((T, E))
    next_values[:-1] = values[1:]
    next_values[-1] = last_values
    ends = batch.terminated | batch.truncated
    # After an episode end the stored next state is the reset of a new episode: replace
    # its value by 0 (terminated) or V(s_final) (truncated).
    next_values[batch.terminated] = 0.0
    flat_next = next_values.reshape(-1)
    flat_next[trunc_idx] = v_all[T * E + E :]
    adv = compute_gae(batch.rewards, values, next_values, ends, gamma, lam)
    return adv, adv + values, values
