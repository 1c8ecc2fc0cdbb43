"""The fused CG kernels (trustregion.kernels.cg) against the unfused loops, bit for bit.

float64 and complex128 solves without a preconditioner run one Numba kernel per iteration
whose inner products are NumPy's own BLAS calls. The unfused loops are still there (for
float32, complex64, preconditioned solves, and wherever NumPy's BLAS is not found), so the
fused path is compared with them, solve by solve: every output the TRPO agent's training
depends on must be the same bits.
"""

import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trustregion as tr
from trustregion import Status
from trustregion.kernels import cg as kc

pytestmark = pytest.mark.skipif(
    not kc.numpy_blas_found(), reason="NumPy's BLAS dot products not found: no fused path"
)


def test_numpy_blas_is_found_with_numpys_own_openblas():
    # NumPy's wheels are built with scipy-openblas: there the fused path must be on (this is
    # what the skip above would otherwise hide)
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    if blas.get("name") != "scipy-openblas":
        pytest.skip(f"NumPy built with {blas.get('name')}")
    assert kc.numpy_blas_found()


@pytest.mark.parametrize("n", [*range(1, 70), 127, 128, 129, 255, 256, 257, 1000, 1001, 4097])
def test_kernel_dot_products_are_numpys_bit_for_bit(n):
    rng = np.random.default_rng(n)
    scale = np.exp(rng.uniform(-30.0, 30.0, (4, n)))
    a, b, c, d = rng.standard_normal((4, n)) * scale
    assert kc.numpy_ddot(a, b) == float(a.dot(b))
    assert kc.numpy_ddot(a, a) == float(a.dot(a))
    u, w = a + 1j * b, c + 1j * d
    assert kc.numpy_zdotc(u, w) == complex(np.vdot(u, w))
    assert kc.numpy_zdotc(u, u) == complex(np.vdot(u, u))


def _solve_both(*args, **kwargs):
    """The same solve by the fused path and by the unfused loops, with callback iterates."""
    results = []
    try:
        for found in (True, False):
            kc._FOUND = found  # what numpy_blas_found() answers: False, the unfused loops
            iterates: list[np.ndarray] = []
            res = tr.cg(*args, callback=lambda xk, it=iterates: it.append(xk.copy()), **kwargs)
            results.append((res, iterates))
    finally:
        kc._FOUND = None  # probed again on next use
    return results


def _assert_bitwise_equal(fused, unfused):
    (a, its_a), (b, its_b) = fused, unfused
    assert (a.status, a.nit, a.n_matvec) == (b.status, b.nit, b.n_matvec)
    for name in ("x", "residual_history", "lanczos_alphas", "lanczos_rhos"):
        u, w = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert u.dtype == w.dtype and u.tobytes() == w.tobytes(), name
    assert np.float64(a.residual_norm).tobytes() == np.float64(b.residual_norm).tobytes()
    assert len(its_a) == len(its_b)
    assert all(u.tobytes() == w.tobytes() for u, w in zip(its_a, its_b, strict=True))
    assert (a.direction is None) == (b.direction is None)
    if a.direction is not None:
        assert a.direction.tobytes() == b.direction.tobytes()
        assert np.float64(a.curvature).tobytes() == np.float64(b.curvature).tobytes()
    sa, sb = a.spectrum, b.spectrum
    assert (sa.eig_min, sa.eig_max, sa.condition) == (sb.eig_min, sb.eig_max, sb.condition)
    assert sa.ritz_values.tobytes() == sb.ritz_values.tobytes()
    assert a.message == b.message


