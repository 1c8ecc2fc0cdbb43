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
  the critic's minibatch Adam and the L-BFGS objective
  (:class:`rl_adapters.value.ValueFunction`);
- the elementwise steps of :meth:`~rl_adapters.mlp.MLP.jvp` and
  :meth:`~rl_adapters.mlp.MLP.vjp` (bias adds, derivative products, bias gradients),
  bitwise equal to the NumPy statements they replace.

The large-batch products of the policy update and the Fisher products stay on BLAS.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba.extending import overload

from trustregion.kernels.categorical import (
    categorical_log_prob,
    categorical_sample_inverse_cdf,
)

# tanh, branch-free so that LLVM vectorizes the loops that call it (Numba has no SVML
# here, and a libm call per entry keeps a loop scalar).  Kernels calling it compile with
# ``error_model="numpy"``: Python's error model checks every float division for a zero
# divisor, and that branch alone stops the vectorizer (the denominators here are >= 1).
#
# |x| < 0.625: Cephes' rational form x + x^3 P(x^2) / Q(x^2); otherwise
# 1 - 2 / (exp(2|x|) + 1), with exp(y) = 2^n (q + p) / (q - p) from Cephes' exp
# (Cody-Waite reduction y = n ln2 + r, |r| <= ln2 / 2, p = r P(r^2), q = Q(r^2)).  |x| is
# clamped to 22 first (tanh(22) rounds to 1), so 0 <= n <= 64.  n is read from the bits
# of the rounding sum y log2(e) + 1.5 * 2^52 (its ulp is 1, so its low bits hold n) and
# 2^n is written as bits, exponent field n + 1023: integer lane operations that vectorize
# (a product of the powers 2^(2^k) picked by n's bits gives the same exact value, 1.5x
# slower).  Both branches end in one division: t = base + num / den.  The sign is
# copied from x last (tanh(-0) = -0); NaN propagates through the arithmetic, +-inf gives
# +-1.  Within 2 ulp of np.tanh (tests/test_rl_kernels.py).
_TANH_P = (-9.64399179425052238628e-1, -9.92877231001918586564e1,
           -1.61468768441708447952e3)
_TANH_Q = (1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3)
_EXP_P = (1.26177193074810590878e-4, 3.02994407707441961300e-2, 9.99999999999999999910e-1)
_EXP_Q = (3.00198505138664455042e-6, 2.52448340349684104192e-3, 2.27265548208155028766e-1,
          2.00000000000000000009e0)
_LOG2E = 1.4426950408889634074
_LN2_HI = 6.93145751953125e-1  # ln 2 = _LN2_HI + _LN2_LO, _LN2_HI with 11 zero low bits
_LN2_LO = 1.42860682030941723212e-6
_ROUND = 6755399441055744.0  # 1.5 * 2^52: (y + _ROUND) - _ROUND rounds y to an integer
_ROUND_BITS = 0x4338000000000000  # the bits of _ROUND


@numba.njit(inline="always")
def tanh(x):
    """tanh(x) in branch-free arithmetic, within 2 ulp of ``np.tanh`` (see above)."""
    a = abs(x)
    z = a * a
    small = a < 0.625
    y = 2.0 * (22.0 if a > 22.0 else a)  # NaN stays NaN
    shifted = y * _LOG2E + _ROUND
    n = shifted - _ROUND
    r = (y - n * _LN2_HI) - n * _LN2_LO
    rr = r * r
    p = r * ((_EXP_P[0] * rr + _EXP_P[1]) * rr + _EXP_P[2])
    q = ((_EXP_Q[0] * rr + _EXP_Q[1]) * rr + _EXP_Q[2]) * rr + _EXP_Q[3]
    n_bits = np.float64(shifted).view(np.int64) - _ROUND_BITS  # n; garbage if x is NaN
    scale = np.int64((n_bits + 1023) << 52).view(np.float64)  # 2^n
    qm = q - p
    num = a * z * ((_TANH_P[0] * z + _TANH_P[1]) * z + _TANH_P[2]) if small else -2.0 * qm
    den = (((z + _TANH_Q[0]) * z + _TANH_Q[1]) * z + _TANH_Q[2]) if small \
        else scale * (q + p) + qm
    return math.copysign((a if small else 1.0) + num / den, x)


