"""The package stays readable: its size, its files, its settings and its scvi-tools imports."""

import ast
import inspect
from pathlib import Path

from scvi_mmd import SCVIMMD

PACKAGE = Path(__file__).resolve().parents[1] / "scvi_mmd"
FILES = sorted(PACKAGE.rglob("*.py"))


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_package_and_files_stay_small():
    sizes = {str(path.relative_to(PACKAGE)): _lines(path) for path in FILES}
    assert sum(sizes.values()) <= 4000, sum(sizes.values())
    assert not {name: n for name, n in sizes.items() if n > 350}


def test_scvimmd_takes_at_most_eight_mmd_settings():
    names = [name for name in inspect.signature(SCVIMMD.__init__).parameters
             if name.startswith("mmd_")]
    assert len(names) <= 8, names


def test_private_scvi_tools_names_only_in_compat():
    found = []
    for path in FILES:
        if path.name == "_compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                modules, names = [alias.name for alias in node.names], []
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0] == "scvi" and any(p.startswith("_") for p in parts + names):
                    found.append((path.name, module, names))
    assert not found
