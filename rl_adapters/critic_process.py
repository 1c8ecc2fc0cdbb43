"""The critic's L-BFGS fit in a Python process of its own, beside the rollout.

With ``TRPOConfig.parallel_update`` the critic's fit of an update runs on a second thread
while the policy steps and the next rollout collects (:meth:`rl_adapters.TRPO.learn`). A
minibatch Adam fit is one compiled call that releases the GIL, so that thread really runs
beside the rollout. SciPy's L-BFGS-B is not: its driver is Python, and each evaluation of
the loss is a dozen NumPy operations on 1024 x 64 arrays, each of which needs the GIL
between its BLAS calls, while a classic-control rollout is Python (the environments' own
``step``) that holds the GIL almost all the time. So the fit waited for the rollout and the
rollout for the fit: on CartPole-v1 the critic took 4.0 s of CPU in 5.8 s of wall clock, and
the run's wall clock no less than its CPU time.

:class:`CriticProcess` runs the same fit (:meth:`ValueFunction.fit`, the same NumPy and SciPy
code with the same BLAS thread count, so the same bits) in a child interpreter started with
``python -m rl_adapters.critic_process``, which has a GIL of its own. The update's thread
sends it the critic's parameters and the batch (pickled over a pipe: about 80 KB for a
CartPole batch) and waits for the new parameters with the GIL released. The child holds no
state between fits (L-BFGS starts afresh every update), so nothing of it goes into a
checkpoint, and losing it loses nothing: if it dies or fails, the fit runs in the agent's
own process from then on (the same bits, slower), with a warning that says so.

A subprocess rather than :mod:`multiprocessing`: a spawned or forkserver child imports the
user's ``__main__`` module, which a training script without an ``if __name__ ==
"__main__"`` guard would run again; this child imports only NumPy, SciPy and this package.
It runs on POSIX systems only (:func:`available`): every exchange with it has a deadline,
and Windows cannot wait on a pipe with one. Elsewhere the fit stays on the agent's thread.
"""

from __future__ import annotations

import math
import os
import pickle
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
import weakref
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["CriticProcess", "CriticProcessWarning", "available"]

# One framed message each way per fit (8-byte little-endian length, then a pickle):
# ("fit", theta, obs, targets, l2, lbfgs_iters, dtype) or ("stop",) to the child; ("ok",
# theta, loss_before, mse_after) or ("error", text) back, and ("stopped", its peak RSS in
# MiB or None) before it exits.
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_HEADER = struct.Struct("<Q")

#: A fit the worker has not taken and answered within this many seconds, or 20 times its
#: slowest fit so far if longer, counts as a hung worker: it is killed and the fit done here.
MIN_PATIENCE = 120.0


class CriticProcessWarning(RuntimeWarning):
    """The critic's worker process failed; its fits continue in this process."""


def available() -> bool:
    """Whether this interpreter can run the worker: POSIX (its pipes are waited on with a
    deadline, which Windows cannot do on pipes) and a Python to start (not a frozen app,
    whose executable is the app itself)."""
    return os.name == "posix" and bool(sys.executable) and not getattr(sys, "frozen", False)


