"""The core depends on NumPy, SciPy and Numba only; the RL adapter depends on the core."""

import ast
import json
import pathlib
import subprocess
import sys

import trustregion

FORBIDDEN = ("rl_adapters", "gymnasium", "gym", "mujoco", "torch", "jax", "tensorflow", "sb3_contrib",
             "stable_baselines3", "matplotlib", "tqdm")


def test_importing_trustregion_loads_no_rl_or_deep_learning_module():
    code = (
        "import sys, json, trustregion, trustregion.distributions;"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in json.loads(out.stdout)}
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))


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
