"""Code-health counts for a package: functions over 60 and over 100 lines, functions with 8 or more
parameters, private names imported across modules, public functions and classes without a docstring.

Usage: python scripts/code_health.py [PACKAGE_DIR] [-v]   (-v lists every offender)
"""
import ast
import pathlib
import sys


def parameters(node: ast.FunctionDef) -> int:
    """How many parameters ``node`` takes, ``self``/``cls`` not counted."""
    a = node.args
    count = (len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg)
             + bool(a.kwarg))
    return count - bool(a.args and a.args[0].arg in ("self", "cls"))


def scan(root: pathlib.Path) -> dict:
    """Every offender under ``root``, by count."""
    found = {"functions > 60 lines": [], "functions > 100 lines": [],
             "functions with >= 8 parameters": [], "private cross-module imports": [],
             "public module-level functions/classes without docstring": []}
    for f in sorted(root.rglob("*.py")):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{f}:{node.lineno} {node.name}"
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    found["functions > 60 lines"].append((n, where))
                if n > 100:
                    found["functions > 100 lines"].append((n, where))
                if parameters(node) >= 8:
                    found["functions with >= 8 parameters"].append((parameters(node), where))
            if isinstance(node, ast.ImportFrom) and (
                    node.level or (node.module or "").startswith("fbackprop")):
                found["private cross-module imports"] += [
                    f"{f}:{node.lineno} {node.module}.{al.name}" for al in node.names
                    if al.name.startswith("_") and not al.name.startswith("__")]
        found["public module-level functions/classes without docstring"] += [
            f"{f}:{node.lineno} {node.name}" for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_")
            and not f.name.startswith("_") and ast.get_docstring(node) is None]
    return found


def main(argv) -> None:
    folders = [a for a in argv if not a.startswith("-")]
    found = scan(pathlib.Path(folders[0] if folders else "fbackprop"))
    for name, rows in found.items():
        print(f"{name}: {len(rows)}")
        if "-v" in argv:
            for r in sorted(rows, reverse=True):
                print("   ", r)


if __name__ == "__main__":
    main(sys.argv[1:])