# tanh in float32 for the float32 critic fit (:func:`adam_fit_float32`), the same scheme
# in float32 arithmetic (8 lanes where float64 has 4) with Cephes' single-precision
# polynomials: tanhf's x + x^3 P(x^2) (no division) for |x| < 0.625, expf's
# exp(r) = 1 + r + r^2 P(r) after the Cody-Waite reduction.  |x| is clamped to 10
# (tanh(10) rounds to 1 in float32, tanh(9) does not), so 0 <= n <= 29; n is read from
# the rounding sum with 1.5 * 2^23 and 2^n written as bits, exponent field n + 127.
# Within 1 ulp of the correctly rounded tanh (tests/test_adam_fit.py).
_f32 = np.float32
_TANHF_P = (_f32(-5.70498872745e-3), _f32(2.06390887954e-2), _f32(-5.37397155531e-2),
            _f32(1.33314422036e-1), _f32(-3.33332819422e-1))
_EXPF_P = (_f32(1.9875691500e-4), _f32(1.3981999507e-3), _f32(8.3334519073e-3),
           _f32(4.1665795894e-2), _f32(1.6666665459e-1), _f32(5.0000001201e-1))
_LOG2E_F = _f32(_LOG2E)
_LN2_HI_F = _f32(0.693359375)  # ln 2 = _LN2_HI_F + _LN2_LO_F, _LN2_HI_F with 9 significant bits
_LN2_LO_F = _f32(-2.12194440e-4)
_ROUND_F = _f32(12582912.0)  # 1.5 * 2^23
_ROUND_BITS_F = np.int32(0x4B400000)  # the bits of _ROUND_F
_SMALL_F, _CLAMP_F, _ONE_F, _TWO_F = _f32(0.625), _f32(10.0), _f32(1.0), _f32(2.0)


@numba.njit(inline="always")
def tanh32(x):
    """tanh of a float32 in float32 arithmetic, branch-free, within 1 ulp (see above)."""
    a = abs(x)
    z = a * a
    small = a < _SMALL_F
    ps = ((((_TANHF_P[0] * z + _TANHF_P[1]) * z + _TANHF_P[2]) * z + _TANHF_P[3]) * z
          + _TANHF_P[4]) * z * a + a
    y = _TWO_F * (_CLAMP_F if a > _CLAMP_F else a)  # NaN stays NaN
    shifted = y * _LOG2E_F + _ROUND_F
    n = shifted - _ROUND_F
    r = (y - n * _LN2_HI_F) - n * _LN2_LO_F
    e = (((((_EXPF_P[0] * r + _EXPF_P[1]) * r + _EXPF_P[2]) * r + _EXPF_P[3]) * r
          + _EXPF_P[4]) * r + _EXPF_P[5]) * r * r + r + _ONE_F
    n_bits = np.float32(shifted).view(np.int32) - _ROUND_BITS_F  # n; garbage if x is NaN
    scale = np.int32((n_bits + np.int32(127)) << np.int32(23)).view(np.float32)  # 2^n
    big = _ONE_F - _TWO_F / (e * scale + _ONE_F)
    return np.float32(math.copysign(ps if small else big, x))


def _tanh_at_precision(x):
    """tanh at ``x``'s precision: :func:`tanh32` for a float32, :func:`tanh` otherwise."""
    return np.tanh(x)


@overload(_tanh_at_precision, inline="always")
def _tanh_at_precision_impl(x):
    if x == numba.types.float32:
        return lambda x: tanh32(x)
    return lambda x: tanh(x)


def _at_precision_of(value, array):
    """``value`` as a number of ``array``'s dtype (float32 or float64)."""
    return array.dtype.type(value)


@overload(_at_precision_of, inline="always")
def _at_precision_of_impl(value, array):
    if array.dtype == numba.types.float32:
        return lambda value, array: np.float32(value)
    return lambda value, array: np.float64(value)


