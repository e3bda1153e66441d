"""The tutorial notebook executes offline end to end (slow: run with `pytest -m slow`)."""

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


@pytest.mark.slow
def test_tutorial_executes(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="needs the tutorial extra")
    nbclient = pytest.importorskip("nbclient", reason="needs the tutorial extra")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


def test_committed_tutorial_is_small_and_has_outputs():
    assert NOTEBOOK.stat().st_size < 1_000_000
    notebook = json.loads(NOTEBOOK.read_text())
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert code and all(c.get("outputs") for c in code[2:]), "commit the executed notebook"
    errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors
