"""Code-health counts for a package: functions over 60 and over 100 lines, functions with 8 or more
parameters, private names imported across modules, public functions and classes without a docstring.

Usage: python scripts/code_health.py [PACKAGE_DIR] [-v]   (-v lists every offender)
"""
import ast, pathlib, sys
folders = [a for a in sys.argv[1:] if not a.startswith("-")]
root = pathlib.Path(folders[0] if folders else "fbackprop")
long60, long100, many, priv, nodoc = [], [], [], [], []
for f in sorted(root.rglob("*.py")):
    tree = ast.parse(f.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > 60: long60.append((n, f"{f}:{node.lineno} {node.name}"))
            if n > 100: long100.append((n, f"{f}:{node.lineno} {node.name}"))
            a = node.args
            k = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
            if a.args and a.args[0].arg in ("self", "cls"): k -= 1
            if k >= 8: many.append((k, f"{f}:{node.lineno} {node.name}"))
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("fbackprop")):
            for al in node.names:
                if al.name.startswith("_") and not al.name.startswith("__"):
                    priv.append(f"{f}:{node.lineno} {node.module}.{al.name}")
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_") \
                and not f.name.startswith("_") and ast.get_docstring(node) is None:
            nodoc.append(f"{f}:{node.lineno} {node.name}")
for name, rows in [("functions > 60 lines", long60), ("functions > 100 lines", long100),
                   ("functions with >= 8 parameters", many), ("private cross-module imports", priv),
                   ("public module-level functions/classes without docstring", nodoc)]:
    print(f"{name}: {len(rows)}")
    if "-v" in sys.argv:
        for r in sorted(rows, reverse=True): print("   ", r)