@numba.njit(cache=True, error_model="numpy")
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
    params = np.ascontiguousarray(theta)  # a copy only if a caller passed a strided view
    offset = 0
    n_layers = sizes.shape[0] - 1
    for layer in range(n_layers):
        n_in = sizes[layer]
        n_out = sizes[layer + 1]
        b0 = offset + n_in * n_out
        # Views indexed by loop counters: Numba then knows the indices are not negative
        # and LLVM vectorizes the row update below (theta[row + o] kept it scalar: 1.7x
        # slower per step at 17-64-64-6).  The same sums in the same order.
        W = params[offset:b0].reshape((n_in, n_out))
        b = params[b0:b0 + n_out]
        for i in range(n):
            for o in range(n_out):
                z[i, o] = b[o]
            for k in range(n_in):
                hk = h[i, k]
                for o in range(n_out):
                    z[i, o] += hk * W[k, o]
        last = layer == n_layers - 1
        for i in range(n):
            for o in range(n_out):
                v = z[i, o]
                if not last:
                    v = (v if v > 0.0 else 0.0) if relu else tanh(v)
                h[i, o] = v
        offset = b0 + n_out
    return h[:, : sizes[n_layers]].copy()


@numba.njit(cache=True)
def categorical_act_rows(obs, theta, sizes, relu, uniforms, bounds, start, actions_out,
                         env_actions_out, logp_out):
    """A categorical policy's sampling step for a few rows, fused: what
    :meth:`rl_adapters.policies.CategoricalPolicy.act_from_noise` computes with four or more
    NumPy and kernel calls, in one, with the same calls in the same order (the same bits).

    :func:`mlp_forward_rows` gives the logits; per action component ``j`` (logits columns
    ``bounds[j]:bounds[j + 1]``) the inverse-CDF pick at ``uniforms[:, j]`` goes into
    ``actions_out[:, j]``, the pick plus ``start[j]`` into ``env_actions_out[:, j]``, and its
    log-probability is added to ``logp_out`` (zeroed first).
    """
    logits = mlp_forward_rows(obs, theta, sizes, relu)
    n = logits.shape[0]
    for i in range(n):
        logp_out[i] = 0.0
    for j in range(bounds.shape[0] - 1):
        block = logits[:, bounds[j] : bounds[j + 1]]
        picks = categorical_sample_inverse_cdf(np.ascontiguousarray(block),
                                               np.ascontiguousarray(uniforms[:, j]))
        logp = categorical_log_prob(block, picks)
        for i in range(n):
            actions_out[i, j] = picks[i]
            env_actions_out[i, j] = picks[i] + start[j]
            logp_out[i] += logp[i]


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
def normalize_and_act_rows(raw, mean, var, count, epsilon, clip, obs_buf, theta, sizes, relu,
                           n_net, noise, low, high, clip_actions, actions_buf,
                           env_actions_buf, logp_buf, t):
    """Rollout step ``t`` before the env, fused: :func:`rms_update` with the raw
    observations, :func:`rms_normalize_into` ``obs_buf[t]``, :func:`gaussian_act_rows` on
    them into ``actions_buf[t]``, ``env_actions_buf[t]`` and ``logp_buf[t]`` (the same calls
    in the same order, so the same bits).  Returns the new count."""
    count = rms_update(mean, var, count, raw)
    obs = obs_buf[t]
    rms_normalize_into(raw, mean, var, epsilon, clip, obs)
    gaussian_act_rows(obs, theta, sizes, relu, n_net, noise[t], low, high, clip_actions,
                      actions_buf[t], env_actions_buf[t], logp_buf[t])
    return count


