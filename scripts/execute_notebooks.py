"""Execute the notebooks in notebooks/ with a real Jupyter kernel and save them with their outputs.

Every notebook is committed executed, so that it reads on GitHub with its numbers and plots. Run
this after changing a notebook or anything its output depends on; tests/test_notebooks.py fails
when the committed numbers are stale. Needs the ``notebooks`` extra (nbclient, ipykernel).

The saved notebooks are deterministic: nbformat 4.5 with cell ids derived from the file name and
position, no execution timestamps, small inline PNGs. A code cell tagged ``numbers`` holds printed
numbers that matter: the test regenerates them and compares them with the committed ones (within
``rtol`` — 1e-6 unless the cell's metadata sets ``"rtol"`` — and ``ATOL``, below which numbers are
rounding noise such as a 1e-16 error). Plots and timings are never compared.

Run:  python scripts/execute_notebooks.py [NOTEBOOK ...]     (default: every notebook)
"""
from __future__ import annotations

import argparse
import pathlib
import re
import sys

import nbformat
from nbclient import NotebookClient

NOTEBOOKS_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
TAG = "numbers"      # cells whose printed numbers the test compares
RTOL = 1e-6          # default relative tolerance of that comparison
ATOL = 1e-7          # numbers below this in magnitude are rounding noise (errors of 1e-16)
MAX_PNG_BYTES = 80_000
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def normalize(nb, stem: str):
    """nbformat 4.5 with deterministic cell ids; return the notebook."""
    nb.nbformat, nb.nbformat_minor = 4, 5
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{stem[:40]}-{i}"
        cell.setdefault("metadata", {})
    return nb


def execute(path: pathlib.Path, timeout: int = 600):
    """Run every cell of the notebook at ``path`` in a fresh kernel, from notebooks/.

    Args:
      path: the .ipynb file.
      timeout: seconds allowed per cell.

    Returns:
      The executed notebook (``nbformat.NotebookNode``); ``nbclient`` raises
      ``CellExecutionError`` naming the cell when one fails.
    """
    nb = normalize(nbformat.read(path, as_version=4), path.stem)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)
    return nb


def printed_text(cell) -> str:
    """What a code cell printed (stream and plain-text results), images left out."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") in ("execute_result", "display_data"):
            data = out.get("data", {})
            if "image/png" not in data:
                parts.append(data.get("text/plain", ""))
    return "".join(parts)


def numbers(text: str) -> list[float]:
    """Every number in ``text``, as floats."""
    return [float(m) for m in _NUMBER.findall(text)]


def compare(committed, fresh) -> list[str]:
    """The differences that matter between two executions of one notebook: the numbers of each
    cell tagged ``numbers``. Returns one message per stale cell (empty when none)."""
    problems = []
    for i, (old, new) in enumerate(zip(committed.cells, fresh.cells)):
        if old.cell_type != "code" or TAG not in old.get("metadata", {}).get("tags", []):
            continue
        rtol = float(old["metadata"].get("rtol", RTOL))
        a, b = numbers(printed_text(old)), numbers(printed_text(new))
        if len(a) != len(b):
            problems.append(f"cell {i}: {len(a)} numbers committed, {len(b)} printed now")
            continue
        bad = [(x, y) for x, y in zip(a, b)
               if not (max(abs(x), abs(y)) < ATOL or abs(x - y) <= rtol * max(abs(x), abs(y)))]
        if bad:
            problems.append(f"cell {i}: committed vs now {bad[:3]} (rtol {rtol:g})")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=pathlib.Path,
                        help="notebooks to execute (default: notebooks/*.ipynb)")
    args = parser.parse_args(argv)
    for path in args.notebooks or sorted(NOTEBOOKS_DIR.glob("*.ipynb")):
        nb = execute(path)
        nbformat.validate(nb)
        nbformat.write(nb, path)
        print(f"executed {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
