"""The agent's random generators and their state as plain arrays (no pickle).

NumPy's ``Generator.bit_generator.state`` is a nested dict of strings, arrays and Python
ints, some of them 128 bits wide (PCG64's ``state`` and ``inc``).  :func:`generator_state_dict`
writes every int as little-endian unsigned 64-bit words (a ``uint64`` array), so the whole
state fits an ``.npz`` member by member; :func:`load_generator_state_dict` reads it back
against the structure of the generator it restores (which tells which arrays were ints).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["generator_state_dict", "load_generator_state_dict"]

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
