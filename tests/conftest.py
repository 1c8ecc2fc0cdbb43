"""Shared test configuration.

The hypothesis profiles come from the trustregion.testing pytest plugin: derandomized under
CI (``CI=true``) so a red build is reproducible, random exploration on a developer's machine,
and ``TR_HYPOTHESIS_PROFILE=trustregion-thorough`` for a long local run.
"""

from trustregion.testing.pytest_plugin import load_profile

load_profile()

# pytester runs the trustregion.testing plugin on small user test files (test_testing_plugin.py)
pytest_plugins = ["pytester"]
