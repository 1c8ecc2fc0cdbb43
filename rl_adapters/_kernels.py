"""All Numba kernels of ``rl_adapters`` (private; the validating Python API calls them).

Two kinds, kept apart from the Python classes so that a saved policy can act with NumPy
alone (:mod:`rl_adapters.checkpoint` imports no Numba):

- the per-environment-step path (one call per step, few rows): MLP forward, Gaussian
  sampling, observation and reward normalization.  At one or two observations per call,
  NumPy's per-operation overhead (a few microseconds each) dominates the arithmetic:
  these fused loops replace a dozen NumPy calls per step.  They compute the same formulas
  as :meth:`~rl_adapters.mlp.MLP.forward` and
  :class:`~rl_adapters.normalization.RunningMeanStd`; results agree to rounding (the
  summation order of a dot product may differ from BLAS);
- the per-update loops: the GAE recursion (:func:`rl_adapters.rollout.compute_gae`) and
  the critic's minibatch Adam (:class:`rl_adapters.value.ValueFunction`).

The large-batch paths (policy update, Fisher products) stay on BLAS.
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


@numba.njit(cache=True)
def gae_advantages(rewards, values, next_values, episode_ends, gamma, lam):
    """The GAE recursion backwards in time, per environment (see ``compute_gae``)."""
    steps, n_envs = rewards.shape
    adv = np.empty_like(rewards)
    for e in range(n_envs):
        running = 0.0
        for t in range(steps - 1, -1, -1):
            if episode_ends[t, e]:
                running = 0.0
            delta = rewards[t, e] + gamma * next_values[t, e] - values[t, e]
            running = delta + gamma * lam * running
            adv[t, e] = running
    return adv


@numba.njit(cache=True)
def adam_step(theta, grad, m, v, lr, beta1, beta2, eps, t):
    """In-place Adam update of ``theta`` (step number ``t`` >= 1), fused in one pass."""
    c1 = 1.0 - beta1**t
    c2 = 1.0 - beta2**t
    step = lr * np.sqrt(c2) / c1
    for i in range(theta.shape[0]):
        g = grad[i]
        m[i] = beta1 * m[i] + (1.0 - beta1) * g
        v[i] = beta2 * v[i] + (1.0 - beta2) * g * g
        theta[i] -= step * m[i] / (np.sqrt(v[i]) + eps * np.sqrt(c2))


@numba.njit(cache=True)
def tanh_rows(z):
    """tanh from one exp per entry: twice as fast as Numba's ``np.tanh`` here, within 1 ulp."""
    out = np.empty_like(z)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            x = z[i, j]
            e = math.exp(-2.0 * abs(x))
            t = (1.0 - e) / (1.0 + e)
            out[i, j] = t if x >= 0.0 else -t
    return out


@numba.njit(cache=True)
def adam_fit(theta, obs, targets, orders, batch_size, sizes, relu, lr, beta1, beta2, eps,
              m, v, t, l2, weight_mask):
    """Minibatch Adam on the mean squared error, all epochs in one compiled loop.

    Same arithmetic as :meth:`rl_adapters.value.ValueFunction.loss_and_grad` + :func:`adam_step` per
    minibatch (forward, reverse pass, optional L2 on weights, Adam), without the
    per-minibatch Python and NumPy call overhead (tanh agrees with NumPy's to 1 ulp).
    ``orders[e]`` is epoch ``e``'s permutation of the rows.  Returns the new Adam step
    count.
    """
    n_layers = sizes.shape[0] - 1
    n = obs.shape[0]
    grad = np.zeros_like(theta)
    offsets = np.zeros(n_layers + 1, dtype=np.int64)
    for layer in range(n_layers):
        offsets[layer + 1] = offsets[layer] + sizes[layer] * sizes[layer + 1] + sizes[layer + 1]
    for epoch in range(orders.shape[0]):
        for start in range(0, n, batch_size):
            idx = orders[epoch, start : min(start + batch_size, n)]
            rows = idx.shape[0]
            acts = []
            acts.append(obs[idx])
            for layer in range(n_layers):
                n_in = sizes[layer]
                n_out = sizes[layer + 1]
                w0 = offsets[layer]
                W = theta[w0 : w0 + n_in * n_out].reshape((n_in, n_out))
                b = theta[w0 + n_in * n_out : w0 + n_in * n_out + n_out]
                z = acts[layer] @ W + b
                if layer < n_layers - 1:
                    z = np.maximum(z, 0.0) if relu else tanh_rows(z)
                acts.append(z)
            g = (2.0 / rows) * (acts[n_layers][:, 0] - targets[idx]).reshape((rows, 1))
            for layer in range(n_layers - 1, -1, -1):
                n_in = sizes[layer]
                n_out = sizes[layer + 1]
                w0 = offsets[layer]
                h = acts[layer]
                gW = np.ascontiguousarray(h.T) @ g
                grad[w0 : w0 + n_in * n_out] = gW.ravel()
                grad[w0 + n_in * n_out : w0 + n_in * n_out + n_out] = g.sum(axis=0)
                if layer > 0:
                    W = theta[w0 : w0 + n_in * n_out].reshape((n_in, n_out))
                    g = g @ np.ascontiguousarray(W.T)
                    if relu:
                        g = g * (h > 0.0)
                    else:
                        g = g * (1.0 - h * h)
            if l2 > 0.0:
                for i in range(theta.shape[0]):
                    if weight_mask[i]:
                        grad[i] += 2.0 * l2 * theta[i]
            t += 1
            adam_step(theta, grad, m, v, lr, beta1, beta2, eps, t)
    return t


@numba.njit(cache=True)
def sde_act_rows(obs, theta, hidden_sizes, relu, n_net, full_std, use_expln, epsilon,
                 matrices, low, high, clip_actions, actions_out, env_actions_out, logp_out):
    """:meth:`StateDependentGaussianPolicy.act_with_matrices` for a few rows, fused.

    ``a = mu + M^T phi`` with ``mu = phi W + b`` (the output layer at the end of the
    network's parameters, ``log_std`` right after them) and
    ``log N(a) = -sum_j [(M^T phi)_j^2 / v_j + log v_j] / 2 - D/2 log 2 pi``.
    """
    pre = mlp_forward_rows(obs, theta, hidden_sizes, relu)
    n, h = pre.shape
    d = matrices.shape[2]
    w0 = n_net - h * d - d
    b0 = n_net - d
    n_cols = d if full_std else 1
    sq_std = np.empty((h, n_cols))
    for i in range(h):
        for c in range(n_cols):
            ls = theta[n_net + i * n_cols + c]
            if use_expln and ls > 0.0:
                s = math.log1p(ls + epsilon) + 1.0
            else:
                s = math.exp(ls)
            sq_std[i, c] = s * s
    phi = np.empty(h)
    half_log_2pi = 0.5 * math.log(2.0 * math.pi)
    for r in range(n):
        for i in range(h):
            x = pre[r, i]
            phi[i] = (x if x > 0.0 else 0.0) if relu else math.tanh(x)
        total = 0.0
        for j in range(d):
            mean = theta[b0 + j]
            var = epsilon
            noise = 0.0
            c = j if full_std else 0
            for i in range(h):
                p = phi[i]
                mean += p * theta[w0 + i * d + j]
                var += p * p * sq_std[i, c]
                noise += p * matrices[r, i, j]
            a = mean + noise
            actions_out[r, j] = a
            if clip_actions:
                a = min(max(a, low[j]), high[j])
            env_actions_out[r, j] = a
            total += noise * noise / var + math.log(var)
        logp_out[r] = -0.5 * total - d * half_log_2pi