class CriticProcess:
    """A child process fitting an L-BFGS critic of fixed layout (see the module docstring).

    Parameters
    ----------
    sizes : tuple of int
        The critic network's layer sizes ``(obs_dim, *hidden, 1)``.
    activation : str
        Its hidden activation.
    blas_threads : int
        The BLAS thread count the child computes with (the agent's ``blas_threads``: a
        different count could sum in a different order).

    Notes
    -----
    Every exchange with the child has a deadline (:data:`MIN_PATIENCE`), sending as well as
    receiving: a child that stops reading a batch larger than the pipe's buffer cannot
    hang the agent either. Any failure (the child cannot start, dies, raises, hangs, or
    garbles its answer) kills it and makes :meth:`fit` return None from then on, with one
    :class:`CriticProcessWarning`.
    """

    def __init__(self, sizes: tuple[int, ...], activation: str, blas_threads: int) -> None:
        self.sizes = tuple(int(s) for s in sizes)
        self.activation = activation
        self.blas_threads = int(blas_threads)
        self.failed: str | None = None  # why the child is gone, once it is
        self.peak_rss_mib: float | None = None  # the child's, after close()
        self.cpu_seconds: float | None = None
        self._lock = threading.Lock()  # one fit at a time (the agent has one critic thread)
        self._slowest = 0.0  # seconds, the longest fit so far (see MIN_PATIENCE)
        self._answered = 0
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            # This interpreter's import path, in order, so that the child finds the same
            # NumPy, SciPy and rl_adapters (the bits depend on them); with PYTHONSAFEPATH its
            # own working directory does not come first (an rl_adapters/ or numpy/ there
            # would shadow them).
            path = [os.getcwd() if p == "" else p for p in sys.path if isinstance(p, str)]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "PYTHONSAFEPATH": "1"}
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "rl_adapters.critic_process", str(self.blas_threads),
                 ",".join(map(str, self.sizes)), activation],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                env=env, start_new_session=True,  # (no Ctrl-C from the terminal)
            )
            assert self._proc.stdin is not None and self._proc.stdout is not None
            os.set_blocking(self._proc.stdin.fileno(), False)
            os.set_blocking(self._proc.stdout.fileno(), False)
        except Exception as err:  # (no interpreter to run, no pipes: say so, fit here)
            self._give_up(f"it could not be started ({type(err).__name__}: {err})")
        # kill the child if the agent is dropped without close() (or at interpreter exit)
        self._finalizer = weakref.finalize(self, _kill, self._proc)

    @property
    def pid(self) -> int | None:
        """The child's process id (None once it is closed or gone)."""
        return None if self._proc is None else self._proc.pid

    def fit(self, theta: NDArray, obs: NDArray, targets: NDArray, *, l2: float,
            lbfgs_iters: int, dtype: str) -> tuple[NDArray, float, float] | None:
        """``(new theta, MSE before, MSE after)`` of :meth:`ValueFunction.fit` with
        ``optimizer="lbfgs"``, computed by the child; None if the child is gone or failed
        (the caller then fits in its own process: a warning has said why, once)."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return None
            t0 = time.monotonic()
            patience = max(MIN_PATIENCE, 20.0 * self._slowest)
            deadline = t0 + patience
            try:
                request = ("fit", theta, obs, targets, float(l2), int(lbfgs_iters), dtype)
                reply = None
                if _send(proc, pickle.dumps(request, protocol=_PROTOCOL), deadline):
                    reply = _receive(proc, deadline)
                if reply is None:
                    self._give_up(f"it took and answered no fit in {patience:.0f} s")
                    return None
                answer = pickle.loads(reply)
                if answer[0] != "ok":
                    self._give_up(f"it raised {answer[1]}")
                    return None
                fitted = (np.asarray(answer[1], dtype=np.float64), float(answer[2]),
                          float(answer[3]))
                if fitted[0].shape != np.shape(theta):
                    raise ValueError(f"parameters of shape {fitted[0].shape}")
            except Exception as err:  # (a broken pipe, a dead child, a garbled answer)
                self._give_up(f"it ended or broke its pipe ({type(err).__name__}: {err})")
                return None
            if self._answered:  # (the first answer also waited for the worker's imports)
                self._slowest = max(self._slowest, time.monotonic() - t0)
            self._answered += 1
            return fitted

    def _give_up(self, why: str) -> None:
        proc = self._proc
        self._proc = None
        code = _kill(proc)
        pid = f" (pid {proc.pid})" if proc is not None else ""
        self.failed = f"the critic's worker process{pid}: {why}" \
            + ("" if code is None else f", exit code {code}")
        warnings.warn(f"{self.failed}; the critic is fitted in this process from now on "
                      "(the same results, less overlap with the rollout)",
                      CriticProcessWarning, stacklevel=3)

    def close(self) -> None:
        """Stop the child and reap it, recording its CPU time and peak RSS
        (:attr:`cpu_seconds`, :attr:`peak_rss_mib`)."""
        with self._lock:
            proc = self._proc
            self._proc = None
        if proc is None:
            return
        try:
            deadline = time.monotonic() + 10.0
            if _send(proc, pickle.dumps(("stop",), protocol=_PROTOCOL), deadline):
                reply = _receive(proc, deadline)
                if reply is not None:
                    self.peak_rss_mib = pickle.loads(reply)[1]
        except Exception:  # then without its peak RSS; it is reaped below
            pass
        try:
            usage = _reap(proc, timeout=10.0)
        finally:
            _close_pipes(proc)
        if usage is not None:
            self.cpu_seconds = usage.ru_utime + usage.ru_stime
        # (not usage.ru_maxrss: the kernel counts in it the pages of this process, which
        # the child shared between its fork and its exec)
        self._finalizer.detach()


def _wait_for(fileobj: Any, event: int, deadline: float) -> bool:
    """Whether ``fileobj`` is ready for ``event`` before ``deadline`` (a selector: poll or
    epoll, which take any descriptor, where select() refuses those above 1023)."""
    with selectors.DefaultSelector() as selector:
        selector.register(fileobj, event)
        while True:
            left = deadline - time.monotonic()
            if left <= 0.0:
                return False
            if selector.select(left):
                return True


def _send(proc: subprocess.Popen[bytes], payload: bytes, deadline: float) -> bool:
    """Write one framed message to the child's non-blocking stdin; False at the deadline."""
    assert proc.stdin is not None
    fd = proc.stdin.fileno()
    data = memoryview(_HEADER.pack(len(payload)) + payload)
    while data:
        if not _wait_for(fd, selectors.EVENT_WRITE, deadline):
            return False
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:
            continue
    return True


