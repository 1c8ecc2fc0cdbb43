"""One-file checkpoints: nested state dicts as ``.npz`` members (no pickle), written atomically.

This module knows nothing about the agent.  Every stateful component of ``rl_adapters``
(the agent, the collector and its environments, the critic and its Adam state, the
normalizers, the random generators) returns its state as a nested dict of arrays, scalars
and strings from ``state_dict()`` and takes it back with ``load_state_dict()``;
:meth:`rl_adapters.TRPO.save` and :meth:`~rl_adapters.TRPO.load` hand the agent's dict to
:func:`write_state` and :func:`read_state`.

File layout: one ``.npz`` member per leaf, named by its path in the nested dict joined with
``/`` (``value/adam/m``, ``collector/envs/0/state``), plus ``format_version``.  Strings are
stored as unicode arrays, scalars as 0-d arrays, so loading uses ``allow_pickle=False``;
:func:`read_state` gives 0-d members back as Python scalars.

The file is written to a temporary file in the target directory, flushed and
``fsync``-ed, then moved over the destination with :func:`os.replace`, an atomic rename
on POSIX and Windows: a crash or an error mid-write leaves the previous checkpoint intact.

:func:`load_policy` rebuilds only what acting needs, with NumPy alone (no Gymnasium, no
Numba, no SciPy): see :class:`NumpyPolicy`.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rl_adapters.mlp import MLP

__all__ = ["FORMAT_VERSION", "NumpyPolicy", "atomic_savez", "flatten_state", "load_policy",
           "read_state", "unflatten_state", "write_state"]

#: Version of the file layout; 2 is the nested state-dict layout (1 was a flat list of
#: hand-picked fields, not readable by this version).
FORMAT_VERSION = 2
SEPARATOR = "/"
_VERSION_KEY = "format_version"


# ------------------------------------------------------------- nested dicts
def flatten_state(state: Mapping[str, Any], prefix: str = "") -> dict[str, NDArray]:
    """Leaves of the nested dict ``state`` as arrays keyed by their ``/``-joined path.

    Empty sub-dicts vanish (a component without state is simply absent).

    Examples
    --------
    >>> flatten_state({"value": {"adam": {"t": 3}}, "env_id": "CartPole-v1"})
    {'value/adam/t': array(3), 'env_id': array('CartPole-v1', dtype='<U11')}
    """
    out: dict[str, NDArray] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not key or SEPARATOR in key:
            raise ValueError(f"state key {prefix}{key!r}: must be a non-empty str without "
                             f"{SEPARATOR!r}")
        path = prefix + key
        if isinstance(value, Mapping):
            out.update(flatten_state(value, path + SEPARATOR))
            continue
        arr = np.asarray(value)
        if arr.dtype == object:
            raise TypeError(f"state {path!r}: {type(value).__name__} is not an array, "
                            "scalar or str (no pickled objects in checkpoints)")
        out[path] = arr
    return out


def unflatten_state(arrays: Mapping[str, NDArray]) -> dict[str, Any]:
    """Inverse of :func:`flatten_state`; 0-d arrays come back as Python scalars."""
    state: dict[str, Any] = {}
    for path, arr in arrays.items():
        *parents, leaf = path.split(SEPARATOR)
        node = state
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = arr.item() if arr.ndim == 0 else arr
    return state


# ------------------------------------------------------------------ files
def atomic_savez(path: str | os.PathLike, arrays: dict[str, NDArray]) -> None:
    """``np.savez`` to ``path`` through a temporary file and an atomic rename."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            _write_arrays(fh, arrays)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates the file 0600; give it the usual permissions under the umask.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _write_arrays(fh, arrays: dict[str, NDArray]) -> None:
    np.savez(fh, **arrays)


def write_state(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Write the nested dict ``state`` to ``path`` (one ``.npz``), atomically."""
    if _VERSION_KEY in state:
        raise ValueError(f"state: the key {_VERSION_KEY!r} is reserved")
    atomic_savez(path, {_VERSION_KEY: np.asarray(FORMAT_VERSION), **flatten_state(state)})


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a file written by :func:`write_state` back into a nested dict."""
    with np.load(os.fspath(path), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    version = int(arrays.pop(_VERSION_KEY, -1))
    if version != FORMAT_VERSION:
        raise ValueError(f"path={os.fspath(path)!r}: unsupported checkpoint format {version} "
                         f"(this version reads format {FORMAT_VERSION})")
    return unflatten_state(arrays)


# ------------------------------------------------------------ NumPy-only policy
class NumpyPolicy:
    """A saved policy that acts with NumPy only (deterministic actions).

    Applies the saved observation normalization, the policy network, then the argmax
    (categorical) or the mean clipped to the action bounds (Gaussian).  Built from the
    agent's state dict: ``theta``, ``policy`` (see ``Policy.state_dict``), ``obs_rms``
    and the configuration's ``clip_obs``.

    Examples
    --------
    >>> # policy = load_policy("runs/quickstart/model.npz"); policy.act(obs)
    """

    def __init__(self, state: Mapping[str, Any]) -> None:
        config = json.loads(state["config"])
        spec = state["policy"]
        self.env_id = str(state["env_id"]) or None
        self.net = MLP(tuple(int(s) for s in spec["sizes"]), str(spec["activation"]))
        self.theta = np.array(state["theta"])
        self.kind = str(spec["kind"])
        self.clip_obs = float(config["clip_obs"])
        rms = state.get("obs_rms")
        self.obs_mean = None if rms is None else np.asarray(rms["mean"])
        self.obs_scale = None if rms is None else np.sqrt(np.asarray(rms["var"]) + rms["epsilon"])
        if self.kind == "gaussian":
            self.low, self.high = spec.get("low"), spec.get("high")
        else:
            self.nvec = [int(k) for k in spec["nvec"]]
            self.start = np.asarray(spec["start"])
            self.multi = bool(spec["multi"])

    def act(self, obs: Any) -> NDArray:
        """Deterministic action for one observation (or a batch of rows)."""
        x = np.asarray(obs, dtype=np.float64)
        single = x.ndim == 1
        x = x[None, :] if single else x
        if self.obs_mean is not None:
            x = np.clip((x - self.obs_mean) / self.obs_scale, -self.clip_obs, self.clip_obs)
        out, _ = self.net.forward(self.theta[: self.net.n_params], x, keep_cache=False)
        if self.kind == "gaussian":
            actions = out if self.low is None else np.clip(out, self.low, self.high)
        else:
            bounds = np.cumsum([0, *self.nvec])
            picks = np.stack([np.argmax(out[:, a:b], axis=1)
                              for a, b in itertools.pairwise(bounds)], axis=1)
            picks = picks + self.start
            actions = picks if self.multi else picks[:, 0]
        return actions[0] if single else actions


def load_policy(path: str | os.PathLike) -> NumpyPolicy:
    """Load only the acting part of a checkpoint (needs NumPy alone)."""
    return NumpyPolicy(read_state(path))