@numba.njit(cache=True)
def record_step(reward, terminated, truncated, ep_return, ep_length, raw_reward_buf,
                reward_buf, terminated_buf, truncated_buf, t, done, scale, returns, mean, var,
                count, gamma, clip, epsilon):
    """Rollout step ``t`` after the env, fused: store the raw reward and the episode-end
    flags (row ``t`` of the buffers), add to the episode accumulators, and the reward
    (scaled with :func:`scale_rewards` if ``scale``) into ``reward_buf[t]``.  Returns
    ``(count, any episode ended)``; ``done`` receives ``terminated | truncated``."""
    n = reward.shape[0]
    raw_reward_out = raw_reward_buf[t]
    reward_out = reward_buf[t]
    terminated_out = terminated_buf[t]
    truncated_out = truncated_buf[t]
    any_done = False
    for i in range(n):
        r = reward[i]
        raw_reward_out[i] = r
        d = terminated[i] or truncated[i]
        done[i] = d
        any_done = any_done or d
        ep_return[i] += r
        ep_length[i] += 1
        terminated_out[i] = terminated[i]
        truncated_out[i] = truncated[i]
    if scale:
        count = scale_rewards(reward, done, returns, mean, var, count, gamma, clip, epsilon,
                              reward_out)
    else:
        for i in range(n):
            reward_out[i] = reward[i]
    return count, any_done


#: :func:`record_and_act` statuses.
STEP_ACTED = 0  # step t recorded and step t + 1 acted on
STEP_RECORDED = 1  # step t recorded, the rollout's last step: nothing to act on
STEP_EPISODE_END = 2  # step t recorded, an episode ended: the caller acts after its bookkeeping
STEP_CHECK = 3  # nothing done: the observations may not pass the batch check (see below)

#: The largest sum of squares of an observation batch that :func:`record_and_act` takes
#: itself.  Above it, the general path decides with NumPy's ``vdot`` as it always has: a
#: sequential sum and BLAS's may disagree on an overflow, never this far below one.
CHECK_ABOVE = 1e300


@numba.njit(cache=True)
def record_and_act(next_obs, reward, terminated, truncated, raw, ep_return, ep_length,
                   raw_reward_buf, reward_buf, terminated_buf, truncated_buf, done, scale,
                   returns, s_mean, s_var, s_count, s_gamma, s_clip, s_eps, mean, var, count,
                   epsilon, clip, obs_buf, theta, sizes, relu, n_net, noise, low, high,
                   clip_actions, actions_buf, env_actions_buf, logp_buf, t):
    """Rollout step ``t`` after the env and step ``t + 1`` before it, in one call.

    The vector env's observations ``next_obs`` (float32, float64 or integers) become the
    float64 ``raw`` (NumPy's conversion), then :func:`record_step` and, unless an episode
    ended or ``t`` is the last row of the buffers, :func:`normalize_and_act_rows` for step
    ``t + 1``: the same calls in the same order as the two calls they replace, one dispatch
    where there were two (a dispatch costs about 0.16 us per array argument).

    Returns ``(status, count, s_count)``, the status one of the ``STEP_*`` codes above.
    With :data:`STEP_CHECK` nothing is written: an observation is not finite, or the sum of
    their squares is above :data:`CHECK_ABOVE`; the caller's general path then checks the
    batch and records the step, so every batch meets the same check as before this call.
    """
    n, d = next_obs.shape
    squares = 0.0
    for i in range(n):
        for j in range(d):
            v = float(next_obs[i, j])
            squares += v * v
    if not squares <= CHECK_ABOVE:  # also NaN
        return STEP_CHECK, count, s_count
    for i in range(n):
        for j in range(d):
            raw[i, j] = float(next_obs[i, j])
    s_count, any_done = record_step(reward, terminated, truncated, ep_return, ep_length,
                                    raw_reward_buf, reward_buf, terminated_buf,
                                    truncated_buf, t, done, scale, returns, s_mean, s_var,
                                    s_count, s_gamma, s_clip, s_eps)
    if any_done:
        return STEP_EPISODE_END, count, s_count
    if t + 1 >= obs_buf.shape[0]:
        return STEP_RECORDED, count, s_count
    count = normalize_and_act_rows(raw, mean, var, count, epsilon, clip, obs_buf, theta,
                                   sizes, relu, n_net, noise, low, high, clip_actions,
                                   actions_buf, env_actions_buf, logp_buf, t + 1)
    return STEP_ACTED, count, s_count


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


