"""Checks of Gymnasium environments: ids, spaces and what ``reset`` and ``step`` return.

Three layers, from cheapest to most thorough, so that the per-step cost stays small:

- :func:`check_env_id` and :func:`check_spaces`, once, when the agent is built: an
  unknown id names close registered ids; an unsupported space says which spaces are;
- :class:`CheckedEnv`, a wrapper on every environment the agent builds (innermost, under
  Gymnasium's ``TimeLimit``, which would otherwise fail first on an old-API 4-tuple): the
  structure of each ``reset``/``step`` output (tuple lengths, the observation's shape and
  dtype, a real scalar reward, bool flags, a dict info) by type tests only;
- :func:`check_batch`, once per step on the whole batch in the collector: observations
  and rewards are finite and their squares sum to a finite float64 (the running
  statistics square them), by one dot product each: ``x @ x`` is finite exactly when no
  entry is NaN or infinite and the sum of squares does not overflow.  The diagnosis
  (which entry) only runs when that fails; NumPy then also warns of the overflow.

Every failure is an :class:`~rl_adapters.validation.EnvOutputError` naming the
environment, the step and the field.
"""

from __future__ import annotations

import difflib
import importlib
import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

from rl_adapters.validation import EnvOutputError

__all__ = ["CheckedEnv", "UnknownEnvError", "UnsupportedSpaceError", "check_batch",
           "check_env_id", "check_spaces", "env_name", "has_own_wrappers", "insert_innermost"]

_SUPPORTED = ("observations: a 1-D Box; actions: Discrete, 1-D MultiDiscrete or a 1-D Box")
_BOOL_TYPES = (bool, np.bool_)
_REAL_TYPES = (float, int, np.float64, np.float32, np.float16, np.int64, np.int32, np.int16,
               np.int8, np.uint64, np.uint32, np.uint16, np.uint8)
_REAL_SET = frozenset(_REAL_TYPES)
_BOOL_SET = frozenset(_BOOL_TYPES)


# ------------------------------------------------------------------ env ids
class UnknownEnvError(ValueError, gym.error.Error):
    """An environment id Gymnasium cannot make: a ValueError, and a ``gymnasium.error.Error``
    as Gymnasium's own ``NameNotFound`` and ``VersionNotFound`` are."""


class UnsupportedSpaceError(TypeError):
    """An environment whose observation or action space the agent cannot act in (a
    TypeError: the env is of a type the agent does not take)."""


def check_env_id(env_id: Any) -> str:
    """``env_id`` if Gymnasium can make it; else an UnknownEnvError naming it and close ids.

    ``"module:EnvName-v0"`` ids import ``module`` first, as :func:`gymnasium.make` does.
    """
    if not isinstance(env_id, str):
        raise TypeError(f"env={env_id!r}: expected a Gymnasium id (str), a gymnasium.Env, a "
                        "vector env or a list of vector envs")
    name = env_id
    if ":" in env_id:
        module, name = env_id.split(":", 1)
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise UnknownEnvError(f"env={env_id!r}: cannot import the module {module!r} that "
                                  f"should register it ({err})") from None
    try:
        gym.spec(name)
    except gym.error.Error as err:
        close = difflib.get_close_matches(name, list(gym.registry), n=3, cutoff=0.6)
        hint = f"; close registered ids: {', '.join(map(repr, close))}" if close else ""
        raise UnknownEnvError(f"env={env_id!r} is not a registered Gymnasium environment id"
                         f"{hint} (gymnasium: {err})") from None
    return env_id


def env_name(env: Any) -> str:
    """The id of ``env`` (a gymnasium.Env) if registered, else its class name."""
    spec = getattr(env, "spec", None)
    if getattr(spec, "id", None):
        return str(spec.id)
    return type(getattr(env, "unwrapped", env)).__name__


