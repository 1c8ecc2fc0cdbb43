"""Shared test configuration.

The hypothesis profiles come from the trustregion.testing pytest plugin: derandomized under
CI (``CI=true``) so a red build is reproducible, random exploration on a developer's machine,
and ``TR_HYPOTHESIS_PROFILE=trustregion-thorough`` for a long local run.
"""

import os

import pytest

from trustregion.testing.pytest_plugin import load_profile


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # In a hook rather than at import: the plugin loads $TR_HYPOTHESIS_PROFILE itself and
    # turns a mistyped name into a one-line usage error, where a ValueError raised while
    # this file imports was buried in pytest's conftest-import traceback. tryfirst, so that
    # hypothesis' own --hypothesis-profile (its pytest_configure) still has the last word.
    if not os.environ.get("TR_HYPOTHESIS_PROFILE"):
        load_profile()

# pytester runs the trustregion.testing plugin on small user test files (test_testing_plugin.py)
pytest_plugins = ["pytester"]