def _receive(proc: subprocess.Popen[bytes], deadline: float) -> bytes | None:
    """Read one framed message from the child's non-blocking stdout; None at the deadline.
    EOFError if the child closed it."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    chunks: list[bytes] = []
    need, have, header = _HEADER.size, 0, True
    while True:
        while have < need:
            if not _wait_for(fd, selectors.EVENT_READ, deadline):
                return None
            try:
                chunk = os.read(fd, min(need - have, 1 << 20))
            except BlockingIOError:
                continue
            if not chunk:
                raise EOFError("the worker closed its pipe")
            chunks.append(chunk)
            have += len(chunk)
        data = b"".join(chunks)
        if not header:
            return data
        (need,), chunks, have, header = _HEADER.unpack(data), [], 0, False


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass


def _reap(proc: subprocess.Popen[bytes], timeout: float) -> Any:
    """Wait for ``proc`` to exit (killed after ``timeout`` seconds); its resource usage
    (None if another wait reaped it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage
        if time.monotonic() > deadline:
            proc.kill()
            deadline = math.inf
        time.sleep(0.001)


def _kill(proc: subprocess.Popen[bytes] | None) -> int | None:
    """Kill and reap ``proc`` if it still runs, and close its pipes; its exit code (None if
    unknown)."""
    if proc is None:
        return None
    try:
        if proc.poll() is None:
            proc.kill()
        return proc.wait(timeout=10.0)
    except (OSError, subprocess.TimeoutExpired):  # pragma: no cover - a kill that fails
        return None
    finally:
        _close_pipes(proc)


# ------------------------------------------------------------------------- the child
def _read_message(inbox: IO[bytes]) -> Any:
    header = inbox.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(header)
    payload = inbox.read(size)
    if len(payload) < size:
        raise EOFError
    return pickle.loads(payload)


def _write_message(outbox: IO[bytes], message: Any) -> None:
    payload = pickle.dumps(message, protocol=_PROTOCOL)
    outbox.write(_HEADER.pack(len(payload)) + payload)
    outbox.flush()


def _serve(blas_threads: int, sizes: tuple[int, ...], activation: str,
           inbox: IO[bytes], outbox: IO[bytes]) -> None:
    """Fit on request until told to stop (or the parent goes away)."""
    from rl_adapters._blas import blas_threads as limit_blas_threads
    from rl_adapters._memory import keep_freed_memory
    from rl_adapters.value import ValueFunction

    keep_freed_memory()  # as the parent's learn() does: the same bits, fewer page faults
    critic = ValueFunction(sizes[0], hidden=sizes[1:-1], activation=activation)
    with limit_blas_threads(blas_threads):
        while True:
            message = _read_message(inbox)
            if message[0] != "fit":
                _write_message(outbox, ("stopped", _own_peak_rss_mib()))
                return
            _, theta, obs, targets, l2, iters, dtype = message
            try:
                critic.theta = theta
                loss_before = critic.fit(obs, targets, None, optimizer="lbfgs",  # type: ignore[arg-type]
                                         lbfgs_iters=iters, l2=l2, dtype=dtype)
                reply: tuple[Any, ...] = ("ok", critic.theta, loss_before,
                                          critic.mse(obs, targets))
            except Exception as exc:  # reported to the parent, which then fits itself
                reply = ("error", f"{type(exc).__name__}: {exc}")
            _write_message(outbox, reply)


def _own_peak_rss_mib() -> float | None:
    """This process's peak resident memory since its exec (Linux's VmHWM), in MiB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def main(argv: list[str]) -> None:
    """The child's entry point. Whatever ends it (the parent gone, a broken pipe, an
    interrupt), it exits without a traceback: the parent reports what went wrong."""
    # Ctrl-C is the agent's to handle (the child also runs in a session of its own)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    blas_threads, sizes, activation = int(argv[0]), tuple(map(int, argv[1].split(","))), argv[2]
    # the pipe to the parent is the original stdout; anything printed goes to stderr
    outbox = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        _serve(blas_threads, sizes, activation, sys.stdin.buffer, outbox)
    except BaseException:  # the parent sees the pipe close and says why
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
