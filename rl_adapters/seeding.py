"""The agent's random streams, all derived from its seed, and their state as arrays.

Streams, with ``root = numpy.random.SeedSequence(seed)``:

- training, ``agent.rng = default_rng(root)`` (that is ``default_rng(seed)``): network
  initialization (policy, then critic), the Fisher subsample, the critic's minibatch order;
- environment ``i``, ``default_rng(root.spawn(n_envs)[i])`` (held by the
  :class:`~rl_adapters.rollout.EnvGroup` that runs the environment): its reset seeds (first
  reset, restarts after a load without snapshot) and the action noise of the actions sent
  to it; its autoresets continue the environment's own generator, seeded at the first reset;
- predict, ``default_rng(SeedSequence(seed, spawn_key=(PREDICT_KEY,)))``: stochastic
  :meth:`~rl_adapters.TRPO.predict`.

``default_rng(root)`` is ``default_rng(seed)``.  ``root.spawn(n)[i]`` is
``SeedSequence(seed, spawn_key=(i,))``, so environment ``i``'s stream does not depend on
``n_envs`` nor on how the environments are grouped into vector envs (or workers): a
batch of ``n_envs`` environments gives the same transitions however it is split.  The
predict stream has the spawn key ``(PREDICT_KEY,)``, out of reach of any environment
index.  Child streams are statistically independent of each other and of the root.

NumPy's ``Generator.bit_generator.state`` is a nested dict of strings, arrays and Python
ints, some of them 128 bits wide (PCG64's ``state`` and ``inc``).  :func:`generator_state_dict`
writes every int as little-endian unsigned 64-bit words (a ``uint64`` array), so the whole
state fits an ``.npz`` member by member; :func:`load_generator_state_dict` reads it back
against the structure of the generator it restores (which tells which arrays were ints).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["PREDICT_KEY", "env_generators", "generator_state_dict", "load_generator_state_dict",
           "predict_generator"]

#: Spawn key word of the predict stream (the largest 32-bit word; environments use 0, 1, ...).
PREDICT_KEY = 2**32 - 1


def env_generators(seed: int, n_envs: int) -> list[np.random.Generator]:
    """One generator per environment: ``SeedSequence(seed).spawn(n_envs)``.

    Examples
    --------
    >>> a, b = env_generators(0, 2)[1], env_generators(0, 5)[1]   # same env, any n_envs
    >>> bool(a.random() == b.random())
    True
    """
    if n_envs >= PREDICT_KEY:
        raise ValueError(f"n_envs={n_envs}: at most {PREDICT_KEY - 1} environments")
    return [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(n_envs)]


def predict_generator(seed: int) -> np.random.Generator:
    """The stream of stochastic ``predict``: ``SeedSequence(seed, spawn_key=(PREDICT_KEY,))``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(PREDICT_KEY,)))

_WORD = 64
_MASK = (1 << _WORD) - 1


def _int_to_words(value: int) -> np.ndarray:
    if value < 0:
        raise ValueError(f"generator state: negative int {value}")
    n_words = max(1, -(-value.bit_length() // _WORD))
    return np.array([(value >> (_WORD * i)) & _MASK for i in range(n_words)], dtype=np.uint64)


def _words_to_int(words: Any) -> int:
    return sum(int(w) << (_WORD * i) for i, w in enumerate(np.atleast_1d(words)))


def _encode(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, bool):
        raise TypeError("generator state: unexpected bool")
    if isinstance(value, int | np.integer):
        return _int_to_words(int(value))
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray):
        return value.copy()
    raise TypeError(f"generator state: cannot store {type(value).__name__}")


def _decode(saved: Any, template: Any, where: str) -> Any:
    if isinstance(template, dict):
        if not isinstance(saved, dict) or set(saved) != set(template):
            raise ValueError(f"generator state {where}: keys {sorted(saved)} do not match "
                             f"{sorted(template)}")
        return {k: _decode(saved[k], v, f"{where}/{k}") for k, v in template.items()}
    if isinstance(template, int | np.integer):
        return _words_to_int(saved)
    if isinstance(template, str):
        if str(saved) != template:
            raise ValueError(f"generator state {where}: {saved!s}, expected {template}")
        return template
    return np.asarray(saved, dtype=np.asarray(template).dtype)


def generator_state_dict(rng: np.random.Generator) -> dict[str, Any]:
    """The state of ``rng`` as a nested dict of strings and arrays.

    Examples
    --------
    >>> rng = np.random.default_rng(0); state = generator_state_dict(rng)
    >>> first = rng.random(3)
    >>> load_generator_state_dict(rng, state); bool(np.all(rng.random(3) == first))
    True
    """
    return _encode(rng.bit_generator.state)


def load_generator_state_dict(rng: np.random.Generator, state: dict[str, Any]) -> None:
    """Restore ``rng`` (same bit generator kind) to ``state`` from :func:`generator_state_dict`."""
    rng.bit_generator.state = _decode(state, rng.bit_generator.state, "")
