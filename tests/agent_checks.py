"""Assertions and markers shared by the agent and CLI tests."""

import threading

import numpy as np
import pytest

#: For tests of the CLI's signal handling: Python installs signal handlers from the main
#: thread only.
needs_main_thread = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signal handlers are only installed from the main thread")

#: Per-update metrics that are clock readings (they differ between identical runs).
CLOCKS = ("steps_per_sec", "env_time", "policy_time", "update_time", "wall_time")


def assert_same_run(a, b) -> None:
    """Two trained agents are the same run: parameters, critic and every non-clock metric
    bit for bit (NaN equal to NaN)."""
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.value.theta, b.value.theta)
    for ma, mb in zip(a.metrics, b.metrics, strict=True):
        np.testing.assert_equal({k: v for k, v in ma.items() if k not in CLOCKS},
                                {k: v for k, v in mb.items() if k not in CLOCKS})
