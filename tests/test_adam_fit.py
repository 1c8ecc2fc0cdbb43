"""The compiled critic fit (``rl_adapters._kernels.adam_fit``) against float64 NumPy.

The kernel fuses passes, calls BLAS, contracts multiply-adds and sums in its own order, so
it equals the definition (NumPy's forward and reverse pass of :class:`~rl_adapters.mlp.MLP`,
then :class:`~rl_adapters.value.AdamState` steps) to rounding, not bit for bit: checked on
any layer sizes, batch sizes (dividing the number of rows or not, larger than it) and both
activations, and its minibatch gradient against central finite differences.

The float32 fit (``TRPOConfig.value_dtype="float32"``,
:func:`~rl_adapters._kernels.adam_fit_float32`: float32 passes, Adam steps on float64
parameters) equals the same float64 definition to float32 rounding, on the same shapes;
its float32 tanh is within 1 ulp of the correctly rounded one; the setting is checked,
reaches the agent and is saved in checkpoints.
"""

import re

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numba.typed import List
from scipy.optimize import minimize

from rl_adapters import TRPO, TRPOConfig
from rl_adapters._kernels import _fit_buffers, _fit_minibatch, mse_loss_grad, tanh32
from rl_adapters.value import ValueFunction


def reference_fit(vf: ValueFunction, obs, targets, rng, epochs, batch_size, lr, l2):
    """Shuffled minibatches, ``loss_and_grad`` (NumPy), one Adam step each, from ``vf``."""
    theta = vf.theta.copy()
    for _ in range(epochs):
        order = rng.permutation(len(obs))
        for start in range(0, len(obs), batch_size):
            idx = order[start : start + batch_size]
            _, grad = vf.loss_and_grad(theta, obs[idx], targets[idx], l2)
            vf.adam.step(theta, grad, lr)
    return theta


def problem(seed, obs_dim, hidden, activation, n):
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, obs_dim))
    targets = np.sin(2.0 * obs[:, 0]) + obs[:, -1] ** 2
    fast = ValueFunction(obs_dim, hidden, activation)
    fast.init(rng)
    ref = ValueFunction(obs_dim, hidden, activation)
    ref.theta = fast.theta.copy()
    return obs, targets, fast, ref


@given(obs_dim=st.integers(1, 5),
       hidden=st.lists(st.integers(1, 9), min_size=0, max_size=3).map(tuple),
       activation=st.sampled_from(["tanh", "relu"]),
       n=st.integers(1, 40), batch_size=st.integers(1, 50), epochs=st.integers(1, 3),
       l2=st.sampled_from([0.0, 1e-2]), seed=st.integers(0, 2**16))