@numba.njit(cache=True, error_model="numpy")
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


@numba.njit(cache=True, error_model="numpy")
def tanh_into(z, out):
    """``out[...] = tanh(z)`` for 2-d arrays (the kernel tests check it against np.tanh)."""
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            out[i, j] = tanh(z[i, j])


# The elementwise parts of MLP.jvp and MLP.vjp (rl_adapters.mlp), fused.  A Fisher product
# on a 64-unit network spends about 40% of its time outside the BLAS products, in NumPy
# passes over (rows, 64) arrays: a broadcast bias add, a derivative product, and column
# sums, which NumPy reduces slowly along the rows.  These do the same float operations in
# the same order, one pass each: the same bits (tests/test_rl_mlp.py), except which NaN an
# add of two NaNs returns (LLVM may swap an add's operands; either NaN is a valid result).
@numba.njit(cache=True)
def column_sums_into(g, out):
    """``out[j] = sum_i g[i, j]``, added row after row from 0, as ``np.sum(g, axis=0)``."""
    n, m = g.shape
    for j in range(m):
        out[j] = 0.0
    for i in range(n):
        for j in range(m):
            out[j] += g[i, j]


@numba.njit(cache=True)
def scale_and_column_sums(g, d, out):
    """``g *= d`` in place, then ``out = np.sum(g, axis=0)`` (the same bits), in one pass."""
    n, m = g.shape
    for j in range(m):
        out[j] = 0.0
    for i in range(n):
        for j in range(m):
            v = g[i, j] * d[i, j]
            g[i, j] = v
            out[j] += v


@numba.njit(cache=True)
def finish_tangent(dz, other, db, d, has_other, has_d):
    """``dz += other`` (if ``has_other``), ``dz += db`` (each row), ``dz *= d`` (if
    ``has_d``): the three NumPy statements, in their order, in one pass."""
    n, m = dz.shape
    for i in range(n):
        for j in range(m):
            v = dz[i, j]
            if has_other:
                v += other[i, j]
            v += db[j]
            if has_d:
                v *= d[i, j]
            dz[i, j] = v


@numba.njit(cache=True)
def _layer_offsets(sizes):
    """Where each layer's (W, b) starts in the flat parameter vector, and its end last."""
    n_layers = sizes.shape[0] - 1
    offsets = np.zeros(n_layers + 1, dtype=np.int64)
    for layer in range(n_layers):
        offsets[layer + 1] = offsets[layer] + sizes[layer] * sizes[layer + 1] + sizes[layer + 1]
    return offsets


@numba.njit(cache=True)
def _fit_buffers(rows, sizes, like):
    """Per-layer activations ``(rows, sizes[l])`` and their cotangents, allocated once,
    of ``like``'s dtype (the precision of the passes)."""
    acts = [np.empty((rows, sizes[0]), like.dtype)]
    grads = [np.empty((rows, sizes[0]), like.dtype)]
    for layer in range(1, sizes.shape[0]):
        acts.append(np.empty((rows, sizes[layer]), like.dtype))
        grads.append(np.empty((rows, sizes[layer]), like.dtype))
    return acts, grads


