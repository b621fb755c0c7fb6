"""Networks — serial chains and graphs of layers — and Gordon's generic backward recurrence.

A network is the composition ``f_N p x = f_L p_L (… (f_1 p_1 x))`` of layers (Gordon, "The
Backpropagation algorithm"); its parameters are the tuple ``(p_1, …, p_L)`` (indices from 0 in
code). The backward pass is Gordon's pseudocode, for l = L … 1:

    d_L = D(C y) a_L
    Δp_l = −η · d_l · D(λv. f v a_{l−1}) p_l        (layer.D_param)
    d_{l−1} = d_l · D(f p_l) a_{l−1}               (layer.D_input)

Here d_l = ∂J/∂a_l (Gordon's d; Nielsen's δ is ∂J/∂z). The loss J is the mean over the batch of
the per-example cost, so d_L carries a factor 1/batch and every parameter gradient is the average
of the per-example gradients (offline learning, Gordon). Nothing on this path calls autodiff.

A graph (:func:`dag`) runs the same recurrence over its nodes in reverse topological order; a
node reading several activations sends one delta to each, and an activation read by several
nodes gets the sum of their deltas (Kamper §3, Bradbury §2; :func:`accumulate`). A chain is the
graph with one reader per activation, and :func:`serial` networks run through the same
:func:`sweep`.
"""
from __future__ import annotations

import dataclasses
import numbers

import jax
import jax.numpy as jnp

from .inputs import (
    as_network_input,
    is_concrete,
    require_fits,
    require_params,
    require_tree_like,
    tree_bytes,
)
from .layers.base import Layer

__all__ = ["Network", "serial", "dag", "forward", "accumulate", "sweep", "backward", "per_node"]


@dataclasses.dataclass(frozen=True)
class Network:
    """A graph of :class:`~fbackprop.Layer` nodes, a serial stack being the chain
    ``f_N p x = f_L p_L (… (f_1 p_1 x))`` (Gordon, "The Backpropagation algorithm"); pure
    functions only.

    Activations are numbered a_0 = x and a_{i+1} = the output of node i; nodes are stored in a
    topological order whose last node is the output.

    Attributes:
      layers: the layers, one per node, in topological order.
      input_shape: one example's shape (``None`` entries match any size, e.g. a time axis);
        ``None`` disables the input-shape check.
      name: a label for reports.
      nodes: a DAG's node names (its parameters are a dict keyed by them); ``None`` for a chain
        (parameters a tuple, node i reading a_i).
      inputs: a DAG's inputs per node, as activation indices (0 = x, i + 1 = node i); a node
        with several receives them as a tuple in ``apply`` and returns a tuple from ``D_input``.
      input_vocab: when the layers reading x take integer token ids (an embedding), their
        number; x is then an integer array. ``None``: x is floating point.

    Methods:
      init(key): → the parameters: a tuple ``(p_1, …, p_L)`` (chain) or ``{node: p}`` (DAG).
      apply(params, x): → the output for x of shape ``(batch, *input_shape)``.
    """

    layers: tuple
    input_shape: tuple | None = None
    name: str = "serial"
    nodes: tuple | None = None
    inputs: tuple | None = None
    input_vocab: int | None = None

    @property
    def keys(self) -> tuple:
        """The key of each node's parameters: its index (chain) or its name (DAG)."""
        return tuple(range(len(self.layers))) if self.nodes is None else self.nodes

    @property
    def sources(self) -> tuple:
        """Per node, the activation indices it reads (a chain: node i reads a_i)."""
        return tuple((i,) for i in range(len(self.layers))) if self.inputs is None else self.inputs

    def init(self, key):
        if is_concrete(key):  # size the parameters before XLA allocates them
            device = next(iter(key.devices()), None) if hasattr(key, "devices") else None
            require_fits(tree_bytes(jax.eval_shape(self._init, key)), f"{self.name}: parameters",
                         device=device, fix="Build a smaller network (fewer or narrower layers).")
        return self._init(key)

    def _init(self, key):
        keys = jax.random.split(key, len(self.layers))
        params = [layer.init(k) for layer, k in zip(self.layers, keys)]
        return tuple(params) if self.nodes is None else dict(zip(self.nodes, params))

    def apply(self, params, x):
        x = as_network_input(x, self.input_shape, self.input_vocab)
        require_params(self, params)
        return forward(self, params, x)[-1]

    def __len__(self):
        return len(self.layers)

    def __repr__(self):
        if self.nodes is None:
            return f"Network({self.name}: " + " → ".join(l.name for l in self.layers) + ")"
        names = ("x",) + self.nodes
        return f"Network({self.name}: " + "; ".join(
            f"{n} = {l.name}({', '.join(names[s] for s in srcs)})"
            for n, l, srcs in zip(self.nodes, self.layers, self.inputs)) + ")"