# ------------------------------------------------------------------- spaces
def check_spaces(observation_space: Any, action_space: Any, name: str) -> None:
    """Raise UnsupportedSpaceError (a TypeError) unless the agent supports these spaces
    (see :data:`_SUPPORTED`)."""
    obs = f"env {name!r}: observation space {observation_space}"
    if not isinstance(observation_space, spaces.Box):
        hint = ""
        if isinstance(observation_space, spaces.Dict | spaces.Tuple):
            hint = ("; for a Dict or Tuple of Boxes, wrap the env with "
                    "gymnasium.wrappers.FlattenObservation (one flat Box)")
        raise UnsupportedSpaceError(f"{obs} is not supported (supported: {_SUPPORTED}){hint}")
    if len(observation_space.shape) != 1 or observation_space.shape[0] < 1:
        raise UnsupportedSpaceError(
            f"{obs} is not supported: the policy takes a flat Box (supported: {_SUPPORTED}); "
            "wrap the env with gymnasium.wrappers.FlattenObservation")
    if observation_space.dtype is None or observation_space.dtype.kind not in "biuf":
        raise UnsupportedSpaceError(f"{obs} has dtype {observation_space.dtype}; observations "
                                    "must be real numbers")
    ok = (isinstance(action_space, spaces.Discrete)
          or (isinstance(action_space, spaces.MultiDiscrete) and action_space.nvec.ndim == 1)
          or (isinstance(action_space, spaces.Box) and len(action_space.shape) == 1
              and action_space.shape[0] >= 1))
    if not ok:
        raise UnsupportedSpaceError(f"env {name!r}: action space {action_space} is not "
                                    f"supported (supported: {_SUPPORTED})")


