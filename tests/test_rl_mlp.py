"""MLP passes against finite differences; init and config plumbing."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rl_adapters.mlp import MLP, _fused_passes, orthogonal
from rl_adapters.normalization import RunningMeanStd

sizes_st = st.lists(st.integers(1, 5), min_size=2, max_size=4)


def _fd_jacobian(net, theta, x, eps=1e-6):
    """Central finite differences of the outputs w.r.t. every parameter: (N, out, P)."""
    cols = []
    for k in range(theta.size):
        e = np.zeros_like(theta)
        e[k] = eps
        yp, _ = net.forward(theta + e, x, keep_cache=False)
        ym, _ = net.forward(theta - e, x, keep_cache=False)
        cols.append((yp - ym) / (2 * eps))
    return np.stack(cols, axis=-1)


@settings(max_examples=15)
@given(sizes=sizes_st, act=st.sampled_from(["tanh", "relu"]), seed=st.integers(0, 2**16))
def test_jvp_and_vjp_match_finite_differences(sizes, act, seed):
    rng = np.random.default_rng(seed)
    net = MLP(sizes, act)
    theta = net.init(rng) + 0.1 * rng.standard_normal(net.n_params)
    x = rng.standard_normal((4, sizes[0]))
    if act == "relu":
        # Keep pre-activations away from the kink so differences are smooth.
        for _, b in net.unflatten(theta):
            b += 0.5 * np.sign(b + 1e-3)
    J = _fd_jacobian(net, theta, x)
    _, cache = net.forward(theta, x)
    v = rng.standard_normal(net.n_params)
    np.testing.assert_allclose(net.jvp(theta, cache, v), J @ v, rtol=1e-5, atol=1e-6)
    g = rng.standard_normal((4, sizes[-1]))
    np.testing.assert_allclose(net.vjp(theta, cache, g), np.einsum("no,nop->p", g, J),
                               rtol=1e-5, atol=1e-6)


def _numpy_jvp(net, theta, cache, v):
    """MLP.jvp as plain NumPy statements (the order the compiled steps must keep)."""
    dh = None
    for i, ((W, _), (dW, db)) in enumerate(zip(net.unflatten(theta), net.unflatten(v),
                                                   strict=True)):
        dz = cache.inputs[i] @ dW
        if dh is not None:
            dz += dh @ W
        dz += db
        if i == net.n_layers - 1:
            return dz
        dz *= cache.derivs[i]
        dh = dz


def _numpy_vjp(net, theta, cache, g):
    grad = np.empty(net.n_params, dtype=g.dtype)
    layers, grads = net.unflatten(theta), net.unflatten(grad)
    for i in range(net.n_layers - 1, -1, -1):
        np.matmul(cache.inputs[i].T, g, out=grads[i][0])
        np.sum(g, axis=0, out=grads[i][1])
        if i > 0:
            g = g @ layers[i][0].T
            g *= cache.derivs[i - 1]
    return grad


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


@settings(max_examples=30)
@given(sizes=st.lists(st.integers(1, 70), min_size=2, max_size=4),
       act=st.sampled_from(["tanh", "relu"]), rows=st.integers(0, 300),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_compiled_jvp_and_vjp_give_numpys_bits(sizes, act, rows, dtype, seed):
    # MLP.jvp and MLP.vjp run their elementwise steps compiled (rl_adapters._kernels) for
    # one-dtype, C-ordered arrays: the same float operations in the same order, so every
    # bit of a Fisher product, and of a run, is what the NumPy statements give.
    rng = np.random.default_rng(seed)
    net = MLP(sizes, act)
    theta = (net.init(rng) + 0.1 * rng.standard_normal(net.n_params)).astype(dtype)
    x = rng.standard_normal((rows, sizes[0])).astype(dtype)
    _, cache = net.forward(theta, x)
    v = rng.standard_normal(net.n_params).astype(dtype)
    g = (rng.standard_normal((rows, sizes[-1])) * 10.0 ** rng.integers(-3, 4)).astype(dtype)
    g[:, 0] = -0.0  # a column of negative zeros: NumPy's sums start from +0, so must ours
    # The compiled steps run (in vjp only where no layer has one unit, see MLP.vjp).
    assert _fused_passes(g, (theta,), cache) is not None
    assert _bits(net.jvp(theta, cache, v)).tobytes() == _bits(
        _numpy_jvp(net, theta, cache, v)).tobytes()
    assert _bits(net.vjp(theta, cache, g)).tobytes() == _bits(
        _numpy_vjp(net, theta, cache, g)).tobytes()
    # Where they would not (a Fortran-ordered cotangent, whose rows NumPy sums pairwise;
    # mixed dtypes) the NumPy statements run.
    g_f = np.asfortranarray(g)
    assert _bits(net.vjp(theta, cache, g_f)).tobytes() == _bits(
        _numpy_vjp(net, theta, cache, g_f)).tobytes()
    g64 = g.astype(np.float64)
    assert _bits(net.vjp(theta, cache, g64)).tobytes() == _bits(
        _numpy_vjp(net, theta, cache, g64)).tobytes()


def test_forward_matches_explicit_formula():
    rng = np.random.default_rng(0)
    net = MLP((3, 4, 2))
    theta = net.init(rng)
    (W0, b0), (W1, b1) = net.unflatten(theta)
    x = rng.standard_normal((5, 3))
    y, _ = net.forward(theta, x)
    np.testing.assert_allclose(y, np.tanh(x @ W0 + b0) @ W1 + b1)


def test_unflatten_views_follow_a_new_vector():
    net = MLP((2, 2))
    a, b = np.zeros(net.n_params), np.ones(net.n_params)
    assert np.all(net.unflatten(a)[0][0] == 0)
    assert np.all(net.unflatten(b)[0][0] == 1)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4)])
def test_orthogonal_init_has_orthonormal_rows_or_columns(shape):
    W = orthogonal(np.random.default_rng(1), shape, gain=2.0)
    small = min(shape)
    gram = W.T @ W if shape[0] >= shape[1] else W @ W.T
    np.testing.assert_allclose(gram, 4.0 * np.eye(small), atol=1e-12)


@pytest.mark.parametrize("bad", [(3,), (3, 0), ()])
def test_mlp_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="sizes"):
        MLP(bad)


def test_running_mean_std_matches_numpy_over_any_split():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 3)) * [1.0, 10.0, 0.1] + [5.0, -2.0, 0.0]
    rms = RunningMeanStd((3,))
    for chunk in np.array_split(x, [1, 7, 30]):
        rms.update(chunk)
    # Exact pooled moments of the prior (pseudo-count 1e-4, mean 0, var 1) and the data.
    c0 = 1e-4
    total = c0 + len(x)
    mean = x.sum(0) / total
    var = (c0 * (1.0 + mean**2) + ((x - mean) ** 2).sum(0)) / total
    np.testing.assert_allclose(rms.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(rms.var, var, rtol=1e-12)
    y = rms.normalize(x, clip=10.0)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-4)