def _require_layer(layer, where: str, who: str):
    if not isinstance(layer, Layer):
        raise TypeError(f"{who}: {where} must be an fbackprop.Layer(init, apply, D_input, "
                        f"D_param), received {type(layer).__name__}.")


def serial(*layers: Layer, input_shape=None, name: str = "serial") -> Network:
    """Compose layers in order: ``serial(l1, l2)`` computes ``f₂ p₂ (f₁ p₁ x)`` (Gordon's
    composition of layer functions): the graph in which node i reads a_i only.

    Args:
      *layers: :class:`~fbackprop.Layer` objects, at least one.
      input_shape: one example's shape; when given, inputs of another shape are rejected with a
        clear message.
      name: a label for reports.

    Returns:
      A :class:`Network` with parameters ``(p_1, …, p_L)``.
    """
    if not layers:
        raise ValueError("serial needs at least one Layer; received none.")
    for i, layer in enumerate(layers):
        _require_layer(layer, f"argument {i}", "serial")
    return Network(tuple(layers), _input_shape(input_shape, "serial"), name,
                   input_vocab=layers[0].input_vocab)


def _input_shape(input_shape, who: str):
    """One example's shape as a tuple of positive ints (``None`` entries: any size)."""
    if input_shape is None:
        return None
    shape = None if isinstance(input_shape, (str, bytes)) else tuple(input_shape) \
        if hasattr(input_shape, "__iter__") else None
    def size(s):  # a positive int (NumPy ints too), None for any size, else 0 (refused)
        if s is None:
            return None
        return int(s) if isinstance(s, numbers.Integral) and not isinstance(s, bool) else 0

    ints = None if shape is None else [size(s) for s in shape]
    if ints is None or any(s is not None and s < 1 for s in ints):
        raise ValueError(f"{who}: input_shape must be one example's shape, a tuple of positive "
                         f"ints (None for any size), received {input_shape!r}. E.g. "
                         f"input_shape=(8, 8).")
    return tuple(ints)


def _topological_order(names, inputs):
    """Node indices in an order where every node follows its inputs (depth-first, keeping the
    given order where it already is one); ``ValueError`` naming a cycle."""
    order, state = [], {}  # state: 1 = on the current path, 2 = placed
    index = {n: i for i, n in enumerate(names)}

    def visit(i, path):
        if state.get(i) == 2:
            return
        if state.get(i) == 1:
            cycle = path[path.index(names[i]):] + [names[i]]
            raise ValueError(f"dag: the nodes form a cycle {' → '.join(cycle)}; expected a "
                             f"directed acyclic graph. Fix: let each node read only earlier "
                             f"nodes or 'x'.")
        state[i] = 1
        for src in inputs[i]:
            if src != "x":
                visit(index[src], path + [names[i]])
        state[i] = 2
        order.append(i)

    for i in range(len(names)):
        visit(i, [])
    return order


