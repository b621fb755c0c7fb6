"""The package's structure keeps its promises: the layer files call no autodiff, modules import
each other in one direction only (no circle, no import hidden in a function to dodge one), the
recurrence runs a layer's fused rule — so a recurrent layer's reverse scan runs once per
backward pass — and a wrong fused rule is found and named by the checker."""
import ast
import pathlib

import jax
import pytest

import fbackprop as fb
from fbackprop.gradcheck import sample_point, tree_relative_error

PACKAGE = pathlib.Path(fb.__file__).parent
AUTODIFF = {"grad", "vjp", "jvp", "value_and_grad", "jacrev", "jacfwd", "linearize", "hessian"}
# Imports a function may hold: heavy or optional third-party modules, loaded only when used.
# The command line imports its subcommands and JAX only once arguments are parsed (a fast --help).
COMMAND = ("fbackprop.cli", "fbackprop.commands")
LAZY = ("orbax", "matplotlib", "tqdm", "sklearn", "mnist1d", "torch", "nbformat", "nbclient")


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(("fbackprop",) + path.relative_to(PACKAGE).with_suffix("").parts)
        yield name.removesuffix(".__init__"), path, ast.parse(path.read_text())


def test_layer_modules_call_no_autodiff():
    for name, path, tree in _modules():
        if not name.startswith("fbackprop.layers"):
            continue
        used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name) and node.value.id == "jax"}
        assert not used & AUTODIFF, f"{path} calls jax.{sorted(used & AUTODIFF)}"


def _resolve(module, node):
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = module.split(".")
    if node.level:
        base = base[:len(base) - node.level + (1 if module.endswith("__init__") else 0)]
    prefix = ".".join(base + ([node.module] if node.module else []))
    return [prefix] + [f"{prefix}.{a.name}" for a in node.names]


def test_no_import_circle_and_no_import_inside_a_function():
    names = {name for name, _, _ in _modules()}
    graph, hidden = {}, []
    for name, path, tree in _modules():
        pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges = set()
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets = _resolve(pkg + ".x", node) if isinstance(node, ast.ImportFrom) and \
                    node.level else _resolve(name, node)
                edges |= {t for t in targets if t in names and t != name}
        graph[name] = edges
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        mod = (node.module if isinstance(node, ast.ImportFrom)
                               else node.names[0].name)
                        if not (mod or "").startswith(LAZY) and not name.startswith(COMMAND):
                            hidden.append(f"{name}.{fn.name}: import {mod}")
    assert not hidden, hidden
    # a package's __init__ re-exports its modules; the circle that matters is between modules
    state = {}

    def visit(n, stack):
        state[n] = "open"
        for m in graph.get(n, ()):
            if m == n.rsplit(".", 1)[0] or n == "fbackprop":
                continue  # a module may read its own package's __init__ constants
            if state.get(m) == "open":
                pytest.fail("import circle: " + " → ".join(stack + [m]))
            if m not in state:
                visit(m, stack + [m])
        state[n] = "done"

    for n in graph:
        if n not in state:
            visit(n, [n])


def _subjaxprs(params):
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            inner = getattr(item, "jaxpr", item)  # a ClosedJaxpr holds a Jaxpr
            if hasattr(inner, "eqns"):
                yield inner


def _scans(jaxpr, reverse):
    """How many scans with the given direction the program holds, nested ones included."""
    return sum((eqn.primitive.name == "scan" and eqn.params["reverse"] == reverse)
               + sum(_scans(sub, reverse) for sub in _subjaxprs(eqn.params))
               for eqn in jaxpr.eqns)


def _behind_a_dense(recurrent):
    """A recurrent layer that is not the first, so the recurrence needs both of its rules."""
    return fb.serial(fb.dense(3, 3, "tanh"), recurrent, fb.dense(4, 2, "identity"),
                     input_shape=(None, 3))


RECURRENT = [fb.rnn_layer(3, 4, "tanh", output="last"), fb.lstm_layer(3, 4, output="all"),
             fb.gru_layer(3, 4, output="last")]


@pytest.mark.parametrize("layer", RECURRENT, ids=["rnn", "lstm", "gru"])
def test_a_recurrent_layer_runs_its_reverse_scan_once_per_backward_pass(layer):
    for candidate, scans in ((layer, 1), (layer._replace(D_param=layer.D_param), 2)):
        net = _behind_a_dense(candidate)  # without the fused rule, each Euler rule scans
        params, x, y = sample_point(net, "mse", 2, input_shape=(5, 3))
        jaxpr = jax.make_jaxpr(fb.manual_grad(net, "mse"))(params, x, y).jaxpr
        assert _scans(jaxpr, reverse=True) == scans


def test_a_wrong_fused_rule_is_what_the_recurrence_runs_and_what_the_checker_names():
    good = fb.dense(4, 3, "tanh")

    def backward(p, a, d):  # the bias gradient doubled, in the fused rule only
        d_input, grads = good.backward(p, a, d)
        return d_input, {**grads, "b": 2 * grads["b"]}

    net = fb.serial(fb.dense(2, 4, "tanh"), good._replace(backward=backward, name="fused slip"),
                    input_shape=(2,))
    params, x, y = sample_point(net, "mse", 3)
    manual = fb.manual_grad(net, "mse")(params, x, y)
    ref = jax.grad(fb.loss_fn(net, "mse"))(params, x, y)
    assert tree_relative_error(manual[1]["b"], ref[1]["b"]) > 0.5  # the fused rule ran
    report = fb.check(net, "mse", params, x, y)
    assert report.failing_layers == (1,)
    failing = {(r.rule, r.leaf, r.pair) for r in report.failures if r.layer == 1}
    assert ("backward", "['b']", "hand–autodiff") in failing
    assert ("backward", "['b']", "fused–Euler") in failing
    assert not any(r.rule in ("D_param", "D_input") for r in report.failures)


def test_a_slip_in_the_fused_attention_rule_alone_fails_the_fused_euler_row(monkeypatch):
    """Attention's Euler rules are written apart from its fused rule, so the fused–Euler row
    compares two writings: the softmax backward without its row-sum term, planted in the fused
    rule only, fails that row while D_input and D_param still pass."""
    from fbackprop.layers import attention

    good = fb.causal_self_attention(4, 2, dtype=jax.numpy.float64)
    params = good.init(jax.random.PRNGKey(0))
    a = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 4), jax.numpy.float64)
    assert fb.check_layer(good, params, a).ok
    monkeypatch.setattr(attention, "softmax_backward", lambda s, d: s * d)  # no − Σ_j d_j s_j
    report = fb.check_layer(fb.causal_self_attention(4, 2, dtype=jax.numpy.float64), params, a)
    failing = {(r.rule, r.pair) for r in report.failures}
    assert ("backward", "fused–Euler") in failing
    assert not any(r.rule in ("D_param", "D_input") for r in report.failures)


def test_swapping_a_rule_drops_the_fused_rule_built_from_the_old_one():
    good = fb.dense(3, 2, "sigmoid")
    swapped = good._replace(D_param=lambda p, a, d: good.D_param(p, a, d))
    assert good.backward is not None and swapped.backward is None
    kept = good._replace(name="renamed")
    assert kept.backward is good.backward
