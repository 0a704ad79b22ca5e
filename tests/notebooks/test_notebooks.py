"""Notebooks call the library (never copies of it): every code cell compiles and imports only our rooms."""
import ast
import json
from pathlib import Path

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_notebooks_compile_and_use_the_library():
    assert NOTEBOOKS, "at least one notebook"
    for nb in NOTEBOOKS:
        cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        source = "\n".join("".join(c["source"]) for c in cells)
        tree = ast.parse(source, filename=str(nb))
        defs = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert not defs, f"{nb.name} defines {defs}: library code belongs in the packages"
        modules = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "training" in modules, f"{nb.name} should use training/"