def _require_nodes(nodes):
    """``dag``'s nodes as three lists (names, layers, input names), each node checked."""
    nodes = tuple(nodes)
    if not nodes:
        raise ValueError("dag needs at least one node (name, layer, inputs); received none.")
    names, layers, inputs = [], [], []
    for i, node in enumerate(nodes):
        if not (isinstance(node, (tuple, list)) and len(node) == 3 and isinstance(node[0], str)):
            raise TypeError(f"dag: node {i} must be a triple (name: str, layer, inputs), received "
                            f"{node!r}.")
        n, layer, ins = node
        _require_layer(layer, f"node {n!r}", "dag")
        ins = (ins,) if isinstance(ins, str) else tuple(ins)
        if n == "x" or n in names:
            raise ValueError(f"dag: node names must be unique and not 'x' (the network input), "
                             f"received {n!r} twice or as 'x'. Fix: rename the node.")
        if not ins:
            raise ValueError(f"dag: node {n!r} has no inputs; expected a tuple of node names or "
                             f"'x'.")
        names.append(n), layers.append(layer), inputs.append(ins)
    return names, layers, inputs


def _require_connected(names, inputs, output):
    """Every input names a node or 'x', ``output`` is a node, and every node leads to it."""
    known = set(names) | {"x"}
    for n, ins in zip(names, inputs):
        unknown = [s for s in ins if s not in known]
        if unknown:
            raise ValueError(f"dag: node {n!r} reads {unknown}, which is not a node; expected "
                             f"one of {sorted(known)}. Fix: add the node or correct the name.")
    if output not in names:
        raise ValueError(f"dag: output must be a node name, one of {names}; received {output!r}.")
    used, stack = set(), [output]  # every node must lead to the output
    while stack:
        n = stack.pop()
        if n not in used and n != "x":
            used.add(n)
            stack += list(inputs[names.index(n)])
    unused = [n for n in names if n not in used]
    if unused:
        raise ValueError(f"dag: nodes {unused} do not lead to the output {output!r}; every node "
                         f"must. Fix: remove them or read their output.")


def dag(nodes, output: str, *, input_shape=None, name: str = "dag") -> Network:
    """A network whose layers form a directed acyclic graph (Kamper §3, Bradbury §2).

    Example: a residual block ``x + f(x)``::

        fb.dag([("f", fb.dense(4, 4, "tanh"), ("x",)),
                ("sum", fb.add(), ("x", "f"))], output="sum", input_shape=(4,))

    Args:
      nodes: a sequence of ``(name, layer, inputs)``: ``name`` a string (not ``"x"``), ``layer``
        a :class:`~fbackprop.Layer`, ``inputs`` a tuple of node names (or one name) — ``"x"`` is
        the network input. A node with several inputs receives them as a tuple in ``apply`` and
        its ``D_input`` returns a tuple of deltas, one per input.
      output: the name of the node whose output is the network's output.
      input_shape: one example's shape (see :func:`serial`).
      name: a label for reports.

    Returns:
      A :class:`Network`; its parameters are a dict ``{node name: p}``, its deltas (in
      :class:`Backprop`) a dict keyed by ``"x"`` and the node names. An activation read by
      several nodes gets the sum of their deltas (see :func:`accumulate`).

    Raises:
      ValueError: no nodes, a duplicate or reserved name, an unknown input name, a cycle, or a
        node that does not lead to ``output``.
      TypeError: a node that is not a ``(name, Layer, inputs)`` triple.
    """
    names, layers, inputs = _require_nodes(nodes)
    _require_connected(names, inputs, output)
    order = _topological_order(names, inputs)
    position = {names[i]: k + 1 for k, i in enumerate(order)}
    position["x"] = 0
    vocab = {layers[i].input_vocab for i in order if "x" in inputs[i]}
    if len(vocab) > 1:
        raise ValueError("dag: the nodes reading 'x' disagree on its dtype: an embedding reads "
                         "integer token ids, other layers floats. Fix: read 'x' with embeddings "
                         "only, or with float layers only.")
    return Network(tuple(layers[i] for i in order),
                   _input_shape(input_shape, "dag"), name,
                   nodes=tuple(names[i] for i in order),
                   inputs=tuple(tuple(position[s] for s in inputs[i]) for i in order),
                   input_vocab=vocab.pop())


