"""The BLAS thread limit a training process computes under (the agent and the critic's
worker process alike: a different thread count may sum in a different order)."""

from __future__ import annotations

import contextlib
from typing import Any


def blas_threads(n: int) -> Any:
    """Limit BLAS threads: oversubscribed OpenBLAS threads make small matmuls 100x slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is in the `rl` extra
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")