def test_fit_equals_numpy_minibatch_adam_for_any_shapes(obs_dim, hidden, activation, n,
                                                        batch_size, epochs, l2, seed):
    obs, targets, fast, ref = problem(seed, obs_dim, hidden, activation, n)
    fast.fit(obs, targets, np.random.default_rng(seed), epochs=epochs, batch_size=batch_size,
             lr=1e-2, l2=l2)
    theta = reference_fit(ref, obs, targets, np.random.default_rng(seed), epochs, batch_size,
                          1e-2, l2)
    assert fast.adam.t == ref.adam.t == epochs * -(-n // min(batch_size, n))
    # Adam divides by sqrt(v): a parameter whose gradient is tiny can move by a relative
    # amount larger than the gradient's rounding, hence the absolute floor.
    np.testing.assert_allclose(fast.theta, theta, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(fast.adam.m, ref.adam.m, rtol=1e-7, atol=1e-13)
    np.testing.assert_allclose(fast.adam.v, ref.adam.v, rtol=1e-7, atol=1e-16)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_default_critic_shape_many_steps_stays_at_rounding_distance(activation):
    # The default critic (64, 64) on the Pendulum shape, 3 epochs of 8 minibatches of 128:
    # the differences of rounding do not grow into a different trajectory.
    obs, targets, fast, ref = problem(7, 3, (64, 64), activation, 1024)
    fast.fit(obs, targets, np.random.default_rng(8), epochs=3, batch_size=128, lr=1e-3)
    theta = reference_fit(ref, obs, targets, np.random.default_rng(8), 3, 128, 1e-3, 0.0)
    np.testing.assert_allclose(fast.theta, theta, rtol=1e-10, atol=1e-13)


def kernel_gradient(vf: ValueFunction, theta, obs, targets, idx, relu):
    """``_fit_minibatch``'s gradient of the minibatch ``idx``, buffers set up as adam_fit does."""
    sizes = vf.net.sizes_array
    offsets = np.concatenate([[0], np.cumsum(sizes[:-1] * sizes[1:] + sizes[1:])])
    acts, grads = _fit_buffers(len(idx), sizes, theta)
    w_t = List([np.empty((sizes[k + 1], sizes[k])) for k in range(len(sizes) - 1)])
    grad = np.full_like(theta, np.nan)  # every entry must be written
    _fit_minibatch(theta, grad, obs, targets, idx, offsets.astype(np.int64), sizes, relu,
                   List(acts), List(grads), w_t)
    return grad


@pytest.mark.parametrize("hidden", [(), (6,), (7, 5), (4, 6, 3)])
def test_minibatch_gradient_matches_finite_differences(hidden):
    rng = np.random.default_rng(11)
    obs = rng.standard_normal((30, 4))
    targets = rng.standard_normal(30)
    vf = ValueFunction(4, hidden, "tanh")
    vf.init(rng)
    idx = rng.permutation(30)[:13]
    grad = kernel_gradient(vf, vf.theta, obs, targets, idx, False)
    assert np.all(np.isfinite(grad))
    _, numpy_grad = vf.loss_and_grad(vf.theta, obs[idx], targets[idx])
    np.testing.assert_allclose(grad, numpy_grad, rtol=1e-12, atol=1e-15)
    for _ in range(3):
        v = rng.standard_normal(vf.theta.size)
        eps = 1e-6
        fd = (vf.loss_and_grad(vf.theta + eps * v, obs[idx], targets[idx])[0]
              - vf.loss_and_grad(vf.theta - eps * v, obs[idx], targets[idx])[0]) / (2 * eps)
        assert grad @ v == pytest.approx(fd, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_same_seed_same_bits(dtype):
    obs, targets, a, _ = problem(3, 17, (64, 64), "tanh", 300)
    b = ValueFunction(17, (64, 64))
    b.theta = a.theta.copy()
    for vf in (a, b):
        vf.fit(obs, targets, np.random.default_rng(5), epochs=4, batch_size=128, lr=1e-3,
               l2=1e-4, dtype=dtype)
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.adam.v, b.adam.v)


# ---------------------------------------------------------------- float32 passes
@numba.njit
def tanh32_of(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = tanh32(x[i])
    return out


def ulps_apart(a, b):
    """Distance in units in the last place of float32 (both finite, same sign or zero)."""
    return np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))


def test_float32_tanh_is_within_one_ulp_of_the_correctly_rounded_tanh():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-12.0, 12.0, 400_001), 3.0 * rng.standard_normal(200_000),
                        np.nextafter(np.float32(0.625), np.float32([0, 1])),
                        np.float32([9.0, 9.02, 10.0, 1e-30, 1e-45, 0.0])]).astype(np.float32)
    x = np.concatenate([x, -x])
    correctly_rounded = np.tanh(x.astype(np.float64)).astype(np.float32)
    got = tanh32_of(x)
    assert got.dtype == np.float32
    assert ulps_apart(got, correctly_rounded).max() <= 1


def test_float32_tanh_special_values():
    x = np.float32([np.inf, -np.inf, 0.0, -0.0, np.nan, 50.0])
    got = tanh32_of(x)
    np.testing.assert_array_equal(got[[0, 1, 5]], np.float32([1.0, -1.0, 1.0]))
    assert got[2] == 0.0 and not np.signbit(got[2]) and np.signbit(got[3])
    assert np.isnan(got[4])


@given(obs_dim=st.integers(1, 5),
       hidden=st.lists(st.integers(1, 9), min_size=0, max_size=3).map(tuple),
       activation=st.sampled_from(["tanh", "relu"]),
       n=st.integers(1, 40), batch_size=st.integers(1, 50), epochs=st.integers(1, 2),
       l2=st.sampled_from([0.0, 1e-2]), seed=st.integers(0, 2**16))