def _gather(values, sources):
    """A node's input: the one activation it reads, or the tuple of several."""
    return values[sources[0]] if len(sources) == 1 else tuple(values[s] for s in sources)


def forward(net: Network, params, x, *, offsets=None) -> tuple:
    """The forward pass keeping every activation: a_{i+1} = f p_i (its inputs) (Gordon's
    a_l = f p_l a_{l−1} on a chain), in topological order.

    Args:
      net: the network.
      params: its parameters (tuple for a chain, dict for a DAG).
      x: the input a_0, shape ``(batch, *input_shape)`` (not validated here; see
        :meth:`Network.apply`).
      offsets: optional, one array per node added to its output; the checker differentiates
        the loss with respect to them at zero to get every ∂J/∂a by autodiff.

    Returns:
      ``(a_0 = x, a_1, …, a_L)``; a_L is the output.
    """
    if not isinstance(params, dict if net.nodes is not None else (tuple, list)) or \
            len(params) != len(net.layers):
        raise TypeError(f"params must be the {len(net.layers)} per-node parameters that "
                        f"net.init(key) returns (a {'dict' if net.nodes else 'tuple'}), received "
                        f"{type(params).__name__}. Build them with net.init(key).")
    activations = [x]
    for i, (layer, key, sources) in enumerate(zip(net.layers, net.keys, net.sources)):
        inputs = _gather(activations, sources)
        try:
            a = layer.apply(params[key], inputs)  # a_l = f p_l a_{l−1}
        except (TypeError, ValueError) as err:
            if all(s == 0 for s in sources) and isinstance(err, TypeError):  # a raw JAX error
                raise ValueError(f"{_node_label(net, i)} ({layer.name}) cannot take x of shape "
                                 f"{jnp.shape(x)}: {str(err).rstrip('.')}. Give x the shape the "
                                 f"first layer expects.") from err
            if all(s == 0 for s in sources):
                raise
            raise ValueError(
                f"{_node_label(net, i)} ({layer.name}) cannot take the output of "
                f"{' and '.join('x' if k == 0 else _node_label(net, k - 1) for k in sources)}, "
                f"of shape {jax.tree.map(jnp.shape, inputs)}: {str(err).rstrip('.')}. The layers' "
                f"widths must chain: each layer's input size must equal the output size of the "
                f"layer that feeds it.") from err
        activations.append(a if offsets is None else a + offsets[i])
    return tuple(activations)


def accumulate(total, d):
    """Add one consumer's delta into an activation's accumulator: when a variable feeds several
    operations its delta is the sum of what each sends back (Kamper §3, the multivariate chain
    rule; Bradbury §2). Start at zero (``None``), add, never overwrite."""
    return d if total is None else total + d


def sweep(net: Network, activations, d_L, node_backward, *, input_grad: bool):
    """The backward recurrence over the nodes in reverse topological order, one accumulator per
    activation (a chain has one consumer per activation: Gordon's recurrence exactly).

    Args:
      net: the network.
      activations: ``(a_0, …, a_L)`` from :func:`forward`.
      d_L: ∂J/∂a_L.
      node_backward: ``(i, a, d, needs_input) → (deltas to the inputs, ∂J/∂p_i)`` for node i at
        its input(s) ``a`` and output delta ``d``; the deltas a tuple for several inputs (or
        ``None`` when not ``needs_input``).
      input_grad: also accumulate d_0 = ∂J/∂x.

    Returns:
      ``(grads, deltas)``: lists, ``grads[i]`` of node i, ``deltas[k]`` = ∂J/∂a_k.
    """
    deltas = [None] * len(activations)
    deltas[-1] = d_L
    grads = [None] * len(net.layers)
    for i in reversed(range(len(net.layers))):  # every consumer of a_{i+1} has already run
        sources = net.sources[i]
        needs_input = input_grad or any(s > 0 for s in sources)
        d_in, grads[i] = node_backward(i, _gather(activations, sources), deltas[i + 1],
                                       needs_input)
        if needs_input:
            for s, d_s in zip(sources, d_in if len(sources) > 1 else (d_in,)):
                deltas[s] = accumulate(deltas[s], d_s)  # Σ over readers, never overwritten
    if not input_grad:
        deltas[0] = None
    return grads, deltas


