"""Every notebook runs top to bottom: its code cells are executed, in order, in a fresh Python
process from the notebooks/ folder (no Jupyter kernel needed)."""
import json
import pathlib
import subprocess
import sys

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    cells = json.loads(path.read_text())["cells"]
    code = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    script = tmp_path / (path.stem + ".py")
    script.write_text("import matplotlib\nmatplotlib.use('Agg')\n" * ("matplotlib" in code) + code)
    proc = subprocess.run([sys.executable, str(script)], cwd=path.parent, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"{path.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
