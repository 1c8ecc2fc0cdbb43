"""Assertions shared by the agent tests."""

import numpy as np

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