def per_node(net: Network, values):
    """Per-node values arranged as the network holds its params.

    Args:
      net: the network.
      values: one value per node, in the order of ``net.layers``.

    Returns:
      A tuple for a chain, a dict keyed by node name for a DAG.
    """
    return tuple(values) if net.nodes is None else dict(zip(net.nodes, values))


def _node_label(net, i):
    return f"layer {i}" if net.nodes is None else f"node {net.nodes[i]!r}"


def backward(net: Network, params, activations, d_L, *, input_grad: bool = False,
             recompute: bool = False):
    """Gordon's backward recurrence on the hand-written rules, over a chain or a graph.

    For each node, last first: ∂J/∂p_i = d_i · D(λv. f v a) p_i (``D_param``) and, per input,
    d_i · D(f p_i) a (``D_input``) added into that input's accumulator (:func:`accumulate`).

    Args:
      net: the network.
      params: its parameters (tuple for a chain, dict for a DAG).
      activations: ``(a_0 = x, …, a_L)`` from :func:`forward`.
      d_L: ∂J/∂a_L, shaped like ``a_L`` (for the batch-mean loss it carries the 1/batch).
      input_grad: also compute ``d_0`` = ∂J/∂x.
      recompute: hide each layer's input behind ``lax.optimization_barrier`` before its rules
        run, so that what a rule recomputes from its input (the attention probabilities, a
        dense layer's pre-activation for GELU's derivative) is recomputed in the backward pass
        instead of being merged by XLA with the forward's copy and kept alive from the forward
        to the backward: less memory, more arithmetic (docs/PERFORMANCE.md, "Memory"). The
        values are the same.

    Returns:
      ``(grads, deltas)``: ``grads`` = ∂J/∂params, structured like params; ``deltas`` = d_k =
      ∂J/∂a_k for k = 0 … L, a tuple (chain) or a dict keyed by ``"x"`` and node (DAG); d_0 =
      ∂J/∂x (Bradbury Table 1 step 7) only when ``input_grad``, otherwise ``None``. A layer with
      a fused ``backward`` rule computes its two derivatives in one call.
    """
    if tuple(jnp.shape(d_L)) != tuple(jnp.shape(activations[-1])):
        raise ValueError(f"d_L must have the shape of the output a_L, "
                         f"{jnp.shape(activations[-1])}, received shape {jnp.shape(d_L)}. "
                         f"Pass ∂J/∂a_L, one entry per output.")

    def node_backward(i, a, d, needs_input):
        layer, p = net.layers[i], params[net.keys[i]]
        if recompute:
            a = jax.lax.optimization_barrier(a)
        if needs_input and layer.backward is not None:
            d_in, g = layer.backward(p, a, d)  # both Euler derivatives at once
        else:
            g = layer.D_param(p, a, d)  # ∂J/∂p_l = d_l · D(λv. f v a_{l−1}) p_l
            d_in = layer.D_input(p, a, d) if needs_input else None  # d_l · D(f p_l) a_{l−1}
        require_tree_like(g, p, what=f"the gradient returned by D_param of {_node_label(net, i)} "
                                     f"({layer.name})",
                          fix="A layer's D_param must return a pytree shaped like its params.")
        if needs_input and jax.tree.map(jnp.shape, d_in) != jax.tree.map(jnp.shape, a):
            raise ValueError(
                f"D_input of {_node_label(net, i)} ({layer.name}) returned deltas of shape "
                f"{jax.tree.map(jnp.shape, d_in)}; they must have the shapes of the layer's "
                f"input(s), {jax.tree.map(jnp.shape, a)}.")
        return d_in, g

    grads, deltas = sweep(net, activations, d_L, node_backward, input_grad=input_grad)
    if net.nodes is None:
        return tuple(grads), tuple(deltas)
    return per_node(net, grads), {"x": deltas[0], **per_node(net, deltas[1:])}
