"""The compiled critic fit (``rl_adapters._kernels.adam_fit``) against float64 NumPy.

The kernel fuses passes, calls BLAS, contracts multiply-adds and sums in its own order, so
it equals the definition (NumPy's forward and reverse pass of :class:`~rl_adapters.mlp.MLP`,
then :class:`~rl_adapters.value.AdamState` steps) to rounding, not bit for bit: checked on
any layer sizes, batch sizes (dividing the number of rows or not, larger than it) and both
activations, and its minibatch gradient against central finite differences.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numba.typed import List

from rl_adapters._kernels import _fit_buffers, _fit_minibatch
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
    acts, grads = _fit_buffers(len(idx), sizes)
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


def test_same_seed_same_bits():
    obs, targets, a, _ = problem(3, 17, (64, 64), "tanh", 300)
    b = ValueFunction(17, (64, 64))
    b.theta = a.theta.copy()
    for vf in (a, b):
        vf.fit(obs, targets, np.random.default_rng(5), epochs=4, batch_size=128, lr=1e-3,
               l2=1e-4)
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.adam.v, b.adam.v)
