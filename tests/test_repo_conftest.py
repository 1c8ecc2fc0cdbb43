"""This repository's own conftest: a mistyped profile is one line, as for a plugin user."""

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_mistyped_profile_is_a_one_line_usage_error():
    env = {**os.environ, "TR_HYPOTHESIS_PROFILE": "trustregion-thorugh"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly",
         "-p", "no:xdist", str(TESTS / "test_repo_conftest.py")],
        cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage-error status
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        "ERROR: TR_HYPOTHESIS_PROFILE='trustregion-thorugh' is not a registered hypothesis "
        "profile; valid names: trustregion-ci, trustregion-dev, trustregion-thorough"), lines
    assert "Traceback" not in done.stdout + done.stderr
