"""Scalar computational graphs with fan-out accumulators (Kamper §3; Bradbury §2).

An expression is a :class:`Graph`: named inputs, then a list of nodes ``w = op(u, v, …)`` in
evaluation order, each ``op`` a scalar operation that knows its local derivatives ∂w/∂u. The
algorithm is Kamper's (§3.2):

* **forward**: evaluate the nodes in order and keep every intermediate value;
* **backward**: start from δ_f = 1 at the output, walk the nodes in reverse and, for each input u
  of ``w = op(…)``, add δ_w · ∂w/∂u to u's accumulator δ_u. When a variable fans out into several
  operations its accumulator collects one term per path — the sum rule across paths (Kamper
  eq. 1; Bradbury eq. 11) — and each term is the chain rule along one path.

Everything is a pure function of immutable values; :func:`backward` also returns the sequence of
accumulator updates, so a worked example can be checked line by line against a text.

Example (Kamper eq. 3)::

    g = graph.Graph(("x", "y"), (
        ("a", graph.sigmoid, "y"), ("b", graph.add, "x", "a"), ("c", graph.square, "x"),
        ("d", graph.add, "y", "c"), ("e", graph.reciprocal, "d"), ("f", graph.mul, "b", "e")))
    values = graph.forward(g, {"x": 3.0, "y": -4.0})
    result = graph.backward(g, values)      # result.grads["x"] ≈ −0.52432
"""
from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Op", "Node", "Graph", "Update", "Backward", "forward", "backward", "as_function",
           "reference_grads",
           "add", "sub", "mul", "div", "neg", "square", "reciprocal", "sigmoid", "tanh", "exp",
           "log", "sin", "cos", "power"]


class Op(NamedTuple):
    """A scalar operation w = fn(u₁, …, u_n) with its local derivatives.

    Kamper §3.4: each node of the graph needs two things, its forward value and the local
    derivatives of its output with respect to its inputs; an ``Op`` carries both.

    Attributes:
      name: how the operation is shown (``"add"``, ``"power(3)"`` …).
      arity: n, the number of inputs.
      fn: (u₁, …, u_n) ↦ w, on scalars (Python numbers or 0-d arrays).
      partials: (u₁, …, u_n) ↦ the tuple (∂w/∂u₁, …, ∂w/∂u_n) at the given input values.
    """

    name: str
    arity: int
    fn: Callable
    partials: Callable


def _sigmoid(u):
    return 1.0 / (1.0 + jnp.exp(-u))


# Each op: forward beside its local derivatives (the "two things" of Kamper §3.4).
add = Op("add", 2, lambda u, v: u + v, lambda u, v: (1.0, 1.0))          # ∂/∂u = ∂/∂v = 1
sub = Op("sub", 2, lambda u, v: u - v, lambda u, v: (1.0, -1.0))
mul = Op("mul", 2, lambda u, v: u * v, lambda u, v: (v, u))               # ∂(uv)/∂u = v
div = Op("div", 2, lambda u, v: u / v, lambda u, v: (1.0 / v, -u / v**2))
neg = Op("neg", 1, lambda u: -u, lambda u: (-1.0,))
square = Op("square", 1, lambda u: u**2, lambda u: (2 * u,))              # Kamper (3): 2x
reciprocal = Op("reciprocal", 1, lambda u: 1.0 / u, lambda u: (-1.0 / u**2,))  # Kamper (5)
sigmoid = Op("sigmoid", 1, _sigmoid,
             lambda u: ((1 - _sigmoid(u)) * _sigmoid(u),))                # Kamper (1): (1−a)a
tanh = Op("tanh", 1, jnp.tanh, lambda u: (1 - jnp.tanh(u) ** 2,))
exp = Op("exp", 1, jnp.exp, lambda u: (jnp.exp(u),))
log = Op("log", 1, jnp.log, lambda u: (1.0 / u,))
sin = Op("sin", 1, jnp.sin, lambda u: (jnp.cos(u),))
cos = Op("cos", 1, jnp.cos, lambda u: (-jnp.sin(u),))


