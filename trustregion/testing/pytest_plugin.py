"""pytest plugin of trustregion.testing (entry point ``pytest11``: loaded automatically).

- hypothesis settings profiles (when hypothesis is installed; never loaded on their own):
  ``trustregion-ci`` (derandomized, no deadline, 60 examples, failure blobs printed),
  ``trustregion-dev`` (random, no deadline, 100 examples) and ``trustregion-thorough``
  (random, no deadline, 2000 examples). Load one with hypothesis' own
  ``--hypothesis-profile=NAME``, with ``TR_HYPOTHESIS_PROFILE=NAME``, or by calling
  :func:`load_profile` from a ``conftest.py`` (``CI`` set: ``trustregion-ci``, else
  ``trustregion-dev``).
- an ``rng`` fixture: a ``numpy.random.Generator`` seeded from ``--tr-seed`` (default 0)
  and the test's id, so every test gets its own reproducible stream; a failing test's
  report says which seed to pass to reproduce or vary it.

Without hypothesis the plugin still loads (the fixture and option work), so it never
breaks pytest for a user who did not install the ``testing`` extra.
"""

from __future__ import annotations

import os
import zlib
from typing import Any

import numpy as np
import pytest

PROFILES: dict[str, dict[str, Any]] = {
    "trustregion-ci": dict(derandomize=True, deadline=None, max_examples=60, print_blob=True),
    "trustregion-dev": dict(deadline=None, max_examples=100),
    "trustregion-thorough": dict(deadline=None, max_examples=2000),
}


def register_profiles() -> bool:
    """Register the profiles with hypothesis; False when hypothesis is not installed."""
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:
        return False
    for name, options in PROFILES.items():
        settings.register_profile(
            name,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            **options,
        )
    return True


def profile_names() -> list[str]:
    """The names of the registered hypothesis profiles (ours first), [] without hypothesis."""
    try:
        from hypothesis import settings
    except ImportError:
        return []

    # hypothesis keeps no public list of profiles; fall back to ours if that ever changes
    registered = getattr(settings, "_profiles", None)
    others = sorted(set(registered) - set(PROFILES)) if isinstance(registered, dict) else []
    return [*PROFILES, *others]


def load_profile(name: str | None = None) -> str | None:
    """Load a profile: ``name``, else ``$TR_HYPOTHESIS_PROFILE``, else by ``$CI``.

    Returns the profile loaded, or None when hypothesis is not installed.

    Raises
    ------
    ValueError
        If the profile is not registered (naming ``$TR_HYPOTHESIS_PROFILE`` when the name
        came from it), instead of hypothesis' ``InvalidArgument`` traceback.
    """
    if not register_profiles():
        return None
    from hypothesis import settings
    from hypothesis.errors import InvalidArgument

    from_env = not name and bool(os.environ.get("TR_HYPOTHESIS_PROFILE"))
    chosen = (
        name
        or os.environ.get("TR_HYPOTHESIS_PROFILE")
        or ("trustregion-ci" if os.environ.get("CI") else "trustregion-dev")
    )
    # checked first: hypothesis' load_profile makes an unknown name current before it
    # raises, which breaks every later register_profile (a KeyError)
    try:
        settings.get_profile(chosen)
    except InvalidArgument:
        what = "TR_HYPOTHESIS_PROFILE" if from_env else "name"
        raise ValueError(
            f"{what}={chosen!r} is not a registered hypothesis profile; valid names: "
            + ", ".join(profile_names())
        ) from None
    settings.load_profile(chosen)
    return chosen


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trustregion", "trustregion.testing")
    group.addoption(
        "--tr-seed",
        type=int,
        default=None,
        metavar="SEED",
        help="base seed of the trustregion `rng` fixture (default 0); a failing test's "
        "report prints the seed to pass to reproduce it",
    )


def pytest_configure(config: pytest.Config) -> None:
    register_profiles()
    value = os.environ.get("TR_HYPOTHESIS_PROFILE")
    if value:
        # a typo here would otherwise abort every run with an INTERNALERROR traceback
        # (exit 3); a usage error is one line and exit 4. Checked here, after the initial
        # conftests, so a profile a conftest registers is valid too.
        try:
            load_profile(value)
        except ValueError:
            raise pytest.UsageError(
                f"TR_HYPOTHESIS_PROFILE={value!r} is not a registered hypothesis profile; "
                f"valid names: {', '.join(profile_names())}"
            ) from None


def _base_seed(config: pytest.Config) -> int:
    seed = config.getoption("--tr-seed", default=None)
    return 0 if seed is None else int(seed)


def stream_seed(base_seed: int, nodeid: str) -> int:
    """The seed of a test's ``rng``: the base seed mixed with a hash of the test id."""
    return (base_seed * 1_000_003 + zlib.crc32(nodeid.encode())) % 2**32


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A ``numpy.random.Generator`` seeded from ``--tr-seed`` and the test's id."""
    base = _base_seed(request.config)
    request.node.user_properties.append(("tr_seed", base))
    return np.random.default_rng(stream_seed(base, request.node.nodeid))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and "rng" in getattr(item, "fixturenames", ()):
        base = _base_seed(item.config)
        report.sections.append(
            (
                "trustregion rng",
                f"the rng fixture was seeded with --tr-seed={base} "
                f"(stream seed {stream_seed(base, item.nodeid)}); rerun with --tr-seed={base} "
                "to reproduce, or another value to vary it",
            )
        )
    return report