def test_float32_fit_equals_numpy_minibatch_adam_to_float32_rounding(
        obs_dim, hidden, activation, n, batch_size, epochs, l2, seed):
    obs, targets, fast, ref = problem(seed, obs_dim, hidden, activation, n)
    fast.fit(obs, targets, np.random.default_rng(seed), epochs=epochs, batch_size=batch_size,
             lr=1e-3, l2=l2, dtype="float32")
    theta = reference_fit(ref, obs, targets, np.random.default_rng(seed), epochs, batch_size,
                          1e-3, l2)
    assert fast.theta.dtype == fast.adam.m.dtype == fast.adam.v.dtype == np.float64
    assert fast.adam.t == ref.adam.t == epochs * -(-n // min(batch_size, n))
    # Adam's step is about lr * sign(g) whatever |g|: where a gradient entry is within its
    # float32 rounding of zero, the step may differ by up to lr (the absolute floor).
    np.testing.assert_allclose(fast.theta, theta, rtol=1e-4, atol=1e-3 * 1e-3)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_default_critic_shape_float32_fit_follows_the_float64_one(activation):
    # The default critic (64, 64) on the Pendulum shape, 3 epochs of 8 minibatches of 128:
    # float32 passes stay at float32 rounding of the float64 trajectory and fit as well.
    obs, targets, fast, ref = problem(7, 3, (64, 64), activation, 1024)
    before = ref.loss_and_grad(ref.theta, obs, targets)[0]
    fast.fit(obs, targets, np.random.default_rng(8), epochs=3, batch_size=128, lr=1e-3,
             dtype="float32")
    theta = reference_fit(ref, obs, targets, np.random.default_rng(8), 3, 128, 1e-3, 0.0)
    np.testing.assert_allclose(fast.theta, theta, rtol=1e-4, atol=1e-6)
    after32 = ref.loss_and_grad(fast.theta, obs, targets)[0]
    after64 = ref.loss_and_grad(theta, obs, targets)[0]
    assert after64 < 0.9 * before
    assert after32 == pytest.approx(after64, rel=1e-4)


@pytest.mark.parametrize("hidden", [(), (6,), (7, 5), (4, 6, 3)])
@pytest.mark.parametrize("relu", [False, True])
def test_float32_minibatch_gradient_matches_numpy_to_float32_rounding(hidden, relu):
    rng = np.random.default_rng(11)
    obs = rng.standard_normal((30, 4))
    targets = rng.standard_normal(30)
    vf = ValueFunction(4, hidden, "relu" if relu else "tanh")
    vf.init(rng)
    idx = rng.permutation(30)[:13]
    sizes = vf.net.sizes_array
    offsets = np.concatenate([[0], np.cumsum(sizes[:-1] * sizes[1:] + sizes[1:])])
    theta32 = vf.theta.astype(np.float32)
    acts, grads = _fit_buffers(len(idx), sizes, theta32)
    w_t = List([np.empty((sizes[k + 1], sizes[k]), np.float32) for k in range(len(sizes) - 1)])
    grad = np.full_like(theta32, np.nan)  # every entry must be written
    _fit_minibatch(theta32, grad, obs.astype(np.float32), targets, idx,
                   offsets.astype(np.int64), sizes, relu, List(acts), List(grads), w_t)
    # The float64 gradient at the float32-rounded parameters: what float32 passes compute.
    _, numpy_grad = vf.loss_and_grad(theta32.astype(np.float64), obs[idx], targets[idx])
    scale = np.max(np.abs(numpy_grad))
    np.testing.assert_allclose(grad, numpy_grad, rtol=1e-5, atol=1e-6 * scale)


def test_a_bad_value_dtype_is_a_clear_error():
    with pytest.raises(ValueError, match=re.escape(
            "config value_dtype='float16': must be one of float32, float64")):
        TRPOConfig(value_dtype="float16")
    with pytest.raises(ValueError, match=re.escape("config value_dtype='f32'")):
        TRPOConfig.for_env("Pendulum-v1", value_dtype="f32")
    obs, targets, vf, _ = problem(0, 2, (3,), "tanh", 8)
    with pytest.raises(ValueError, match=re.escape(
            "dtype='half': must be one of float64, float32")):
        vf.fit(obs, targets, np.random.default_rng(0), dtype="half")
    assert TRPOConfig().value_dtype == "float64"


ADAM = {"n_steps": 64, "n_envs": 1, "value_optimizer": "adam", "value_epochs": 2,
        "value_batch_size": 32}


def test_the_agent_fits_in_float32_and_a_checkpoint_keeps_it(tmp_path):
    steps = ADAM["n_envs"] * ADAM["n_steps"]
    f64 = TRPO("CartPole-v1", seed=1, **ADAM).learn(2 * steps)
    straight = TRPO("CartPole-v1", seed=1, value_dtype="float32", **ADAM).learn(3 * steps)
    first = TRPO("CartPole-v1", seed=1, value_dtype="float32", **ADAM).learn(2 * steps)
    # The float32 fit is the one the agent ran: close to the float64 one, not its bits.
    assert not np.array_equal(first.value.theta, f64.value.theta)
    np.testing.assert_allclose(first.value.theta, f64.value.theta, rtol=1e-3, atol=1e-5)
    first.save(str(tmp_path / "ckpt.npz"))
    resumed = TRPO.load(str(tmp_path / "ckpt.npz"))
    assert resumed.config.value_dtype == "float32"
    assert resumed.config == first.config
    resumed.learn(steps)
    np.testing.assert_array_equal(resumed.value.theta, straight.value.theta)
    np.testing.assert_array_equal(resumed.theta, straight.theta)


# ---------------------------------------------------------------- the L-BFGS objective
@given(obs_dim=st.integers(1, 5),
       hidden=st.lists(st.integers(1, 9), min_size=0, max_size=3).map(tuple),
       activation=st.sampled_from(["tanh", "relu"]), n=st.integers(1, 40),
       l2=st.sampled_from([0.0, 1e-2]), seed=st.integers(0, 2**16))
def test_lbfgs_objective_equals_numpy_loss_and_grad(obs_dim, hidden, activation, n, l2,
                                                     seed):
    obs, targets, vf, _ = problem(seed, obs_dim, hidden, activation, n)
    theta = vf.theta + 0.1 * np.random.default_rng(seed).standard_normal(vf.theta.shape)
    loss, grad = vf.loss_and_grad(theta, obs, targets, l2)
    # The kernel's float64 mode (the float64 fit itself keeps NumPy's objective, bit for bit).
    loss64, grad64 = mse_loss_grad(theta, obs, targets, vf.net.sizes_array,
                                   activation == "relu", l2, vf._weight_mask, theta,
                                   np.empty_like(theta), False)
    assert grad64.dtype == np.float64 and grad64.shape == grad.shape
    assert loss64 == pytest.approx(loss, rel=1e-12, abs=1e-15)
    np.testing.assert_allclose(grad64, grad, rtol=1e-10, atol=1e-13 * max(1.0, abs(grad).max()))
    # float32 passes: the float64 definition at the float32-rounded parameters, to float32
    # rounding (the loss and L2 term in float64 at the float64 parameters).
    loss32, grad32 = vf._lbfgs_objective(obs, targets, l2, "float32")(theta)
    assert grad32.dtype == np.float64
    rounded = theta.astype(np.float32).astype(np.float64)
    data_loss, data_grad = vf.loss_and_grad(rounded, obs, targets)
    penalty = l2 * float(np.sum(np.where(vf._weight_mask, theta, 0.0) ** 2))
    assert loss32 == pytest.approx(data_loss + penalty, rel=1e-5, abs=1e-6)
    scale = max(1.0, np.abs(data_grad).max())
    np.testing.assert_allclose(grad32 - 2 * l2 * np.where(vf._weight_mask, theta, 0.0),
                               data_grad, rtol=1e-4, atol=1e-5 * scale)


def test_lbfgs_objective_returns_a_new_gradient_each_call():
    # SciPy keeps the previous gradient while it evaluates the next point.
    obs, targets, vf, _ = problem(3, 3, (8, 8), "tanh", 50)
    for dtype in ("float64", "float32"):
        objective = vf._lbfgs_objective(obs, targets, 0.0, dtype)
        _, g1 = objective(vf.theta)
        kept = g1.copy()
        _, g2 = objective(vf.theta + 0.5)
        assert g1 is not g2
        np.testing.assert_array_equal(g1, kept)


def test_the_float64_lbfgs_fit_is_numpy_lbfgs_bit_for_bit():
    obs, targets, fast, ref = problem(4, 4, (16, 16), "tanh", 200)
    res = minimize(ref.loss_and_grad, ref.theta, args=(obs, targets, 0.01), jac=True,
                   method="L-BFGS-B", options={"maxiter": 10})
    fast.fit(obs, targets, np.random.default_rng(0), optimizer="lbfgs", lbfgs_iters=10,
             l2=0.01, dtype="float64")
    np.testing.assert_array_equal(fast.theta, res.x)


def test_float32_lbfgs_fit_on_the_default_critic_fits_like_numpy_lbfgs():
    # The CartPole shape (1024 x 4, critic 64 x 64), 25 iterations: the float32 objective
    # fits as well as SciPy's L-BFGS-B on the float64 NumPy loss_and_grad.
    obs, targets, fast, ref = problem(5, 4, (64, 64), "tanh", 1024)
    before = ref.loss_and_grad(ref.theta, obs, targets)[0]
    res = minimize(ref.loss_and_grad, ref.theta, args=(obs, targets), jac=True,
                   method="L-BFGS-B", options={"maxiter": 25})
    reported = fast.fit(obs, targets, np.random.default_rng(0), optimizer="lbfgs",
                        lbfgs_iters=25, dtype="float32")
    assert reported == pytest.approx(before, rel=1e-12)
    after = ref.loss_and_grad(fast.theta, obs, targets)[0]
    assert after < 0.5 * before
    assert after == pytest.approx(res.fun, rel=0.05)