def power(n) -> Op:
    """The operation u ↦ uⁿ for a constant exponent n, with ∂/∂u = n·uⁿ⁻¹.

    Args:
      n: the exponent, a number (not a graph variable).

    Returns:
      A one-input :class:`Op` named ``"power(n)"``.
    """
    return Op(f"power({n})", 1, lambda u: u**n, lambda u: (n * u ** (n - 1),))


class Node(NamedTuple):
    """One node of a :class:`Graph`: the assignment ``out = op(*ins)``.

    Attributes:
      out: the name of the value the node defines.
      op: the :class:`Op` applied.
      ins: ``op.arity`` entries, each a variable name (an input or an earlier node) or a numeric
        constant.
    """

    out: str
    op: Op
    ins: tuple


@dataclasses.dataclass(frozen=True)
class Graph:
    """A scalar expression: inputs, then nodes in evaluation order; the last node is the output f.

    Kamper §3 (the graph of f(x, y) = (x + σ(y))/(x² + y)); Bradbury §2 (paths through a graph).
    Nodes may be given as ``Node`` or as plain tuples ``(out, op, *ins)``; they are checked and
    converted to ``Node`` on construction.

    Attributes:
      inputs: the names of the input variables, a tuple of distinct strings.
      nodes: the :class:`Node` objects in evaluation order.
      output: the name of the last node, f (a read-only property).

    Raises:
      ValueError: if there are no nodes, input names repeat, a node has the wrong number of inputs,
        uses a name not defined before it, or reuses a name.
      TypeError: if a node's ``op`` is not an :class:`Op` or an input is neither a name nor a
        number.
    """

    inputs: tuple
    nodes: tuple

    def __post_init__(self):
        inputs = tuple(self.inputs)
        nodes = tuple(n if isinstance(n, Node) else Node(n[0], n[1], tuple(n[2:]))
                      for n in self.nodes)
        _validate(inputs, nodes)
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "nodes", nodes)

    @property
    def output(self) -> str:
        return self.nodes[-1].out


def _validate(inputs, nodes):
    if not nodes:
        raise ValueError("a Graph needs at least one node; received none.")
    known = set()
    for name in inputs:
        if not isinstance(name, str) or name in known:
            raise ValueError(f"graph inputs must be distinct names, received {inputs!r}.")
        known.add(name)
    for node in nodes:
        if not isinstance(node.op, Op):
            raise TypeError(f"node {node.out!r}: expected an fbackprop.graph.Op such as graph.add, "
                            f"received {type(node.op).__name__}.")
        if len(node.ins) != node.op.arity:
            raise ValueError(f"node {node.out!r}: {node.op.name} takes {node.op.arity} inputs, "
                             f"received {len(node.ins)}: {node.ins!r}.")
        for u in node.ins:
            if isinstance(u, str) and u not in known:
                raise ValueError(f"node {node.out!r} uses {u!r}, which is neither an input nor an "
                                 f"earlier node; define it first (known: {sorted(known)}).")
            if not isinstance(u, (str, numbers.Number)):
                raise TypeError(f"node {node.out!r}: inputs must be names or numbers, received "
                                f"{type(u).__name__}.")
        if node.out in known:
            raise ValueError(f"node name {node.out!r} is used twice; every value needs its own "
                             f"name.")
        known.add(node.out)


def _value(values, u):
    return values[u] if isinstance(u, str) else u


def forward(graph: Graph, inputs: Mapping) -> dict:
    """Evaluate the graph and keep every intermediate value (Kamper §3.2, the forward pass).

    Args:
      graph: the :class:`Graph`.
      inputs: a value (scalar) for every name in ``graph.inputs``; extra keys are ignored.

    Returns:
      A dict of every value by name, inputs first and then each node in evaluation order.

    Raises:
      ValueError: if an input has no value.
    """
    missing = [n for n in graph.inputs if n not in inputs]
    if missing:
        raise ValueError(f"forward needs a value for every input {list(graph.inputs)}; "
                         f"missing {missing}.")
    values = {name: inputs[name] for name in graph.inputs}
    for node in graph.nodes:
        values = {**values, node.out: node.op.fn(*(_value(values, u) for u in node.ins))}
    return values


