"""Numba kernels for the per-environment-step path (one call per step, few rows).

At one or two observations per call, NumPy's per-operation overhead (a few microseconds
each) dominates the arithmetic: these fused loops replace a dozen NumPy calls per step.
They compute the same formulas as :class:`~rl_adapters.mlp.MLP.forward` and
:class:`~rl_adapters.normalization.RunningMeanStd`; results agree to rounding (the
summation order of a dot product may differ from BLAS).  The large-batch paths (update,
Fisher products) stay on BLAS.  Kept apart from ``mlp.py`` so that a saved policy can act
with NumPy alone.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True)
def mlp_forward_rows(x, theta, sizes, relu):
    """Outputs of the MLP (flat ``theta``, layer ``sizes``) for the rows of ``x``."""
    n = x.shape[0]
    width = 0
    for s in sizes:
        width = max(width, s)
    h = np.empty((n, width))
    z = np.empty((n, width))
    for i in range(n):
        for j in range(sizes[0]):
            h[i, j] = x[i, j]
    offset = 0
    n_layers = sizes.shape[0] - 1
    for layer in range(n_layers):
        n_in = sizes[layer]
        n_out = sizes[layer + 1]
        w0 = offset
        b0 = offset + n_in * n_out
        for i in range(n):
            for o in range(n_out):
                z[i, o] = theta[b0 + o]
            for k in range(n_in):
                hk = h[i, k]
                row = w0 + k * n_out
                for o in range(n_out):
                    z[i, o] += hk * theta[row + o]
        last = layer == n_layers - 1
        for i in range(n):
            for o in range(n_out):
                v = z[i, o]
                if not last:
                    v = (v if v > 0.0 else 0.0) if relu else math.tanh(v)
                h[i, o] = v
        offset = b0 + n_out
    return h[:, : sizes[n_layers]].copy()


@numba.njit(cache=True)
def rms_update(mean, var, count, batch):
    """Merge the rows of ``batch`` into (mean, var) in place; return the new count."""
    n = batch.shape[0]
    d = batch.shape[1]
    total = count + n
    for j in range(d):
        bm = 0.0
        for i in range(n):
            bm += batch[i, j]
        bm /= n
        bv = 0.0
        for i in range(n):
            diff = batch[i, j] - bm
            bv += diff * diff
        bv /= n
        delta = bm - mean[j]
        m2 = var[j] * count + bv * n + delta * delta * (count * n / total)
        mean[j] = mean[j] + delta * (n / total)
        var[j] = m2 / total
    return total


@numba.njit(cache=True)
def rms_normalize(x, mean, var, epsilon, clip):
    """``clip((x - mean) / sqrt(var + eps), -clip, clip)`` row by row."""
    out = np.empty(x.shape)
    rms_normalize_into(x, mean, var, epsilon, clip, out)
    return out


@numba.njit(cache=True)
def rms_normalize_into(x, mean, var, epsilon, clip, out):
    """:func:`rms_normalize` writing into ``out``."""
    for j in range(x.shape[1]):
        scale = math.sqrt(var[j] + epsilon)
        for i in range(x.shape[0]):
            v = (x[i, j] - mean[j]) / scale
            out[i, j] = min(max(v, -clip), clip)


@numba.njit(cache=True)
def gaussian_act_rows(obs, theta, sizes, relu, n_net, noise, low, high, clip_actions,
                      actions_out, env_actions_out, logp_out):
    """Sample ``mean + exp(log_std) * noise`` for a few rows, fused with the forward pass.

    Writes the unclipped actions, the actions clipped to ``[low, high]`` (if
    ``clip_actions``) and ``log N(a; mean, std) = -|noise|^2/2 - sum(log_std) - D/2 log 2pi``.
    """
    mean = mlp_forward_rows(obs, theta, sizes, relu)
    n, d = mean.shape
    log_std_sum = 0.0
    for j in range(d):
        log_std_sum += theta[n_net + j]
    const = log_std_sum + d * 0.5 * math.log(2.0 * math.pi)
    for i in range(n):
        sq = 0.0
        for j in range(d):
            eps = noise[i, j]
            a = mean[i, j] + math.exp(theta[n_net + j]) * eps
            actions_out[i, j] = a
            if clip_actions:
                a = min(max(a, low[j]), high[j])
            env_actions_out[i, j] = a
            sq += eps * eps
        logp_out[i] = -0.5 * sq - const


@numba.njit(cache=True)
def scale_rewards(rewards, dones, returns, mean, var, count, gamma, clip, epsilon, out):
    """``RewardScaler`` step: update the running return and its variance, scale, reset."""
    n = rewards.shape[0]
    for i in range(n):
        returns[i] = returns[i] * gamma + rewards[i]
    batch = returns.reshape(n, 1)
    count = rms_update(mean, var, count, batch)
    scale = math.sqrt(var[0] + epsilon)
    for i in range(n):
        v = rewards[i] / scale
        out[i] = min(max(v, -clip), clip)
        if dones[i]:
            returns[i] = 0.0
    return count
