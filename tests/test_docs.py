"""The documentation names only files, modules and attributes that exist."""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md",
        *sorted((ROOT / "docs").glob("*.md"))]
PATH = re.compile(r"(?<![\w/.])((?:scvi_mmd|benchmarks|tests|docs|openproblems|\.ci)/"
                  r"[\w./-]*\w)")
DOTTED = re.compile(r"(?<![\w/])(scvi_mmd(?:\.\w+)+)")
METHOD = re.compile(r"(?<![\w.])SCVIMMD\.(\w+)")


def _texts():
    for doc in DOCS:
        text = doc.read_text()
        if doc.name == "CHANGELOG.md":  # the changelog may name what was removed
            text = text.split("\n## [", 2)[0] if "### Removed" not in text else ""
        yield doc, text


def _resolve(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_named_files_exist(doc):
    text = dict(_texts())[doc]
    missing = sorted({p.rstrip(".") for p in PATH.findall(text)
                      if not (ROOT / p.rstrip(".")).exists() and "*" not in p})
    generated = ("docs/_build", "benchmarks/.venv")  # made by a command the doc gives
    missing = [p for p in missing if not p.startswith(generated)]
    assert not missing, f"{doc.name} names files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_named_code_exists(doc):
    from scvi_mmd import SCVIMMD

    text = dict(_texts())[doc]
    bad = sorted({d for d in DOTTED.findall(text) if not _resolve(d)})
    bad += sorted({f"SCVIMMD.{m}" for m in METHOD.findall(text) if not hasattr(SCVIMMD, m)})
    assert not bad, f"{doc.name} names code that does not exist: {bad}"
