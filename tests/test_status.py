"""One status vocabulary: every result's status is a trustregion.Status with a rendered message."""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest

import trustregion as tr
from trustregion.core import status as status_module

CORE = pathlib.Path(tr.__file__).parent


def test_every_status_has_a_remedy_entry_and_unique_code():
    assert set(status_module._REMEDIES) == set(tr.Status)
    assert len({int(s) for s in tr.Status}) == len(tr.Status)


def test_no_module_defines_its_own_status_enum():
    """A solver adds members to the shared Status, never an enum of its own."""
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                if bases & {"Enum", "IntEnum"}:
                    assert path.name == "status.py", f"{path}: enum {node.name}"


def test_render_appends_remedy_only_when_there_is_one():
    assert status_module.render(tr.Status.CONVERGED, "done") == "done"
    msg = status_module.render(tr.Status.MAX_ITER, "limit 3 reached")
    assert msg.startswith("limit 3 reached; ") and msg.endswith(tr.Status.MAX_ITER.remedy)


def _results():
    H = np.diag([1.0, 2.0])
    g = np.array([1.0, 1.0])
    yield tr.cg(H, g), True
    yield tr.cg(np.diag([1.0, -1.0]), g), False
    yield tr.steihaug_cg(H.dot, g, radius=0.1), True
    yield tr.natural_gradient_step(g, H.dot, delta=0.01), True
    yield tr.natural_gradient_step(np.zeros(2), H.dot, delta=0.01), False
    yield tr.backtracking_line_search(
        lambda x: (float(g @ x), 0.0), np.zeros(2), g, expected_improvement=2.0, max_constraint=1.0
    ), True
    yield tr.cpo_step(g, np.array([1.0, 0.0]), -1.0, H.dot, delta=0.01), True


@pytest.mark.parametrize("result, ok", list(_results()))
def test_results_share_the_vocabulary(result, ok):
    assert isinstance(result.status, tr.Status)
    assert result.success is ok
    assert isinstance(result.message, str) and result.message
    if not ok and result.status.remedy:
        assert result.status.remedy in result.message


def test_minimize_keeps_scipy_codes_and_reports_the_shared_status():
    res = tr.minimize(lambda x: float(x @ x), np.ones(3), jac=lambda x: 2 * x,
                      hessp=lambda x, p: 2 * p, method="trust-ncg")
    assert res.status == 0 and res.reason is tr.Status.CONVERGED
    assert set(tr.SCIPY_STATUS_CODES) <= set(tr.Status)
    assert tr.SCIPY_STATUS_CODES[tr.Status.CALLBACK_STOP] == 99