def same_spaces(env: Any, observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """ValueError unless ``env`` has the agent's observation shape and action space."""
    name = env_name(env)
    obs, act = getattr(env, "observation_space", None), getattr(env, "action_space", None)
    if (not isinstance(obs, spaces.Box) or obs.shape != observation_space.shape
            or act != action_space):
        raise ValueError(f"env: {name!r} has observation space {_space(obs)} and action space "
                         f"{_space(act)}; this agent was built for {_space(observation_space)} "
                         f"and {_space(action_space)}")


def _space(space: Any) -> str:
    """A one-line description of a space (a Box without its bound arrays)."""
    if isinstance(space, spaces.Box):
        low, high = np.unique(space.low), np.unique(space.high)
        bounds = (f"{low[0]:g}, {high[0]:g}, " if low.size == 1 and high.size == 1 else "")
        return f"Box({bounds}shape={space.shape}, {space.dtype})"
    return str(space)


# ------------------------------------------------------------- per-env outputs
class CheckedEnv(gym.Wrapper):
    """Checks the structure of every ``reset`` and ``step`` output of the wrapped env.

    Type and shape tests only (the values are checked batch-wise by :func:`check_batch`);
    the output passes through unchanged (an observation given as a list is returned as
    an array).
    """

    def __init__(self, env: gym.Env, name: str | None = None) -> None:
        super().__init__(env)
        space = env.observation_space
        self._shape = space.shape
        self._dtype = space.dtype
        self._name = name or env_name(env)

    def _fail(self, field: str, problem: str, at: str) -> EnvOutputError:
        return EnvOutputError(problem, env=self._name, field=field, at=at)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        out = self.env.reset(seed=seed, options=options)
        if type(out) is not tuple or len(out) != 2:
            raise self._fail("output", f"is {_describe(out)}: Gymnasium's reset() returns a "
                             "tuple (observation, info); an env of the old Gym API returns the "
                             "observation alone: port it to the Gymnasium API", "reset")
        obs, info = out
        obs = self._observation(obs, "reset")
        if not isinstance(info, dict):
            raise self._fail("info", f"is {_describe(info)}, expected a dict", "reset")
        return obs, info

    def step(self, action):
        out = self.env.step(action)
        # One test for the usual case (a few type checks, ~0.2 us); the diagnosis after it.
        if type(out) is tuple and len(out) == 5:
            obs, reward, terminated, truncated, info = out
            if (type(obs) is np.ndarray and obs.dtype is self._dtype and obs.shape == self._shape
                    and type(reward) in _REAL_SET and type(terminated) in _BOOL_SET
                    and type(truncated) in _BOOL_SET and type(info) is dict):
                return out
        return self._diagnose_step(out)

    def _diagnose_step(self, out: Any) -> tuple:
        """``out`` (with the observation as an array) if usable, else the EnvOutputError."""
        if type(out) is not tuple or len(out) != 5:
            old = (" (the old Gym API's (obs, reward, done, info): port the env to the "
                   "Gymnasium API, or wrap it with shimmy's GymV21CompatibilityV0)"
                   if isinstance(out, tuple) and len(out) == 4 else "")
            raise self._fail("output", f"is {_describe(out)}: Gymnasium's step() returns "
                             f"(observation, reward, terminated, truncated, info){old}", "step")
        obs, reward, terminated, truncated, info = out
        obs = self._observation(obs, "step")
        if type(reward) not in _REAL_TYPES:
            self._reward(reward)
        if type(terminated) not in _BOOL_TYPES:
            raise self._fail("terminated", f"is {_describe(terminated)}, expected a bool", "step")
        if type(truncated) not in _BOOL_TYPES:
            raise self._fail("truncated", f"is {_describe(truncated)}, expected a bool", "step")
        if not isinstance(info, dict):
            raise self._fail("info", f"is {_describe(info)}, expected a dict", "step")
        return obs, reward, terminated, truncated, info

    def _observation(self, obs: Any, at: str) -> NDArray:
        try:
            arr = np.asarray(obs)
        except (ValueError, TypeError):
            arr = np.asarray(None)
        if arr.dtype.kind not in "biuf":
            raise self._fail("observation", f"is {_describe(obs)}, expected an array of real "
                             f"numbers of shape {self._shape}", at)
        if arr.shape != self._shape:
            raise self._fail("observation", f"has shape {arr.shape}, the observation space "
                             f"says {self._shape}", at)
        return arr

    def _reward(self, reward: Any) -> None:
        kind = getattr(np.asarray(reward) if isinstance(reward, np.ndarray | np.generic)
                       else None, "dtype", None)
        if isinstance(reward, np.ndarray | np.generic):
            if np.ndim(reward) == 0 and kind is not None and kind.kind in "biuf":
                return
        elif isinstance(reward, int | float):  # bool, or a subclass of int or float
            return
        raise self._fail("reward", f"is {_describe(reward)}, expected a real number", "step")


#: The wrappers ``gymnasium.make`` adds itself; they pass outputs through unchanged.
_MAKE_WRAPPERS = (gym.wrappers.TimeLimit, gym.wrappers.OrderEnforcing,
                  gym.wrappers.PassiveEnvChecker)


def has_own_wrappers(env: gym.Env) -> bool:
    """Whether ``env`` (from ``gymnasium.make``) holds wrappers besides the ones ``make``
    adds: wrappers its entry point put there, whose outputs no check below them sees."""
    node = env
    while isinstance(node, gym.Wrapper):
        if not isinstance(node, _MAKE_WRAPPERS):
            return True
        node = node.env
    return False


def insert_innermost(env: gym.Env, wrap) -> gym.Env:
    """Put ``wrap(base)`` between ``env``'s innermost wrapper and its base environment."""
    if not isinstance(env, gym.Wrapper):
        return wrap(env)
    node = env
    while isinstance(node.env, gym.Wrapper):
        node = node.env
    node.env = wrap(node.env)
    return env


# ------------------------------------------------------------- batch values
def check_batch(obs: NDArray, rewards: NDArray | None, terminated: Any, truncated: Any,
                n_envs: int, obs_dim: int) -> tuple[str, str, int] | None:
    """``None`` if one step's batch is usable, else ``(field, problem, env index)``.

    ``obs`` is float64 ``(n_envs, obs_dim)`` (contiguous), ``rewards`` float64
    ``(n_envs,)`` (or None at a reset); the flags are the vector env's arrays (or None:
    not checked).
    """
    if obs.shape != (n_envs, obs_dim):
        return "observation", f"batch has shape {obs.shape}, expected {(n_envs, obs_dim)}", -1
    flat = obs.reshape(-1)
    if not math.isfinite(flat @ flat):
        problem, row = _bad_entry(obs)
        return "observation", problem, row
    if rewards is None:
        return None
    if rewards.shape != (n_envs,):
        return "reward", f"batch has shape {rewards.shape}, expected {(n_envs,)}", -1
    if not math.isfinite(rewards @ rewards):
        problem, row = _bad_entry(rewards[:, None])
        return "reward", problem, row
    for field, flags in (("terminated", terminated), ("truncated", truncated)):
        if flags is None:
            continue
        arr = np.asarray(flags)
        if arr.dtype != np.bool_ or arr.shape != (n_envs,):
            return field, f"batch is {_describe(flags)}, expected {n_envs} bools", -1
    return None


def _bad_entry(x: NDArray) -> tuple[str, int]:
    """The first non-finite entry of the rows of ``x``, else the largest: (problem, row)."""
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        what = "not finite"
    else:
        row, col = (int(i) for i in np.unravel_index(np.argmax(np.abs(x)), x.shape))
        what = "its square overflows float64 with the batch's other squares"
    index = f"[{col}] " if x.shape[1] > 1 else ""
    return f"{index}is {float(x[row, col])!r} ({what})", row


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)} values"
    return f"{type(value).__name__} {value!r}"[:80]
