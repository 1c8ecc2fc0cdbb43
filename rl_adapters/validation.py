"""Checks at the public boundary of ``rl_adapters``: observations, saved state, checkpoints.

The kernels behind :meth:`rl_adapters.TRPO.predict`, the collector and the policies take
their inputs unchecked (a Numba loop indexes without bound checks); everything a user or a
file can hand in is checked here first, with an error that names the argument or the
entry and says what was expected.  This module needs NumPy only, like
:func:`rl_adapters.checkpoint.load_policy`; the checks of Gymnasium environments are in
:mod:`rl_adapters.env_checks`.

Errors
------
:class:`EnvOutputError`
    An environment returned something the agent cannot use (a NaN observation, an
    infinite reward, the old Gym 4-tuple, a wrong shape).
:class:`CheckpointError`
    A checkpoint file is damaged, not a checkpoint, or does not fit the agent or the
    environment it is loaded onto.
:class:`StateError`
    A state dict (from a file or built by hand) does not fit the component it is loaded
    into; the message starts with the entry's ``/``-joined path (``value/adam/m``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CheckpointError",
    "EnvOutputError",
    "StateError",
    "as_observations",
    "bool_scalar",
    "check_generator_state",
    "check_keys",
    "check_like",
    "float_array",
    "int_array",
    "int_scalar",
    "nested",
    "real_scalar",
    "str_scalar",
]

class EnvOutputError(ValueError):
    """An environment returned an unusable ``reset`` or ``step`` output.

    The message names the environment (its id, or its class), the step (the rollout
    step and the environment's index in the batch, or ``reset``) and the field
    (``observation``, ``reward``, ``terminated``, ``truncated``, ``info``).  It is raised
    before the agent's parameters, normalizers or random streams change.

    Attributes ``env``, ``field``, ``at`` (``"reset"``, ``"step"`` or where in the rollout)
    and ``problem`` hold the parts of the message.
    """

    def __init__(self, problem: Any, *, env: str = "", field: str = "", at: str = "") -> None:
        if isinstance(problem, EnvOutputError):  # re-raised from a worker process
            env, field, at, problem = problem.env, problem.field, problem.at, problem.problem
        self.problem, self.env, self.field, self.at = str(problem), env, field, at
        super().__init__(self._message())

    def _message(self) -> str:
        if not (self.env or self.field or self.at):
            return self.problem
        head = f"environment {self.env!r}" if self.env else "environment"
        where = f" at {self.at}" if self.at else ""
        sep = "" if self.problem.startswith("[") else " "
        return f"{head}{where}: {self.field}{sep}{self.problem}"

    def located(self, at: str) -> EnvOutputError:
        """The same error with a more precise location ``at`` (the step and env index)."""
        return EnvOutputError(self.problem, env=self.env, field=self.field, at=at)


class ConfigError(ValueError):
    """A valid configuration that does not fit the setup it is used in (the action space,
    the collection mode); the message starts with ``config <field>=<value>:``.

    ``problem`` says what does not fit and ``advice`` what to change; the message is both.
    Kept apart so that a caller for whom the advice is wrong (``TRPO.load``: the user did not
    write the saved configuration) can give its own.
    """

    def __init__(self, problem: str, advice: str = "") -> None:
        super().__init__(f"{problem}; {advice}" if advice else problem)
        self.problem = problem
        self.advice = advice


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded: the message names the path and what does not match."""


class StateError(ValueError):
    """A saved state does not fit: ``key`` is the ``/``-joined path of the entry."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem

    def under(self, parent: str) -> StateError:
        return StateError(f"{parent}/{self.key}" if self.key else parent, self.problem)


@contextlib.contextmanager
def nested(name: str) -> Iterator[None]:
    """Prefix the path of a :class:`StateError` raised inside with ``name``."""
    try:
        yield
    except StateError as err:
        raise err.under(name) from None


# ------------------------------------------------------------- observations
def as_observations(obs: Any, obs_dim: int, *, name: str = "obs") -> tuple[NDArray, bool]:
    """``obs`` as a float64 ``(N, obs_dim)`` array, and whether it was one observation.

    Accepts one observation of shape ``(obs_dim,)`` or a batch ``(N, obs_dim)`` of real
    numbers (bool, int or float), all finite.

    Raises
    ------
    ValueError
        Naming ``name``: another shape, a non-numeric dtype, or a NaN or infinite entry.
    """
    if isinstance(obs, np.ndarray):
        arr = obs
    else:
        try:
            arr = np.asarray(obs)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{name}: not an array of numbers ({err})") from None
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name}: dtype {arr.dtype} is not a real number type; expected "
                         f"an array of shape ({obs_dim},) or (N, {obs_dim}) of floats")
    if arr.ndim not in (1, 2) or arr.shape[-1] != obs_dim:
        raise ValueError(f"{name}: shape {arr.shape}, expected ({obs_dim},) for one "
                         f"observation or (N, {obs_dim}) for a batch")
    single = arr.ndim == 1
    x = np.asarray(arr[None, :] if single else arr, dtype=np.float64)
    if not np.isfinite(x).all():
        row, col = (int(i) for i in np.argwhere(~np.isfinite(x))[0])
        where = f"[{col}]" if single else f"[{row}, {col}]"
        raise ValueError(f"{name}{where} is {x[row, col]}: observations must be finite")
    return x, single


# ---------------------------------------------------------------- state dicts
def check_keys(state: Any, required: set[str] | tuple[str, ...],
               optional: set[str] | tuple[str, ...] = ()) -> Mapping[str, Any]:
    """``state`` must be a mapping with the ``required`` keys and no others but ``optional``."""
    if not isinstance(state, Mapping):
        raise StateError("", f"expected a group of entries, got {_kind(state)}")
    missing = sorted(set(required) - set(state))
    if missing:
        raise StateError("", f"missing entries {missing}")
    unexpected = sorted(set(state) - set(required) - set(optional))
    if unexpected:
        raise StateError("", f"unexpected entries {unexpected}")
    return state


def float_array(state: Mapping[str, Any], key: str, shape: tuple[int, ...] | None, *,
                finite: bool = True, nonnegative: bool = False) -> NDArray:
    """A float64 copy of ``state[key]``, which must be a float64 array of ``shape``."""
    value = state[key]
    if type(value) is float:  # a 0-d member comes back as a Python scalar
        value = np.asarray(value)
    if not isinstance(value, np.ndarray) or value.dtype != np.float64:
        raise StateError(key, f"expected a float64 array, got {_kind(value)}")
    if shape is not None and value.shape != shape:
        raise StateError(key, f"shape {value.shape}, expected {shape}")
    if finite and not np.isfinite(value).all():
        raise StateError(key, "has NaN or infinite entries")
    if nonnegative and (value < 0).any():
        raise StateError(key, "has negative entries")
    return np.array(value, dtype=np.float64)


def int_array(state: Mapping[str, Any], key: str, shape: tuple[int, ...] | None, *,
              low: int | None = None) -> NDArray:
    """An int64 copy of ``state[key]``, which must be an int64 array of ``shape``."""
    value = state[key]
    if type(value) is int:  # a 0-d member comes back as a Python scalar
        value = np.asarray(value, dtype=np.int64)
    if not isinstance(value, np.ndarray) or value.dtype != np.int64:
        raise StateError(key, f"expected an int64 array, got {_kind(value)}")
    if shape is not None and value.shape != shape:
        raise StateError(key, f"shape {value.shape}, expected {shape}")
    if low is not None and (value < low).any():
        raise StateError(key, f"has entries below {low}")
    return np.array(value, dtype=np.int64)


def real_scalar(state: Mapping[str, Any], key: str, *, low: float | None = None,
                high: float | None = None) -> float:
    """``state[key]`` as a float: a finite real number in ``[low, high]``."""
    value = state[key]
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "fiu":
        value = value[()]  # a 0-d array, as np.asarray or np.copy of a scalar gives
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer
                                                           | np.floating):
        raise StateError(key, f"expected a number, got {_kind(value)}")
    x = float(value)
    if not math.isfinite(x) or (low is not None and x < low) or (high is not None and x > high):
        bounds = f" in [{low}, {high}]" if low is not None or high is not None else ""
        raise StateError(key, f"{x!r} is not a finite number{bounds}")
    return x


def int_scalar(state: Mapping[str, Any], key: str, *, low: int | None = None) -> int:
    """``state[key]`` as an int (not a bool), at least ``low``."""
    value = state[key]
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise StateError(key, f"expected an int, got {_kind(value)}")
    if low is not None and value < low:
        raise StateError(key, f"{int(value)} is below {low}")
    return int(value)


def str_scalar(state: Mapping[str, Any], key: str) -> str:
    value = state[key]
    if not isinstance(value, str):
        raise StateError(key, f"expected a string, got {_kind(value)}")
    return value


def bool_scalar(state: Mapping[str, Any], key: str) -> bool:
    value = state[key]
    if not isinstance(value, bool | np.bool_):
        raise StateError(key, f"expected a bool, got {_kind(value)}")
    return bool(value)


def check_generator_state(saved: Any, rng: np.random.Generator, key: str = "") -> None:
    """``saved`` (from :func:`rl_adapters.seeding.generator_state_dict`) is a state that
    ``rng`` can take: the layout of its ``bit_generator.state`` (same keys and strings,
    ints as 1-D uint64 words), and values its bit generator accepts (tried on a scratch
    generator of the same kind)."""
    _check_generator_layout(saved, rng.bit_generator.state, key)
    from rl_adapters.seeding import load_generator_state_dict

    scratch = np.random.Generator(type(rng.bit_generator)())
    try:
        load_generator_state_dict(scratch, saved)
    except (ValueError, TypeError, OverflowError, KeyError) as err:
        raise StateError(key, f"not a valid generator state ({err})") from None


def _check_generator_layout(saved: Any, template: Any, key: str) -> None:
    if isinstance(template, dict):
        with nested(key) if key else contextlib.nullcontext():
            check_keys(saved, set(template))
            for k, v in template.items():
                _check_generator_layout(saved[k], v, k)
        return
    if isinstance(template, int | np.integer):
        if (not isinstance(saved, np.ndarray) or saved.dtype != np.uint64 or saved.ndim != 1
                or not 1 <= saved.size <= 4):
            raise StateError(key, f"expected 1 to 4 uint64 words, got {_kind(saved)}")
    elif isinstance(template, str):
        if saved != template:
            raise StateError(key, f"{saved!r}, expected {template!r} (another generator kind)")
    elif isinstance(template, np.ndarray):
        if (not isinstance(saved, np.ndarray) or saved.dtype != template.dtype
                or saved.shape != template.shape):
            raise StateError(key, f"expected a {template.dtype} array of shape "
                                  f"{template.shape}, got {_kind(saved)}")


def check_like(saved: Any, template: Any, key: str = "") -> None:
    """``saved`` has the layout of ``template`` (a state dict of the same component):
    the same keys, arrays of the same dtype and shape (uint64 words of a generator state
    may differ in number, 1 to 4), scalars of the same type, finite floats."""
    if isinstance(template, Mapping):
        with nested(key) if key else contextlib.nullcontext():
            check_keys(saved, set(template))
            for k, v in template.items():
                check_like(saved[k], v, k)
        return
    if isinstance(template, np.ndarray):
        words = template.dtype == np.uint64 and template.ndim == 1
        if (not isinstance(saved, np.ndarray) or saved.dtype != template.dtype
                or (saved.shape != template.shape and not (words and saved.ndim == 1
                                                           and 1 <= saved.size <= 4))):
            raise StateError(key, f"expected a {template.dtype} array of shape "
                                  f"{template.shape}, got {_kind(saved)}")
        if saved.dtype.kind == "f" and not np.isfinite(saved).all():
            raise StateError(key, "has NaN or infinite entries")
        return
    if isinstance(template, bool | str):
        ok = type(saved) is type(template)
    elif isinstance(template, int | np.integer):
        ok = isinstance(saved, int | np.integer) and not isinstance(saved, bool)
    elif isinstance(template, float | np.floating):
        ok = (isinstance(saved, int | float | np.integer | np.floating)
              and not isinstance(saved, bool) and math.isfinite(saved))
    else:
        ok = True
    if not ok:
        raise StateError(key, f"expected {type(template).__name__}, got {_kind(saved)}")


def _kind(value: Any) -> str:
    """A short description of a saved value for messages."""
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    if isinstance(value, Mapping):
        return f"a group of entries {sorted(value)[:6]}"
    return f"{type(value).__name__} {value!r}"[:80]
