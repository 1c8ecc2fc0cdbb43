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
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
import warnings
import weakref
from typing import IO, Any

from numpy.typing import NDArray

__all__ = ["CriticProcess", "CriticProcessWarning"]

# One message each way per fit: ("fit", theta, obs, targets, l2, lbfgs_iters, dtype) or
# ("stop",) to the child; ("ok", theta, loss_before, mse_after) or ("error", text) back,
# and ("stopped", its peak RSS in MiB or None) before it exits.
_PROTOCOL = pickle.HIGHEST_PROTOCOL


#: A fit the worker has not answered within this many seconds, or 20 times its slowest
#: fit so far if longer, counts as a hung worker: it is killed and the fit done here.
MIN_PATIENCE = 120.0


class CriticProcessWarning(RuntimeWarning):
    """The critic's worker process failed; its fits continue in this process."""


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
    """

    def __init__(self, sizes: tuple[int, ...], activation: str, blas_threads: int) -> None:
        self.sizes = tuple(int(s) for s in sizes)
        self.activation = activation
        self.blas_threads = int(blas_threads)
        self.failed: str | None = None  # why the child is gone, once it is
        self.peak_rss_mib: float | None = None  # the child's, after close()
        self.cpu_seconds: float | None = None
        # this interpreter's import path, so that the child finds the same NumPy, SciPy and
        # rl_adapters (the bits depend on them), wherever they were found here
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._lock = threading.Lock()  # one fit at a time (the agent has one critic thread)
        self._slowest = 0.0  # seconds, the longest fit so far (see MIN_PATIENCE)
        self._answered = 0
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "rl_adapters.critic_process", str(self.blas_threads),
                 ",".join(map(str, self.sizes)), activation],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
            )
        except (OSError, ValueError) as err:  # no interpreter to run (an embedded Python)
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
            assert proc.stdin is not None and proc.stdout is not None
            t0 = time.monotonic()
            patience = max(MIN_PATIENCE, 20.0 * self._slowest)
            try:
                pickle.dump(("fit", theta, obs, targets, float(l2), int(lbfgs_iters), dtype),
                            proc.stdin, protocol=_PROTOCOL)
                proc.stdin.flush()
                if not _answers_within(proc.stdout, patience):
                    self._give_up(f"it gave no answer in {patience:.0f} s")
                    return None
                reply = pickle.load(proc.stdout)
            except (OSError, EOFError, pickle.UnpicklingError) as err:
                self._give_up(f"it ended or broke its pipe ({type(err).__name__}: {err})")
                return None
            if self._answered:  # (the first answer also waited for the worker's imports)
                self._slowest = max(self._slowest, time.monotonic() - t0)
            self._answered += 1
            if reply[0] != "ok":
                self._give_up(f"it raised {reply[1]}")
                return None
            return reply[1], float(reply[2]), float(reply[3])

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
        (:attr:`cpu_seconds`, :attr:`peak_rss_mib`; POSIX only)."""
        with self._lock:
            proc = self._proc
            self._proc = None
        if proc is None:
            return
        self._finalizer.detach()
        peak = None
        try:
            assert proc.stdin is not None and proc.stdout is not None
            pickle.dump(("stop",), proc.stdin, protocol=_PROTOCOL)
            proc.stdin.close()
            if _answers_within(proc.stdout, 10.0):
                peak = pickle.load(proc.stdout)[1]
        except (OSError, EOFError, pickle.UnpicklingError, IndexError, TypeError):
            pass
        usage = _reap(proc, timeout=10.0)
        if usage is not None:
            self.cpu_seconds = usage.ru_utime + usage.ru_stime
        # (not usage.ru_maxrss: the kernel counts in it the pages of this process, which
        # the child shared between its fork and its exec)
        self.peak_rss_mib = peak
        if proc.stdout is not None:
            proc.stdout.close()


def _answers_within(stream: IO[bytes], seconds: float) -> bool:
    """Whether the worker's pipe has an answer to read within ``seconds`` (POSIX; elsewhere
    the read just waits)."""
    if os.name != "posix":  # pragma: no cover - select() takes only sockets on Windows
        return True
    readable, _, _ = select.select([stream], [], [], seconds)
    return bool(readable)


def _reap(proc: subprocess.Popen[bytes], timeout: float) -> Any:
    """Wait for ``proc`` to exit (killed after ``timeout`` seconds); its resource usage
    (None where ``os.wait4`` is missing or another wait reaped it)."""
    if not hasattr(os, "wait4"):  # pragma: no cover - Windows
        if _wait(proc, timeout) is None:
            _kill(proc)
        return None
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


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def _kill(proc: subprocess.Popen[bytes] | None) -> int | None:
    """Kill and reap ``proc`` if it still runs; its exit code (None if unknown)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.kill()
    return _wait(proc, 10.0)


# ------------------------------------------------------------------------- the child
def _serve(blas_threads: int, sizes: tuple[int, ...], activation: str,
           inbox: IO[bytes], outbox: IO[bytes]) -> None:
    """Fit on request until told to stop (or the parent goes away)."""
    from rl_adapters._memory import keep_freed_memory
    from rl_adapters.value import ValueFunction

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - as the agent's own _blas_threads
        limits: Any = contextlib.nullcontext()
    else:
        limits = threadpool_limits(limits=blas_threads, user_api="blas")
    keep_freed_memory()  # as the parent's learn() does: the same bits, fewer page faults
    critic = ValueFunction(sizes[0], hidden=sizes[1:-1], activation=activation)
    with limits:
        while True:
            try:
                message = pickle.load(inbox)
            except EOFError:
                return
            if message[0] != "fit":
                pickle.dump(("stopped", _own_peak_rss_mib()), outbox, protocol=_PROTOCOL)
                outbox.flush()
                return
            _, theta, obs, targets, l2, iters, dtype = message
            try:
                critic.theta = theta
                loss_before = critic.fit(obs, targets, None, optimizer="lbfgs",  # type: ignore[arg-type]
                                         lbfgs_iters=iters, l2=l2, dtype=dtype)
                err = critic.predict(obs) - targets
                reply: tuple[Any, ...] = ("ok", critic.theta, loss_before,
                                          float(err @ err) / err.shape[0])
            except Exception as exc:  # reported to the parent, which then fits itself
                reply = ("error", f"{type(exc).__name__}: {exc}")
            pickle.dump(reply, outbox, protocol=_PROTOCOL)
            outbox.flush()


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
    blas_threads, sizes, activation = int(argv[0]), tuple(map(int, argv[1].split(","))), argv[2]
    # Ctrl-C in a terminal reaches the whole process group: the agent handles it (and
    # stops this process, or its exit closes the pipe, which ends the loop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the pipe to the parent is the original stdout; anything printed goes to stderr
    outbox = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    _serve(blas_threads, sizes, activation, sys.stdin.buffer, outbox)


if __name__ == "__main__":
    main(sys.argv[1:])
