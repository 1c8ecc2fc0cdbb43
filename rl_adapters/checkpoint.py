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

import io
import itertools
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rl_adapters.mlp import MLP
from rl_adapters.validation import (
    CheckpointError,
    StateError,
    as_observations,
    bool_scalar,
    check_keys,
    float_array,
    int_array,
    int_scalar,
    nested,
    real_scalar,
    str_scalar,
)

__all__ = ["FORMAT_VERSION", "CheckpointError", "NumpyPolicy", "atomic_savez", "flatten_state",
           "load_policy", "read_state", "unflatten_state", "write_state"]

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
        *parents, leaf = names = path.split(SEPARATOR)
        if not all(names):
            raise ValueError(f"state key {path!r}: empty name between separators")
        node = state
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ValueError(f"state key {path!r}: {name!r} is both a value and a group")
        if leaf in node:
            raise ValueError(f"state key {path!r}: {leaf!r} is both a value and a group")
        node[leaf] = arr.item() if arr.ndim == 0 else arr
    return state


# ------------------------------------------------------------------ files
def atomic_savez(path: str | os.PathLike, arrays: dict[str, NDArray]) -> None:
    """``np.savez`` to ``path`` through a temporary file and an atomic rename."""
    path = _checked_target(path)
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
    """Read a file written by :func:`write_state` back into a nested dict.

    The container is checked, never trusted: a zip archive of ``.npy`` members (each
    member's CRC-32 verified), plain numeric, bool or unicode arrays only (no pickled
    objects, whatever the file says), and the format version.  What the entries must
    hold is checked by the components that load them (their ``load_state_dict``).

    Raises
    ------
    CheckpointError
        The file is damaged, not a checkpoint, or of another format version; the message
        names the path.  (``OSError`` for a file that cannot be opened, as ``open``.)
    """
    where = os.fspath(path)
    with open(where, "rb") as fh:
        raw = fh.read()
    try:
        arrays = _parse_npz(raw)
    except CheckpointError as err:
        raise CheckpointError(f"path={where!r}: {err}") from None
    except Exception as err:
        raise CheckpointError(f"path={where!r}: not a readable checkpoint, the file is damaged "
                              f"or of another kind ({type(err).__name__}: {err})") from None
    version = arrays.pop(_VERSION_KEY, None)
    if (version is None or version.ndim != 0 or version.dtype.kind not in "iu"
            or int(version) != FORMAT_VERSION):
        found = "none" if version is None else repr(version.tolist())
        raise CheckpointError(f"path={where!r}: unsupported checkpoint format {found} (this "
                              f"version reads format {FORMAT_VERSION})")
    try:
        return unflatten_state(arrays)
    except ValueError as err:
        raise CheckpointError(f"path={where!r}: {err}") from None


#: Dtype kinds a checkpoint member may have: bool, ints, floats, unicode strings.
_MEMBER_KINDS = "biufU"


def _parse_npz(raw: bytes) -> dict[str, NDArray]:
    """The members of an uncompressed or deflated ``.npz`` held in ``raw``.

    Reads each ``.npy`` header itself (versions 1.0 and 2.0) and refuses object dtypes
    before touching the data, so that no path of this parser can unpickle anything or
    allocate more than the file holds.
    """
    if not raw:
        raise CheckpointError("the file is empty")
    arrays: dict[str, NDArray] = {}
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise CheckpointError(f"member {info.filename!r} is not a .npy array")
            key = info.filename[: -len(".npy")]
            if key in arrays:
                raise CheckpointError(f"member {info.filename!r} appears twice")
            if info.file_size > 64 * len(raw) + 2**20:
                raise CheckpointError(f"member {info.filename!r} claims {info.file_size} bytes")
            arrays[key] = _parse_npy(archive.read(info), key)  # read() checks the CRC-32
    return arrays


def _parse_npy(data: bytes, key: str) -> NDArray:
    fp = io.BytesIO(data)
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise CheckpointError(f"member {key!r}: .npy format {version} is not supported")
    if dtype.hasobject or dtype.kind not in _MEMBER_KINDS or dtype.fields is not None:
        raise CheckpointError(f"member {key!r} holds {dtype} data: checkpoints hold numbers "
                              "and strings only (pickled objects are refused)")
    count = 1
    for n in shape:
        count *= int(n)
    offset = fp.tell()
    if count * dtype.itemsize != len(data) - offset:
        raise CheckpointError(f"member {key!r}: {len(data) - offset} bytes of data for an "
                              f"array of shape {shape} and dtype {dtype}")
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    if fortran:
        return np.array(flat.reshape(shape[::-1]).T)
    return flat.reshape(shape).copy()


