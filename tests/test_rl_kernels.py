"""The compiled kernels' branch-free tanh against NumPy and an extended-precision reference."""

import numpy as np
import pytest
from agent_checks import assert_same_run
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rl_adapters._kernels import mlp_forward_rows, tanh_into
from rl_adapters.mlp import MLP

#: Largest distance to np.tanh, in units in the last place of np.tanh's result.
MAX_ULPS = 2


def kernel_tanh(x):
    x = np.asarray(x, dtype=np.float64)
    flat = np.ascontiguousarray(x.reshape(1, -1))
    out = np.empty_like(flat)
    tanh_into(flat, out)
    return out.reshape(x.shape)


def ulps_from(value, reference):
    """|value - reference| in units of the spacing of doubles at ``reference``."""
    spacing = np.spacing(np.abs(reference).astype(np.float64))
    return np.abs(value.astype(np.longdouble) - reference) / np.maximum(spacing, 5e-324)


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(1, 64), elements=finite))
def test_tanh_within_two_ulps_of_numpy_anywhere(x):
    ours = kernel_tanh(x)
    assert np.all(ulps_from(ours, np.tanh(x)) <= MAX_ULPS)
    assert np.all(np.abs(ours) <= 1.0)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(1, 64),
              elements=st.floats(-25.0, 25.0, allow_subnormal=False)))
def test_tanh_is_odd_and_within_two_ulps_where_it_is_not_saturated(x):
    ours = kernel_tanh(x)
    np.testing.assert_array_equal(kernel_tanh(-x), -ours)
    assert np.all(ulps_from(ours, np.tanh(x)) <= MAX_ULPS)


@pytest.mark.skipif(np.finfo(np.longdouble).nmant < 60, reason="no extended precision")
def test_tanh_against_extended_precision_on_a_dense_grid():
    # Every binade the two branches and the range reduction cover, densely sampled; the
    # reference is tanh in 80-bit long double (64-bit mantissa), an independent libm path.
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-1.0, 1.0, 100_000), rng.uniform(-25.0, 25.0, 100_000),
                        np.linspace(0.62, 0.63, 10_001),  # the switch between branches
                        np.sign(rng.standard_normal(20_000)) * 10.0 ** rng.uniform(-300, 1.5,
                                                                                    20_000)])
    exact = np.tanh(x.astype(np.longdouble))
    assert ulps_from(kernel_tanh(x), exact).max() <= MAX_ULPS


def test_tanh_of_tiny_arguments_is_the_argument():
    # tanh(x) = x - x^3/3 + ...: below 2^-27 the cubic term is under half an ulp of x, so no
    # cancellation may turn x into anything else (subnormals included).
    x = np.array([1e-9, -1e-9, 3e-12, 1e-200, -2.2250738585072014e-308, 5e-324, -5e-324])
    np.testing.assert_array_equal(kernel_tanh(x), x)