class Update(NamedTuple):
    """One line of the backward pass: ``δ_target += δ_node · ∂node/∂target``.

    Kamper §3.2: the contribution is the chain rule along one path; adding it to the target's
    accumulator is the sum rule across paths (Kamper eq. 1; Bradbury eq. 11).

    Attributes:
      node: the name of the node w whose delta is passed back.
      target: the name of the input u of w whose accumulator is updated.
      local: ∂w/∂u, the local derivative.
      contribution: δ_w · ∂w/∂u.
      total: δ_u after the update.
      first: True where the accumulator starts (``=`` rather than ``+=``).
    """

    node: str
    target: str
    local: object         # ∂node/∂target
    contribution: object  # δ_node · ∂node/∂target
    total: object         # δ_target after the update
    first: bool           # True where the accumulator starts (``=`` rather than ``+=``)


class Backward(NamedTuple):
    """The result of :func:`backward`.

    Attributes:
      grads: δ_u = ∂f/∂u (times the seed) for every variable, inputs and nodes, by name; 0.0 for a
        variable that f does not depend on.
      updates: the :class:`Update` lines in the order they were applied.
    """

    grads: dict
    updates: tuple


def backward(graph: Graph, values: Mapping, seed=1.0) -> Backward:
    """Kamper's backward pass with one accumulator per variable (Kamper §3.2; Bradbury §2).

    Starting from δ_f = ``seed``, walk the nodes in reverse; for each input u of ``w = op(…)`` add
    δ_w · ∂w/∂u to δ_u — the chain rule along a path, summed across paths (Kamper eq. 1;
    Bradbury eq. 11). Constants have no accumulator.

    Args:
      graph: the :class:`Graph`.
      values: every value by name, as returned by :func:`forward`.
      seed: δ_f, the delta at the output; 1 gives ∂f/∂(·).

    Returns:
      A :class:`Backward`: the accumulators ``grads`` by name and the ``updates`` in order.
    """
    acc = {graph.output: seed}
    updates = []
    for node in reversed(graph.nodes):
        delta_w = acc.get(node.out, 0.0)  # final: every consumer of w comes later in the graph
        locals_ = node.op.partials(*(_value(values, u) for u in node.ins))
        for u, local in zip(node.ins, locals_):
            if not isinstance(u, str):
                continue  # constants have no accumulator
            contribution = delta_w * local  # chain rule along this path
            first = u not in acc
            total = contribution if first else acc[u] + contribution  # sum rule across paths
            acc = {**acc, u: total}
            updates.append(Update(node.out, u, local, contribution, total, first))
    grads = {name: acc.get(name, 0.0) for name in (*graph.inputs, *(n.out for n in graph.nodes))}
    return Backward(grads, tuple(updates))


def as_function(graph: Graph) -> Callable:
    """The graph as an ordinary function of its inputs, differentiable by ``jax.grad``.

    This is how the accumulators of :func:`backward` are checked (:func:`reference_grads`).

    Args:
      graph: the :class:`Graph`.

    Returns:
      A function ``f(*args)`` taking one scalar per input, positional in the order of
      ``graph.inputs``, and returning the output value f. It raises ``TypeError`` when given the
      wrong number of arguments.
    """

    def f(*args):
        if len(args) != len(graph.inputs):
            raise TypeError(f"expected {len(graph.inputs)} arguments {graph.inputs}, "
                            f"received {len(args)}.")
        return forward(graph, dict(zip(graph.inputs, args)))[graph.output]

    return f


def reference_grads(graph: Graph, inputs: Mapping) -> dict:
    """``jax.grad`` of :func:`as_function` with respect to every input, by name.

    Args:
      graph: the :class:`Graph`.
      inputs: a scalar value for every name in ``graph.inputs``; each is cast to the default
        float dtype.

    Returns:
      A dict of ∂f/∂u for every input u, each a 0-d float array.
    """
    args = tuple(jnp.asarray(inputs[n], dtype=jnp.result_type(float)) for n in graph.inputs)
    grads = jax.grad(as_function(graph), argnums=tuple(range(len(args))))(*args)
    return dict(zip(graph.inputs, grads))
