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

from typing import Any

from rl_adapters.validation import CheckpointError, ConfigError, EnvOutputError, StateError

__all__ = ["TRPO", "CheckpointError", "ConfigError", "EnvOutputError", "StateError",
           "TRPOConfig", "load_policy"]


def __getattr__(name: str) -> Any:
    if name == "TRPO":
        from rl_adapters.agent import TRPO

        return TRPO
    if name == "TRPOConfig":
        from rl_adapters.config import TRPOConfig

        return TRPOConfig
    if name == "load_policy":
        from rl_adapters.checkpoint import load_policy

        return load_policy
    raise AttributeError(f"module 'rl_adapters' has no attribute {name!r}")