def _checked_target(path: str | os.PathLike) -> str:
    """``path`` as a str, if it names a file that can be written in an existing directory."""
    where = os.fspath(path)
    if not isinstance(where, str):
        where = os.fsdecode(where)
    if not where:
        raise ValueError("path: empty; give a file name such as 'model.npz'")
    if os.path.isdir(where) or where.endswith(("/", os.sep)):
        raise ValueError(f"path={where!r} is a directory; give a file name inside it, such as "
                         f"{os.path.join(where, 'model.npz')!r}")
    directory = os.path.dirname(os.path.abspath(where))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"path={where!r}: the directory {directory!r} does not exist")
    return where


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
        check_keys(state, ("config", "env_id", "theta", "policy"),
                   set(state) - {"config", "env_id", "theta", "policy"})
        try:
            config = json.loads(str_scalar(state, "config"))
            self.clip_obs = real_scalar(config, "clip_obs", low=0.0)
        except (ValueError, TypeError, KeyError) as err:
            raise StateError("config", f"not a valid configuration ({err})") from None
        self.env_id = str_scalar(state, "env_id") or None
        with nested("policy"):
            spec = state["policy"]
            check_keys(spec, ("kind", "sizes", "activation"), set(spec) - {"kind"})
            self.kind = str_scalar(spec, "kind")
            sizes = int_array(spec, "sizes", None, low=1)
            if sizes.ndim != 1 or sizes.size < 2:
                raise StateError("sizes", f"expected at least 2 layer sizes, got {sizes}")
            try:
                self.net = MLP(tuple(int(s) for s in sizes), str_scalar(spec, "activation"))
            except ValueError as err:
                raise StateError("activation", str(err)) from None
            obs_dim, out_dim = int(sizes[0]), int(sizes[-1])
            if self.kind == "gaussian":
                gsde = spec.get("exploration") == "gsde"
                extra = ("exploration", "full_std", "use_expln", "epsilon") if gsde else ()
                check_keys(spec, ("kind", "sizes", "activation", "act_dim", "log_std_init",
                                  *extra), ("low", "high"))
                if int_scalar(spec, "act_dim") != out_dim:
                    raise StateError("act_dim", f"{spec['act_dim']}, the network has {out_dim} "
                                                "outputs")
                real_scalar(spec, "log_std_init")  # unused here: checked as the agent would
                if gsde:  # the log_std matrix (latent_dim, act_dim or 1) follows the network
                    columns = out_dim if bool_scalar(spec, "full_std") else 1
                    bool_scalar(spec, "use_expln")
                    real_scalar(spec, "epsilon", low=0.0)
                    n_params = self.net.n_params + int(sizes[-2]) * columns
                else:
                    n_params = self.net.n_params + out_dim
                self.low = self.high = None
                if "low" in spec or "high" in spec:
                    check_keys(spec, set(spec) | {"low", "high"})
                    self.low = float_array(spec, "low", (out_dim,))
                    self.high = float_array(spec, "high", (out_dim,))
                    if (self.low > self.high).any():
                        raise StateError("low", "exceeds high")
            elif self.kind == "categorical":
                check_keys(spec, ("kind", "sizes", "activation", "nvec", "start", "multi"))
                nvec = int_array(spec, "nvec", None, low=1)
                # summed as Python ints: an int64 sum of huge sizes could wrap to out_dim
                if nvec.ndim != 1 or nvec.size < 1 or sum(map(int, nvec)) != out_dim:
                    raise StateError("nvec", f"{nvec.tolist()} does not split the network's "
                                             f"{out_dim} outputs")
                self.nvec = [int(k) for k in nvec]
                self.start = int_array(spec, "start", nvec.shape)
                self.multi = bool_scalar(spec, "multi")
                n_params = self.net.n_params
            else:
                raise StateError("kind", f"{self.kind!r}, expected 'categorical' or 'gaussian'")
        self.obs_dim = obs_dim
        self.theta = float_array(state, "theta", (n_params,))
        self.obs_mean = self.obs_scale = None
        rms = state.get("obs_rms")
        if rms is not None:
            with nested("obs_rms"):
                check_keys(rms, ("mean", "var", "count", "epsilon"))
                self.obs_mean = float_array(rms, "mean", (obs_dim,))
                var = float_array(rms, "var", (obs_dim,), nonnegative=True)
                self.obs_scale = np.sqrt(var + real_scalar(rms, "epsilon", low=0.0))
                if not self.obs_scale.all():  # (x - mean) / 0: NaN actions at the mean
                    raise StateError("epsilon", "0 with a zero variance: observations "
                                                "cannot be normalized")

    def act(self, obs: Any) -> NDArray:
        """Deterministic action for one observation ``(obs_dim,)`` or a batch ``(N, obs_dim)``."""
        x, single = as_observations(obs, self.obs_dim)
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
    """Load only the acting part of a checkpoint (needs NumPy alone).

    Raises
    ------
    CheckpointError
        The file is damaged, not a checkpoint, or its policy entries are inconsistent.
    """
    state = read_state(path)
    try:
        return NumpyPolicy(state)
    except StateError as err:
        raise CheckpointError(f"path={os.fspath(path)!r}: {err}") from None