# The critic fit's entry points release the GIL (``nogil``): the agent runs them on a second
# thread while the policy steps (``TRPOConfig.parallel_update``).
#
# The critic fit's kernels contract a * b + c into fused multiply-adds (``fastmath``
# "contract" only: no reassociation, no approximations, NaN and inf as IEEE): fewer
# instructions in tanh, one rounding instead of two, so results differ from unfused
# arithmetic at the level of rounding only.
@numba.njit(cache=True, error_model="numpy", fastmath={"contract"})
def _fit_minibatch(theta, grad, obs, targets, idx, offsets, sizes, relu, acts, grads, w_t):
    """Gradient of the minibatch ``idx``'s mean squared error into ``grad`` (no L2).

    The critic has one output unit (``sizes[-1] == 1``).  Forward, per hidden layer:
    ``Z = H W`` by BLAS into the layer's buffer, then ``+ b`` and the activation in one
    pass; the output ``V = H w`` by BLAS, then ``+ b`` fused with the residual
    ``g = 2/B (V - R)``.  Reverse: one pass over the last hidden layer gives the output
    layer's ``dw = H^T g`` and that layer's cotangent ``G = g w^T * sigma'(H)`` with its
    bias gradient (column sums of ``G``); per hidden layer below, ``dW = H^T G`` by BLAS,
    ``G W^T`` by BLAS into the buffer of the layer below, then ``* sigma'`` and that
    layer's bias gradient in one pass.  ``sigma'`` is ``1 - h^2`` for tanh and ``h > 0``
    for relu.  ``w_t[l]`` is scratch space for ``W_l^T``.

    The passes run at the precision of ``theta``, ``obs`` and the buffers (all float64,
    or all float32 for :func:`adam_fit_float32`: then tanh is :func:`tanh32` and the
    constants are float32); the residual is formed in float64 either way (``targets``
    is float64), then rounded into ``g``.
    """
    n_layers = sizes.shape[0] - 1
    rows = idx.shape[0]
    zero = _at_precision_of(0.0, theta)  # float32 literals in float32 passes
    one = _at_precision_of(1.0, theta)
    x = acts[0]
    for i in range(rows):
        r = idx[i]
        for j in range(sizes[0]):
            x[i, j] = obs[r, j]
    for layer in range(n_layers - 1):
        n_in = sizes[layer]
        n_out = sizes[layer + 1]
        w0 = offsets[layer]
        b0 = w0 + n_in * n_out
        b = theta[b0 : b0 + n_out]
        z = acts[layer + 1]
        np.dot(acts[layer], theta[w0:b0].reshape((n_in, n_out)), z)
        if relu:
            for i in range(rows):
                for o in range(n_out):
                    v = z[i, o] + b[o]
                    z[i, o] = v if v > zero else zero
        else:
            for i in range(rows):
                for o in range(n_out):
                    z[i, o] = _tanh_at_precision(z[i, o] + b[o])
    # Output unit.
    n_in = sizes[n_layers - 1]
    w0 = offsets[n_layers - 1]
    b0 = w0 + n_in
    w = theta[w0:b0]
    h = acts[n_layers - 1]
    out = acts[n_layers]
    np.dot(h, w.reshape((n_in, 1)), out)
    g = grads[n_layers]
    c = 2.0 / rows
    bias = theta[b0]
    db = 0.0
    for i in range(rows):
        gi = c * ((np.float64(out[i, 0]) + bias) - targets[idx[i]])
        g[i, 0] = gi
        db += gi
    grad[b0] = db
    dw = grad[w0:b0]
    for k in range(n_in):
        dw[k] = 0.0
    if n_layers == 1:
        for i in range(rows):
            gi = g[i, 0]
            for k in range(n_in):
                dw[k] += h[i, k] * gi
        return
    # Last hidden layer: dw, its cotangent and its bias gradient in one pass.
    G = grads[n_layers - 1]
    hb0 = offsets[n_layers - 2] + sizes[n_layers - 2] * n_in
    db_h = grad[hb0 : hb0 + n_in]
    for k in range(n_in):
        db_h[k] = 0.0
    for i in range(rows):
        gi = g[i, 0]
        for k in range(n_in):
            hk = h[i, k]
            dw[k] += hk * gi
            d = (one if hk > zero else zero) if relu else one - hk * hk
            v = gi * w[k] * d
            G[i, k] = v
            db_h[k] += v
    for layer in range(n_layers - 2, -1, -1):
        n_in = sizes[layer]
        n_out = sizes[layer + 1]
        w0 = offsets[layer]
        b0 = w0 + n_in * n_out
        h = acts[layer]
        G = grads[layer + 1]
        W = theta[w0:b0].reshape((n_in, n_out))
        np.dot(h.T, G, grad[w0:b0].reshape((n_in, n_out)))
        if layer > 0:
            # G W^T as a plain product with W^T copied: OpenBLAS's transposed-operand
            # path is slower, and with more than one thread hundreds of times slower.
            # The copy goes by 8 x 8 blocks (rows of W and of W^T stay in cache).
            WT = w_t[layer]
            for k0 in range(0, n_in, 8):
                for o0 in range(0, n_out, 8):
                    for o in range(o0, min(o0 + 8, n_out)):
                        for k in range(k0, min(k0 + 8, n_in)):
                            WT[o, k] = W[k, o]
            G_below = grads[layer]
            np.dot(G, WT, G_below)
            hb0 = offsets[layer - 1] + sizes[layer - 1] * n_in
            db_h = grad[hb0 : hb0 + n_in]
            for k in range(n_in):
                db_h[k] = 0.0
            for i in range(rows):
                for k in range(n_in):
                    hk = h[i, k]
                    d = (one if hk > zero else zero) if relu else one - hk * hk
                    v = G_below[i, k] * d
                    G_below[i, k] = v
                    db_h[k] += v


