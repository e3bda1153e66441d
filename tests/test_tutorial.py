"""The tutorial notebook executes offline end to end with the current code, and its stored
outputs are what the current code gives (slow: run with `pytest -m slow`)."""

import json
import re
from pathlib import Path

import pytest

from scvi_mmd import DEFAULT_STRENGTH

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


def _table_rows(notebook) -> dict[str, tuple[list[float], str]]:
    """The comparison table's rows (from its HTML output): model -> (batch mixing and
    purity, phase)."""
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and source.rstrip().endswith("table"):
            html = next(o["data"]["text/html"] for o in cell["outputs"] if "data" in o)
            html = "".join(html) if isinstance(html, list) else html
            rows = {}
            body = html[html.index("<tbody>"):]
            for row in re.findall(r"<tr>(.*?)</tr>", body, flags=re.S):
                name = re.search(r"<th>(.*?)</th>", row, flags=re.S).group(1).strip()
                values = [v.strip() for v in re.findall(r"<td>(.*?)</td>", row, flags=re.S)]
                rows[name] = ([float(v) for v in values[:2]], values[-1])
            return rows
    raise AssertionError("no comparison table in the notebook")


@pytest.mark.slow
def test_tutorial_executes_and_matches_its_stored_outputs(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="needs the tutorial extra")
    nbclient = pytest.importorskip("nbclient", reason="needs the tutorial extra")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    stored = _table_rows(json.loads(NOTEBOOK.read_text()))
    client = nbclient.NotebookClient(notebook, timeout=1800, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    executed = _table_rows(json.loads(nbformat.writes(notebook)))
    assert executed.keys() == stored.keys()
    for name, (numbers, phase) in executed.items():
        assert phase == stored[name][1], name
        assert numbers == pytest.approx(stored[name][0], abs=0.05), name


def test_committed_tutorial_is_small_has_outputs_and_uses_the_default():
    assert NOTEBOOK.stat().st_size < 1_000_000
    notebook = json.loads(NOTEBOOK.read_text())
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert all(c.get("outputs") for c in code), "commit the executed notebook"
    errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors
    source = "".join("".join(c["source"]) for c in code)
    # the default, no arguments, labelled with the strength it has
    assert f'models = {{"default (s = {DEFAULT_STRENGTH:g})": fit()}}' in source