def _problem(n, dtype, kind, seed):
    rng = np.random.default_rng(seed)
    complex_ = np.dtype(dtype).kind == "c"
    b = rng.standard_normal(n) + (1j * rng.standard_normal(n) if complex_ else 0.0)
    if kind == "dense":
        Q = rng.standard_normal((n, n)) + (1j * rng.standard_normal((n, n)) if complex_ else 0)
        return (Q @ Q.conj().T / n + 0.05 * np.eye(n)).astype(dtype), b.astype(dtype)
    d = rng.uniform(0.5, 80.0, n).astype(dtype)
    if kind == "indefinite":
        d[rng.integers(n)] *= -1.0
    return (lambda v: d * v), b.astype(dtype)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    dtype=st.sampled_from([np.float64, np.complex128, np.float32, np.complex64]),
    kind=st.sampled_from(["diagonal", "dense", "indefinite"]),
    damping=st.sampled_from([0.0, 0.3]),
    warm=st.booleans(),
    maxiter=st.sampled_from([None, 1, 2, 5]),
    seed=st.integers(0, 2**32 - 1),
)
def test_fused_solves_are_the_unfused_bit_for_bit(n, dtype, kind, damping, warm, maxiter, seed):
    A, b = _problem(n, dtype, kind, seed)
    x0 = np.random.default_rng(seed + 1).standard_normal(n).astype(dtype) if warm else None
    fused, unfused = _solve_both(
        A, b, x0=x0, rtol=1e-10, damping=damping, maxiter=maxiter
    )
    _assert_bitwise_equal(fused, unfused)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 31, 64, 100, 513, 1000, 2000])
def test_fused_full_runs_are_the_unfused_bit_for_bit(n, dtype):
    # rtol = 0: every iteration up to the limit, far into the rounding floor
    A, b = _problem(n, dtype, "diagonal", n)
    fused, unfused = _solve_both(A, b, rtol=0.0, maxiter=min(3 * n, 400))
    _assert_bitwise_equal(fused, unfused)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("scale", [2.0**-700, 2.0**-300, 2.0**300, 2.0**700])
def test_fused_rescaled_problems_are_the_unfused_bit_for_bit(dtype, scale):
    # far from unit scale the first iteration's checks fail and the general code rescales
    A, b = _problem(40, dtype, "dense", 3)
    for operator, rhs in ((A * scale, b), (A, b * scale), (A * scale, b * scale)):
        fused, unfused = _solve_both(operator, rhs, rtol=1e-9)
        _assert_bitwise_equal(fused, unfused)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_strided_and_foreign_operator_outputs(dtype):
    # a strided output (ndarray.dot reads it with its strides: the unfused loop takes over),
    # a float32 or list output (converted), and a read-only one
    A, b = _problem(50, dtype, "dense", 5)
    outputs = [
        lambda v: np.repeat(A @ v, 2)[::2],
        lambda v: (A @ v).astype(np.complex64 if np.dtype(dtype).kind == "c" else np.float32),
        lambda v: list(A @ v),
        lambda v: np.frombuffer((A @ v).tobytes(), dtype=dtype),
        # types the strict step kernel refuses (TypeError), checked and copied instead
        lambda v: (A @ v).astype(np.dtype(dtype).newbyteorder(">")),
        lambda v: np.frombuffer(b"x" + (A @ v).tobytes(), dtype=dtype, offset=1),
        lambda v: (A @ v)[:, None],
    ]
    for matvec in outputs:
        for damping in (0.0, 0.1):
            fused, unfused = _solve_both(matvec, b, rtol=1e-10, damping=damping)
            _assert_bitwise_equal(fused, unfused)
            # (an output rounded to float32 cannot give a true residual b - A x within
            # rtol = 1e-10: the recurrence residual meets it, the true one stagnates near
            # float32's rounding, which cg reports instead of a success)
            expected = Status.STAGNATED if matvec is outputs[1] else Status.CONVERGED
            assert fused[0].status is expected


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_an_output_of_the_wrong_length_later_is_an_error(dtype):
    # the step kernel takes q unchecked and refuses a vector of the wrong length itself
    A, b = _problem(20, dtype, "dense", 3)
    calls = [0]

    def matvec(v):
        calls[0] += 1
        return A @ v if calls[0] < 4 else (A @ v)[:-1]

    with pytest.raises(ValueError, match=r"A returned shape \(19,\), expected \(20,\)"):
        tr.cg(matvec, b, rtol=0.0)
    assert calls[0] == 4


