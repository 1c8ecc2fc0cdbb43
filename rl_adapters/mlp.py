"""A NumPy multilayer perceptron over one flat parameter vector.

The network is

.. math::

    h_0 = x, \\qquad z_i = h_i W_i + b_i, \\qquad h_{i+1} = \\sigma(z_i) \\;(i < L-1),
    \\qquad y = z_{L-1},

with ``W_i`` of shape ``(n_i, n_{i+1})``.  All ``W_i`` and ``b_i`` are views into one
flat vector ``theta``, so a line search can evaluate trial parameters
``theta + alpha * step`` without touching the network object, and the optimizer works on
plain vectors.

Three passes are written by hand:

- :meth:`MLP.forward` returns ``y`` and a :class:`ForwardCache` (layer inputs and the
  activation derivatives ``sigma'(z_i)``);
- :meth:`MLP.vjp` (reverse mode) maps an output cotangent ``G = dL/dy`` to
  ``dL/dtheta = J^T G``;
- :meth:`MLP.jvp` (forward mode) maps a parameter tangent ``v`` to ``J v = dy/dtheta v``.

Both derivative passes reuse the cache, so the Fisher-vector product ``J^T M J v`` costs
two passes over the batch and no new forward pass per conjugate-gradient iteration.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np
from numpy.typing import NDArray

__all__ = ["MLP", "ForwardCache", "orthogonal"]

_ACTIVATIONS = ("tanh", "relu")


def orthogonal(rng: np.random.Generator, shape: tuple[int, int], gain: float) -> NDArray:
    """Orthogonal matrix of ``shape`` scaled by ``gain`` (Saxe et al., 2014).

    The QR factor of a Gaussian matrix, with the signs of ``R``'s diagonal folded in so
    the distribution is uniform (Haar) over orthogonal matrices.

    Examples
    --------
    >>> W = orthogonal(np.random.default_rng(0), (4, 3), gain=1.0)
    >>> np.allclose(W.T @ W, np.eye(3))
    True
    """
    rows, cols = shape
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return gain * q[:rows, :cols]


@dataclass
class ForwardCache:
    """Activations of one forward pass, reused by :meth:`MLP.vjp` and :meth:`MLP.jvp`.

    Attributes
    ----------
    inputs : list of ndarray
        ``h_i``, the input of layer ``i`` (``inputs[0]`` is the network input).
    derivs : list of ndarray
        ``sigma'(z_i)`` for every hidden layer ``i < L-1``.
    """

    inputs: list[NDArray] = field(default_factory=list)
    derivs: list[NDArray] = field(default_factory=list)


class MLP:
    """Fully connected network with a flat parameter vector.

    Parameters
    ----------
    sizes : sequence of int
        ``(n_in, n_hidden_1, ..., n_out)``; at least two entries.
    activation : {"tanh", "relu"}
        Hidden-layer nonlinearity; the output layer is linear.

    Examples
    --------
    >>> net = MLP((3, 8, 2))
    >>> theta = net.init(np.random.default_rng(0))
    >>> y, cache = net.forward(theta, np.ones((5, 3)))
    >>> y.shape, net.n_params
    ((5, 2), 50)
    """

    def __init__(self, sizes: tuple[int, ...] | list[int], activation: str = "tanh") -> None:
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(f"sizes must be >= 2 positive ints, got {sizes!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
        self.sizes = sizes
        self.sizes_array = np.asarray(sizes, dtype=np.int64)
        self.activation = activation
        # (w_start, w_end, b_end) offsets of every layer in the flat vector.
        self._slices: list[tuple[int, int, int]] = []
        offset = 0
        for n_in, n_out in itertools.pairwise(sizes):
            w_end = offset + n_in * n_out
            self._slices.append((offset, w_end, w_end + n_out))
            offset = w_end + n_out
        self.n_params = offset

    @property
    def n_layers(self) -> int:
        return len(self._slices)

    def unflatten(self, theta: NDArray) -> list[tuple[NDArray, NDArray]]:
        """Views ``[(W_0, b_0), ...]`` into ``theta`` (no copies; writes go through)."""
        return [
            (theta[start:w_end].reshape(n_in, n_out), theta[w_end:b_end])
            for (start, w_end, b_end), n_in, n_out in zip(
                self._slices, self.sizes[:-1], self.sizes[1:], strict=True
            )
        ]

    def init(
        self,
        rng: np.random.Generator,
        *,
        hidden_gain: float = float(np.sqrt(2.0)),
        output_gain: float = 1.0,
        dtype: type = np.float64,
    ) -> NDArray:
        """Orthogonal weights (gain ``hidden_gain``, last layer ``output_gain``), zero biases."""
        theta = np.zeros(self.n_params, dtype=dtype)
        for i, (W, _) in enumerate(self.unflatten(theta)):
            gain = output_gain if i == self.n_layers - 1 else hidden_gain
            W[...] = orthogonal(rng, W.shape, gain)
        return theta

    # ------------------------------------------------------------------ passes
    def forward(self, theta: NDArray, x: NDArray, *, keep_cache: bool = True):
        """Evaluate the network; return ``(y, cache)`` (cache is None if not kept)."""
        cache = ForwardCache() if keep_cache else None
        h = x
        layers = self.unflatten(theta)
        last = self.n_layers - 1
        for i, (W, b) in enumerate(layers):
            if cache is not None:
                cache.inputs.append(h)
            z = h @ W
            z += b
            if i == last:
                return z, cache
            if self.activation == "tanh":
                np.tanh(z, out=z)
                if cache is not None:
                    # sigma'(z) = 1 - tanh(z)^2, from the output itself.
                    d = z * z
                    np.subtract(1.0, d, out=d)
                    cache.derivs.append(d)
            else:
                if cache is not None:
                    cache.derivs.append((z > 0).astype(z.dtype))
                np.maximum(z, 0.0, out=z)
            h = z
        raise AssertionError("unreachable")  # pragma: no cover

    def vjp(
        self, theta: NDArray, cache: ForwardCache, g_out: NDArray, *, out: NDArray | None = None
    ) -> NDArray:
        """Reverse mode: ``J^T g_out`` as a flat vector (gradient of ``sum(g_out * y)``).

        ``dW_i = h_i^T G_i``, ``db_i = sum_rows G_i``, ``G_{i-1} = (G_i W_i^T) * sigma'(z_{i-1})``.
        """
        grad = np.empty(self.n_params, dtype=g_out.dtype) if out is None else out
        layers = self.unflatten(theta)
        grads = self.unflatten(grad)
        # NumPy sums a one-column array's rows pairwise, not one after the other.
        fused = _fused_passes(g_out, (theta, grad), cache) if min(self.sizes[1:]) > 1 else None
        g = g_out
        if fused is not None:
            fused.column_sums_into(g, grads[-1][1])
        for i in range(self.n_layers - 1, -1, -1):
            W, _ = layers[i]
            gW, gb = grads[i]
            np.matmul(cache.inputs[i].T, g, out=gW)
            if fused is None:
                np.sum(g, axis=0, out=gb)
            if i > 0:
                g = g @ W.T
                if fused is None:
                    g *= cache.derivs[i - 1]
                else:  # and the bias gradient of layer i - 1, in the same pass
                    fused.scale_and_column_sums(g, cache.derivs[i - 1], grads[i - 1][1])
        return grad

    def jvp(self, theta: NDArray, cache: ForwardCache, v: NDArray) -> NDArray:
        """Forward mode: ``J v``, the directional derivative of the outputs, shape ``(N, n_out)``.

        ``dz_i = dh_i W_i + h_i dW_i + db_i``, ``dh_{i+1} = sigma'(z_i) * dz_i``, ``dh_0 = 0``.
        """
        layers = self.unflatten(theta)
        tangents = self.unflatten(v)
        fused = _fused_passes(v, (theta,), cache)
        last = self.n_layers - 1
        dh = None
        for i, ((W, _), (dW, db)) in enumerate(zip(layers, tangents, strict=True)):
            dz = cache.inputs[i] @ dW
            if fused is not None:
                # Unused operands are passed as dz itself (never read).
                carried = dz if dh is None else dh @ W
                deriv = dz if i == last else cache.derivs[i]
                fused.finish_tangent(dz, carried, db, deriv, has_other=dh is not None,
                                     has_d=i != last)
            else:
                if dh is not None:
                    dz += dh @ W
                dz += db
                if i != last:
                    dz *= cache.derivs[i]
            if i == last:
                return dz
            dh = dz
        raise AssertionError("unreachable")  # pragma: no cover


_FUSED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _fused_passes(tangent: NDArray, params: tuple[NDArray, ...],
                  cache: ForwardCache) -> ModuleType | None:
    """The compiled elementwise steps of :meth:`MLP.jvp` and :meth:`MLP.vjp`, if they
    give NumPy's values bit for bit here.

    Parameters
    ----------
    tangent : ndarray
        The pass's input: the parameter tangent ``v`` (jvp) or the output cotangent
        ``g_out`` (vjp, 2-d).
    params : tuple of ndarray
        The other flat vectors the pass reads or writes (``theta``, the gradient).
    cache : ForwardCache
        The forward pass's layer inputs and derivatives.

    Returns
    -------
    module or None
        :mod:`rl_adapters._kernels`, or None to run the NumPy statements.

    Notes
    -----
    The kernels do NumPy's float operations in NumPy's order when every array has one float
    dtype and every row array is C-ordered; mixed dtypes or other layouts may take another
    precision or order.  Two more limits stay with the callers and the claim: NumPy sums
    the rows of a one-column array pairwise, so :meth:`MLP.vjp` keeps NumPy's sums for a
    network with a one-unit layer; and where both operands of an add are NaN, which NaN
    (sign, payload) comes out may differ, since either is a valid result.  Imported here,
    not at the top: a saved policy acts through :meth:`MLP.forward` with NumPy alone
    (:mod:`rl_adapters.checkpoint` imports no Numba).
    """
    dtype = tangent.dtype
    if dtype not in _FUSED_DTYPES or not all(a.dtype == dtype for a in params):
        return None
    if tangent.ndim == 2 and not tangent.flags.c_contiguous:
        return None
    for a in (*cache.inputs, *cache.derivs):
        if a.dtype != dtype or not a.flags.c_contiguous:
            return None
    from rl_adapters import _kernels

    return _kernels