def test_tanh_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e308, -1e308, 22.0, -19.5])
    out = kernel_tanh(x)
    np.testing.assert_array_equal(out[[2, 3, 5, 6, 7, 8]], [1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    assert out[0] == 0.0 and not np.signbit(out[0])
    assert out[1] == 0.0 and np.signbit(out[1])
    assert np.isnan(out[4])


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_step_kernel_forward_matches_the_numpy_network(activation):
    rng = np.random.default_rng(5)
    net = MLP((4, 16, 16, 3), activation)
    theta = net.init(rng)
    x = 3.0 * rng.standard_normal((8, 4))
    ours = mlp_forward_rows(x, theta, net.sizes_array, activation == "relu")
    ref, _ = net.forward(theta, x, keep_cache=False)
    np.testing.assert_allclose(ours, ref, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_step_kernel_forward_adds_in_the_declared_order(activation):
    # Each unit is b_o + h_0 W_0o + h_1 W_1o + ..., added left to right in float64 with no
    # fused multiply-add: the same bits as every earlier version of the kernel, so a
    # vectorized or reordered loop cannot change a run's actions unnoticed.
    from rl_adapters._kernels import tanh_into

    rng = np.random.default_rng(11)
    net = MLP((5, 9, 7, 3), activation)
    theta = net.init(rng) + 0.3 * rng.standard_normal(net.n_params)
    x = 2.0 * rng.standard_normal((4, 5))
    ours = mlp_forward_rows(x, theta, net.sizes_array, activation == "relu")
    h = x.copy()
    for layer, (W, b) in enumerate(net.unflatten(theta)):
        z = np.empty((h.shape[0], W.shape[1]))
        for i in range(h.shape[0]):
            for o in range(W.shape[1]):
                acc = float(b[o])
                for k in range(W.shape[0]):
                    acc = acc + float(h[i, k]) * float(W[k, o])
                z[i, o] = acc
        if layer < net.n_layers - 1:
            if activation == "relu":
                z = np.where(z > 0.0, z, 0.0)
            else:
                tanh_into(z.copy(), z)
        h = z
    assert ours.tobytes() == h.tobytes()
    # A strided parameter view (a caller's slice) gives the same outputs.
    spread = np.repeat(theta, 2)[::2]
    strided = mlp_forward_rows(x, spread, net.sizes_array, activation == "relu")
    assert strided.tobytes() == ours.tobytes()


def test_fused_step_kernels_equal_the_separate_calls_bitwise():
    from rl_adapters._kernels import (
        gaussian_act_rows,
        normalize_and_act_rows,
        record_step,
        rms_normalize_into,
        rms_update,
    )
    from rl_adapters.normalization import RewardScaler

    rng = np.random.default_rng(6)
    net = MLP((5, 16, 16, 2))
    theta = np.concatenate([net.init(rng), [-0.5, 0.3]])
    low, high = -np.ones(2), np.ones(2)
    raw, noise = 4.0 * rng.standard_normal((3, 5)), rng.standard_normal((3, 2))
    mean, var = rng.standard_normal(5), rng.uniform(0.5, 2.0, 5)
    fused = [np.empty((3, 5)), np.empty((3, 2)), np.empty((3, 2)), np.empty(3)]
    sep = [np.empty((3, 5)), np.empty((3, 2)), np.empty((3, 2)), np.empty(3)]
    m1, v1, m2, v2 = mean.copy(), var.copy(), mean.copy(), var.copy()
    c1 = normalize_and_act_rows(raw, m1, v1, 7.0, 1e-8, 10.0, fused[0][None], theta,
                                net.sizes_array, False, net.n_params, noise[None], low, high,
                                True, *(a[None] for a in fused[1:]), 0)
    c2 = rms_update(m2, v2, 7.0, raw)
    rms_normalize_into(raw, m2, v2, 1e-8, 10.0, sep[0])
    gaussian_act_rows(sep[0], theta, net.sizes_array, False, net.n_params, noise, low, high,
                      True, *sep[1:])
    assert c1 == c2
    for a, b in zip([m1, v1, *fused], [m2, v2, *sep], strict=True):
        np.testing.assert_array_equal(a, b)

    # After the env: the bookkeeping of Collector._collect's general path, then the scaler.
    reward = rng.standard_normal(3)
    terminated, truncated = np.array([False, True, False]), np.array([False, False, True])
    scaler = RewardScaler(3, gamma=0.99, clip=10.0)
    scaler.returns[:] = rng.standard_normal(3)
    returns = scaler.returns.copy()
    ep_return, ep_length = rng.standard_normal(3), np.array([3, 4, 5])
    outs = [np.empty(3), np.empty(3), np.zeros(3, dtype=bool), np.zeros(3, dtype=bool),
            np.zeros(3, dtype=bool)]
    ep_r, ep_l = ep_return.copy(), ep_length.copy()
    s_mean, s_var = np.zeros(1), np.ones(1)
    count, any_done = record_step(reward, terminated, truncated, ep_r, ep_l,
                                  *(a[None] for a in outs[:4]), 0, outs[4], True, returns,
                                  s_mean, s_var, 1e-4, 0.99, 10.0, 1e-8)
    done = terminated | truncated
    expected = scaler(reward, done)
    assert any_done and count == scaler.rms.count
    np.testing.assert_array_equal(outs[0], reward)
    np.testing.assert_array_equal(outs[1], expected)
    np.testing.assert_array_equal(outs[2], terminated)
    np.testing.assert_array_equal(outs[3], truncated)
    np.testing.assert_array_equal(outs[4], done)
    np.testing.assert_array_equal(ep_r, ep_return + reward)
    np.testing.assert_array_equal(ep_l, ep_length + 1)
    np.testing.assert_array_equal(returns, scaler.returns)
    np.testing.assert_array_equal(s_var, scaler.rms.var.reshape(-1))


@pytest.mark.parametrize(("nvec", "start", "rows"),
                         [((2,), (0,), 1), ((3,), (-1,), 2), ((2, 3, 4), (0, 5, -2), 8)])
def test_fused_categorical_act_equals_act_from_noise_bitwise(nvec, start, rows):
    # The rollout's one-call categorical step against the policy's own sampling path.
    from rl_adapters._kernels import categorical_act_rows
    from rl_adapters.policies import CategoricalPolicy

    rng = np.random.default_rng(sum(nvec) + rows)
    policy = CategoricalPolicy(4, nvec, (16, 16), start=start)
    # Larger-than-init logits, so that every category is picked somewhere.
    theta = 30.0 * policy.init_params(rng)
    bounds = np.cumsum((0, *policy.nvec)).astype(np.int64)
    for _ in range(20):
        obs = 3.0 * rng.standard_normal((rows, 4))
        noise = policy.draw_noise(rng, (rows,))
        want_actions = np.empty((rows, len(nvec)), dtype=np.int64)
        want_env, want_logp = policy.act_from_noise(theta, obs, noise, want_actions)
        actions = np.full((rows, len(nvec)), -99, dtype=np.int64)
        env_actions = np.full((rows, len(nvec)), -99, dtype=np.int64)
        logp = np.full(rows, np.nan)
        categorical_act_rows(obs, theta, policy.net.sizes_array, False, noise, bounds,
                             policy.start, actions, env_actions, logp)
        np.testing.assert_array_equal(actions, want_actions)
        np.testing.assert_array_equal(env_actions if policy.multi else env_actions[:, 0],
                                      want_env)
        np.testing.assert_array_equal(logp, want_logp)


@pytest.mark.parametrize(("env_id", "n_envs", "overrides"),
                         [("CartPole-v1", 2, {}), ("Acrobot-v1", 3, {"normalize_obs": True})])
def test_the_fused_categorical_rollout_is_the_general_one_bit_for_bit(monkeypatch, env_id,
                                                                     n_envs, overrides):
    import rl_adapters.rollout as rollout
    from rl_adapters import TRPO

    def run():
        agent = TRPO(env_id, seed=3, n_envs=n_envs, n_steps=64, **overrides)
        agent.learn(2 * 64 * n_envs)
        return agent

    fused = run()
    # The general path: the collector does not recognise the policy as categorical.
    monkeypatch.setattr(rollout, "CategoricalPolicy", type(None))
    general = run()
    assert_same_run(fused, general)
