"""The core depends on NumPy, SciPy and Numba only; the RL adapter depends on the core.

trustregion.testing (and its optional dependency hypothesis) is loaded only when asked for.
"""

import ast
import json
import pathlib
import subprocess
import sys

import trustregion

FORBIDDEN = ("rl_adapters", "gymnasium", "gym", "mujoco", "torch", "jax", "tensorflow", "sb3_contrib",
             "stable_baselines3", "matplotlib", "tqdm")


def _modules_loaded_by(statement):
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_importing_trustregion_loads_no_rl_or_deep_learning_module():
    modules = _modules_loaded_by("import trustregion, trustregion.distributions")
    loaded = {name.split(".")[0] for name in modules}
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))


def test_importing_trustregion_loads_neither_the_testing_module_nor_hypothesis():
    modules = _modules_loaded_by("import trustregion, trustregion.distributions")
    assert "hypothesis" not in {name.split(".")[0] for name in modules}
    assert not {name for name in modules if name.startswith("trustregion.testing")}


def test_the_checks_load_without_hypothesis_and_strategies_say_what_to_install():
    # a meta-path finder that hides hypothesis, as on a machine without the testing extra
    code = (
        "import sys, importlib.abc\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'hypothesis' or name.startswith('hypothesis.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from trustregion.testing import check_fvp, assert_close\n"
        "import trustregion.testing.pytest_plugin as plugin\n"
        "assert plugin.load_profile() is None\n"
        "try:\n"
        "    from trustregion.testing import spd_matrices\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "needs the optional dependency hypothesis" in out.stdout
    assert "trustregion-toolkit[testing]" in out.stdout


def test_no_source_file_in_the_core_imports_a_forbidden_package():
    root = pathlib.Path(trustregion.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders, offenders
