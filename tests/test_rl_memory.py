"""rl_adapters._memory: freed blocks of an update's size are reused, not faulted in again."""

import platform
import resource

import numpy as np
import pytest

from rl_adapters._memory import keep_freed_memory

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")


@glibc
def test_freed_blocks_are_reused_without_page_faults():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # once per process; later calls change nothing
    # An update's pattern: several 512 KiB temporaries alive at once, then all freed.
    # With glibc's defaults the freed top of the heap goes back to the OS and the next
    # round faults its pages in again (about 1,100 faults over these 50 rounds, measured
    # without the call); kept in the heap, none.
    def churn():
        for _ in range(50):
            blocks = [np.empty(1 << 16) for _ in range(8)]
            for block in blocks:
                block.fill(1.0)
            del blocks

    churn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    churn()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 100, faults


def test_learn_keeps_freed_memory(monkeypatch):
    import rl_adapters.agent as agent_module
    from rl_adapters import TRPO

    calls = []
    monkeypatch.setattr(agent_module, "keep_freed_memory", lambda: calls.append(1) or True)
    agent = TRPO("CartPole-v1", seed=0, n_envs=1, n_steps=32)
    assert calls == []
    agent.learn(32)
    assert calls == [1]
    agent.close()
