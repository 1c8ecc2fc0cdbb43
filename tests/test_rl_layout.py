"""Where things live in rl_adapters: Numba kernels in one private module, imports one way."""

import ast
from pathlib import Path

import rl_adapters

PACKAGE = Path(rl_adapters.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_numba_is_imported_by_the_kernels_module_only():
    users = sorted(p.name for p in PACKAGE.glob("*.py")
                   if any(m == "numba" or m.startswith("numba.") for m in _imported_modules(p)))
    assert users == ["_kernels.py"]



def test_checkpoint_does_not_import_the_agent():
    # The agent calls the checkpoint layer, never the other way round (no import cycle).
    imported = _imported_modules(PACKAGE / "checkpoint.py")
    assert not {m for m in imported if m.startswith("rl_adapters.")} - {"rl_adapters.mlp"}