@numba.njit(cache=True, error_model="numpy", nogil=True)
def mse_loss_grad(theta, obs_w, targets, sizes, relu, l2, weight_mask, theta_w, grad_w,
                  mixed):
    """Mean squared error over the whole batch plus ``l2 * ||W||^2``, and its gradient.

    The objective of :meth:`rl_adapters.value.ValueFunction.loss_and_grad` for the L-BFGS
    fit, one compiled call per evaluation: the forward and reverse passes of
    :func:`_fit_minibatch` over every row.  Without ``mixed``, ``theta_w`` is ``theta`` and
    ``obs_w`` is float64.  With ``mixed``, ``theta_w`` is float32 scratch filled from
    ``theta``, ``obs_w`` the float32 observations, and the passes run in float32; the
    residual ``V - R``, the loss, the L2 term and the returned gradient are float64
    either way.  ``grad_w`` is scratch at the passes' precision.  Returns
    ``(loss, grad)`` with a new float64 ``grad``.
    """
    n_layers = sizes.shape[0] - 1
    n = obs_w.shape[0]
    offsets = _layer_offsets(sizes)
    if mixed:
        for i in range(theta.shape[0]):
            theta_w[i] = theta[i]
    acts, grads = _fit_buffers(n, sizes, theta_w)
    w_t = [np.empty((sizes[layer + 1], sizes[layer]), theta_w.dtype)
           for layer in range(n_layers)]
    idx = np.arange(n)
    _fit_minibatch(theta_w, grad_w, obs_w, targets, idx, offsets, sizes, relu, acts, grads,
                   w_t)
    out = acts[n_layers]
    bias = theta_w[offsets[n_layers] - 1]
    loss = 0.0
    for i in range(n):
        r = (np.float64(out[i, 0]) + bias) - targets[i]
        loss += r * r
    loss /= n
    grad = np.empty(theta.shape[0])
    for i in range(theta.shape[0]):
        grad[i] = grad_w[i]
    if l2 > 0.0:
        penalty = 0.0
        for i in range(theta.shape[0]):
            if weight_mask[i]:
                penalty += theta[i] * theta[i]
                grad[i] += 2.0 * l2 * theta[i]
        loss += l2 * penalty
    return loss, grad