def test_the_step_kernels_refuse_other_types_instead_of_compiling_them():
    for complex_ in (False, True):
        kernel = kc.strict_step_kernel(complex_)
        dtype = np.complex128 if complex_ else np.float64
        work, state, record = np.zeros((3, 4), dtype), np.zeros(kc.STATE_SIZE), np.zeros(9)
        before = len(kernel.signatures)
        for q in (np.zeros(8, dtype)[::2], np.zeros(4, np.float32), [0.0] * 4):
            with pytest.raises(TypeError):
                kernel(work, q, state, record)
        assert len(kernel.signatures) == before == 1
        assert kernel(work, np.zeros(5, dtype), state, record) == kc.WRONG_LENGTH


def test_non_hermitian_after_the_first_iteration_is_the_unfused():
    # a Hermitian first step, then an operator that is not: the kernel hands the check back
    rng = np.random.default_rng(6)
    n = 30
    H = np.diag(rng.uniform(1.0, 10.0, n)).astype(np.complex128)
    S = 1j * rng.standard_normal((n, n))
    calls = [0]

    def matvec(v):
        calls[0] += 1
        return H @ v + (S @ v if calls[0] % 2 == 0 else 0.0)

    for _ in range(2):
        calls[0] = 0
        fused, unfused = _solve_both(matvec, rng.standard_normal(n) + 0j)
        _assert_bitwise_equal(fused, unfused)
    assert fused[0].status is Status.NON_REAL_CURVATURE


def test_the_fused_kernels_are_the_ones_running(monkeypatch):
    # one step kernel per iteration (300, the first with its scale checks), and once more at
    # each of the two times the record of step lengths and residual norms is full and grows
    # (after 128 and 256 iterations); the separate first-iteration kernels are not called
    calls = dict.fromkeys(
        ["cg_iteration_real", "cg_step_real", "cg_iteration_complex", "cg_step_complex"], 0
    )
    for name in calls:
        kernel = getattr(kc, name)

        def counted(*args, _kernel=kernel, _name=name):
            calls[_name] += 1
            return _kernel(*args)

        monkeypatch.setattr(kc, name, counted)
    # (the step kernels through the strict dispatch trustregion.cg asks for)
    steps = {False: kc.cg_step_real, True: kc.cg_step_complex}
    monkeypatch.setattr(kc, "strict_step_kernel", steps.get)
    A, b = _problem(200, np.float64, "diagonal", 0)
    res = tr.cg(A, b, rtol=0.0, maxiter=300)
    assert res.nit == 300 and res.residual_history.shape == (301,)
    assert calls == dict(cg_iteration_real=0, cg_step_real=302, cg_iteration_complex=0,
                         cg_step_complex=0)
    A, b = _problem(20, np.complex128, "diagonal", 0)
    tr.cg(A, b, rtol=0.0, maxiter=10)
    assert calls["cg_iteration_complex"] == 0 and calls["cg_step_complex"] == 10


