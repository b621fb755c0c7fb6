"""The notebooks are committed executed, and their numbers are current.

Each notebook runs once, top to bottom, in a real Jupyter kernel (nbclient), from notebooks/;
the numbers printed by the cells tagged ``numbers`` must match the committed outputs (see
scripts/execute_notebooks.py, which regenerates them). The static checks — format, outputs
present, small images, public imports only — need no kernel.
"""
import base64
import importlib.util
import pathlib
import re
import warnings

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
_spec = importlib.util.spec_from_file_location("execute_notebooks",
                                               ROOT / "scripts" / "execute_notebooks.py")
executor = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(executor)

REGENERATE = "python scripts/execute_notebooks.py"


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_executed_and_valid(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. nbformat's MissingIDFieldWarning
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) == (4, 5)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), f"{path.name} has unexecuted cells: {REGENERATE}"
    assert any(c.outputs for c in code)
    assert any("numbers" in c.metadata.get("tags", []) for c in code)
    for c in code:
        assert not any(o.output_type == "error" for o in c.outputs), path.name
        for o in c.outputs:
            png = o.get("data", {}).get("image/png")
            if png:
                assert len(base64.b64decode(png)) <= executor.MAX_PNG_BYTES, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_imports_public_api_only(path):
    nb = nbformat.read(path, as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    imports = re.findall(r"^\s*(?:from|import)\s+(fbackprop[\w.]*)", source, re.M)
    assert imports and set(imports) <= {"fbackprop", "fbackprop.gradcheck"}, imports
    assert "import fbackprop as fb" in source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_and_its_numbers_are_current(path):
    pytest.importorskip("nbclient")
    committed = nbformat.read(path, as_version=4)
    fresh = executor.execute(path)  # raises CellExecutionError naming the failing cell
    assert len(fresh.cells) == len(committed.cells)
    stale = executor.compare(committed, fresh)
    assert not stale, f"{path.name}: committed outputs are stale; run {REGENERATE}\n" + \
        "\n".join(stale)


def test_compare_flags_a_changed_number_and_ignores_rounding_noise():
    def nb(text):
        cell = nbformat.v4.new_code_cell("print()", metadata={"tags": ["numbers"]})
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        return nbformat.v4.new_notebook(cells=[cell])

    assert executor.compare(nb("loss 0.25, error 1e-16"), nb("loss 0.25, error 3e-16")) == []
    assert executor.compare(nb("loss 0.25"), nb("loss 0.250001"))
    assert executor.compare(nb("loss 0.25"), nb("loss 0.25 and 1.0"))