@numba.njit(cache=True, error_model="numpy", nogil=True)
def adam_fit(theta, obs, targets, orders, batch_size, sizes, relu, lr, beta1, beta2, eps,
             m, v, t, l2, weight_mask):
    """Minibatch Adam on the mean squared error, all epochs in one compiled loop.

    The formulas of :meth:`rl_adapters.value.ValueFunction.loss_and_grad` +
    :func:`adam_step` per minibatch (forward, reverse pass, optional L2 on weights, Adam),
    without the per-minibatch Python and NumPy call overhead and without allocations
    (the activations and cotangents live in buffers allocated once; tanh is
    :func:`tanh`, within 2 ulp of NumPy's).  The gradient's rounding differs from
    NumPy's (fused multiply-adds, sums in another order; see :func:`_fit_minibatch`);
    the Adam step is :func:`adam_step`'s.  ``orders[e]`` is epoch ``e``'s permutation of
    the rows.  Returns the new Adam step count.
    """
    grad = np.zeros_like(theta)
    return _adam_epochs(theta, grad, theta, grad, obs, targets, orders, batch_size, sizes,
                        relu, lr, beta1, beta2, eps, m, v, t, l2, weight_mask, False)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def adam_fit_float32(theta, obs, targets, orders, batch_size, sizes, relu, lr, beta1, beta2,
                     eps, m, v, t, l2, weight_mask):
    """:func:`adam_fit` with the forward and reverse passes in float32.

    The parameters ``theta``, the Adam moments, the L2 term and the Adam step stay
    float64; per minibatch the passes run on a float32 copy of ``theta`` (refreshed after
    every step), float32 observations, activations and cotangents, and float32 BLAS
    products (twice the lanes of float64, and half the memory traffic); the residual
    ``V - R`` is formed in float64 before it is rounded, tanh is :func:`tanh32` (within
    1 ulp), and the gradient is widened to float64 before the L2 term and the step.
    Same arguments and result as :func:`adam_fit`.
    """
    theta_w = np.empty(theta.shape[0], np.float32)
    obs_w = np.empty(obs.shape, np.float32)
    for i in range(obs.shape[0]):
        for j in range(obs.shape[1]):
            obs_w[i, j] = obs[i, j]
    return _adam_epochs(theta, np.zeros_like(theta), theta_w, np.zeros_like(theta_w), obs_w,
                        targets, orders, batch_size, sizes, relu, lr, beta1, beta2, eps, m, v,
                        t, l2, weight_mask, True)


@numba.njit(cache=True, error_model="numpy")
def _adam_epochs(theta, grad, theta_w, grad_w, obs_w, targets, orders, batch_size, sizes,
                 relu, lr, beta1, beta2, eps, m, v, t, l2, weight_mask, mixed):
    """The epochs of :func:`adam_fit`: passes at ``theta_w``'s precision, steps on ``theta``.

    Without ``mixed``, ``theta_w`` is ``theta`` and ``grad_w`` is ``grad`` (one precision,
    nothing copied).  With ``mixed``, ``theta_w`` (float32) is refreshed from ``theta``
    before the first minibatch and after every Adam step, and the minibatch gradient
    ``grad_w`` is widened into ``grad`` before the L2 term and the step.
    """
    n_layers = sizes.shape[0] - 1
    n = obs_w.shape[0]
    offsets = _layer_offsets(sizes)
    if n == 0 or batch_size < 1:
        return t
    full = min(batch_size, n)
    acts, grads = _fit_buffers(full, sizes, theta_w)
    rest = n % full
    acts_rest, grads_rest = _fit_buffers(rest if rest > 0 else 1, sizes, theta_w)
    w_t = [np.empty((sizes[layer + 1], sizes[layer]), theta_w.dtype)
           for layer in range(n_layers)]
    if mixed:
        for i in range(theta.shape[0]):
            theta_w[i] = theta[i]
    for epoch in range(orders.shape[0]):
        for start in range(0, n, full):
            idx = orders[epoch, start : min(start + full, n)]
            if idx.shape[0] == full:
                _fit_minibatch(theta_w, grad_w, obs_w, targets, idx, offsets, sizes, relu,
                               acts, grads, w_t)
            else:
                _fit_minibatch(theta_w, grad_w, obs_w, targets, idx, offsets, sizes, relu,
                               acts_rest, grads_rest, w_t)
            if mixed:
                for i in range(theta.shape[0]):
                    grad[i] = grad_w[i]
            if l2 > 0.0:
                for i in range(theta.shape[0]):
                    if weight_mask[i]:
                        grad[i] += 2.0 * l2 * theta[i]
            t += 1
            adam_step(theta, grad, m, v, lr, beta1, beta2, eps, t)
            if mixed:
                for i in range(theta.shape[0]):
                    theta_w[i] = theta[i]
    return t


@numba.njit(cache=True, error_model="numpy")
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
            phi[i] = (x if x > 0.0 else 0.0) if relu else tanh(x)
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