def _assert_same_spectrum(eager, lazy):
    se, sl = eager.spectrum, lazy.spectrum
    assert (se.eig_min, se.eig_max, se.condition) == (sl.eig_min, sl.eig_max, sl.condition)
    assert se.lanczos_kept == sl.lanczos_kept and se.scale == sl.scale
    assert se.ritz_values.tobytes() == sl.ritz_values.tobytes()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 120),
    dtype=st.sampled_from([np.float64, np.complex128]),
    kind=st.sampled_from(["diagonal", "dense", "indefinite"]),
    damping=st.sampled_from([0.0, 0.3]),
    maxiter=st.sampled_from([None, 1, 2, 5, 30]),
    rtol=st.sampled_from([0.0, 1e-10]),
    seed=st.integers(0, 2**32 - 1),
)
def test_spectrum_found_by_the_last_kernel_call_is_the_one_found_after(
    n, dtype, kind, damping, maxiter, rtol, seed
):
    # spectrum=True: the fused loop's last kernel call finds the extreme Ritz values; the
    # lazy spectrum runs the same kernel on the result's record after the solve: the same bits
    A, b = _problem(n, dtype, kind, seed)
    eager = tr.cg(A, b, rtol=rtol, damping=damping, maxiter=maxiter, spectrum=True)
    lazy = tr.cg(A, b, rtol=rtol, damping=damping, maxiter=maxiter)
    assert "spectrum" in eager.__dict__ and "spectrum" not in lazy.__dict__
    assert eager.x.tobytes() == lazy.x.tobytes() and eager.nit == lazy.nit
    _assert_same_spectrum(eager, lazy)
    # and the unfused loops' eager spectrum (found after the solve) is the same too
    fused, unfused = _solve_both(A, b, rtol=rtol, damping=damping, maxiter=maxiter,
                                 spectrum=True)
    _assert_bitwise_equal(fused, unfused)
    _assert_same_spectrum(fused[0], unfused[0])


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("scale", [1.0, 2.0**-700, 2.0**700])
def test_spectrum_is_found_in_the_kernel_without_a_call_of_its_own(monkeypatch, dtype, scale):
    import sys

    core_cg = sys.modules["trustregion.core.cg"]
    calls = [0]
    kernel = core_cg._k.cg_spectrum_extremes

    def counted(*args):
        calls[0] += 1
        return kernel(*args)

    monkeypatch.setattr(core_cg._k, "cg_spectrum_extremes", counted)
    A, b = _problem(40, dtype, "dense", 8)
    res = tr.cg(A * scale, b, rtol=0.0, maxiter=60, spectrum=True)
    assert res.nit == 60 and calls[0] == 0  # found by the fused loop's last kernel call
    assert res.spectrum.lanczos_kept < 60  # (cut at the rounding floor)
    true = np.linalg.eigvalsh(A * scale)
    assert true[0] * (1 - 1e-9) <= res.spectrum.eig_min <= res.spectrum.eig_max
    assert res.spectrum.eig_max <= true[-1] * (1 + 1e-9)
    np.testing.assert_allclose([res.spectrum.eig_min, res.spectrum.eig_max],
                               true[[0, -1]], rtol=1e-8)
    monkeypatch.undo()
    lazy = tr.cg(A * scale, b, rtol=0.0, maxiter=60)
    _assert_same_spectrum(res, lazy)


class _FreezingKernel:
    """A stand-in for a Numba dispatcher with its freeze: ``compile`` after
    ``disable_compile`` raises, as Numba's "compilation disabled" does. Compiling takes a
    while, so that threads asking at once meet while it runs."""

    def __init__(self):
        self.compiles, self.frozen = 0, False
        self._lock = threading.Lock()

    def compile(self, signature):
        with self._lock:
            if self.frozen:
                raise RuntimeError("compilation disabled")
            self.compiles += 1
            time.sleep(0.05)

    def disable_compile(self):
        self.frozen = True


def test_threads_starting_their_first_solve_at_once_share_one_compiled_kernel(monkeypatch):
    # the TRPO agent's policy step and trust-region critic start their first CG together
    stub = _FreezingKernel()
    monkeypatch.setattr(kc, "cg_step_real", stub)
    monkeypatch.setattr(kc, "_STRICT", {})
    n_threads = 8
    start = threading.Barrier(n_threads)
    got, errors = [], []

    def first_solve():
        start.wait()
        try:
            got.append(kc.strict_step_kernel(False))
        except Exception as exc:  # whatever a thread met, reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_solve) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert stub.compiles == 1 and stub.frozen
    assert len(got) == n_threads and all(k is stub for k in got)
