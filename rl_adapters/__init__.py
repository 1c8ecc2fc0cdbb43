"""rl_adapters: a TRPO agent with NumPy policies on Gymnasium environments.

>>> from rl_adapters import TRPO                                  # doctest: +SKIP
>>> agent = TRPO("CartPole-v1", seed=0).learn(100_000)           # doctest: +SKIP
>>> agent.evaluate(10)                                           # doctest: +SKIP

``TRPO`` and ``TRPOConfig`` are imported lazily, so that acting with a saved policy
(:func:`rl_adapters.checkpoint.load_policy`) needs NumPy only.

Errors for bad input (:mod:`rl_adapters.validation`): :class:`EnvOutputError` (an
environment returned an unusable observation, reward or flag), :class:`CheckpointError`
(a damaged file, or a checkpoint that does not fit the agent or the environment) and
:class:`StateError` (a state dict that does not fit), all ``ValueError`` subclasses.
"""

from __future__ import annotations

import importlib
from typing import Any

from rl_adapters.validation import CheckpointError, ConfigError, EnvOutputError, StateError

__all__ = ["TRPO", "CheckpointError", "ConfigError", "EnvOutputError", "StateError",
           "TRPOConfig", "load_policy"]


#: The lazily imported names: where each lives.
_LAZY = {"TRPO": ("rl_adapters.agent", "TRPO"),
         "TRPOConfig": ("rl_adapters.config", "TRPOConfig"),
         "load_policy": ("rl_adapters.checkpoint", "load_policy")}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'rl_adapters' has no attribute {name!r}")
    module, attr = _LAZY[name]
    try:
        return getattr(importlib.import_module(module), attr)
    except AttributeError as exc:
        # `from rl_adapters import TRPO` reports an AttributeError from here as "cannot
        # import name 'TRPO'" and drops it, so one raised while importing (for example by
        # a local file that shadows a package Numba imports) would leave no trace.
        raise ImportError(f"importing {module} for rl_adapters.{name} failed: "
                          f"{type(exc).__name__}: {exc}") from exc
