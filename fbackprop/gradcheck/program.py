"""The compiled programs of a check, one per (network, cost, settings, argument shapes), cached.

A network's program computes, at one sample point and in one XLA program: the loss; the incoming
delta of every layer by autodiff alone (``d_L`` = ``jax.vjp`` of the batch-mean cost, then
``d_{l−1}`` = ``jax.vjp`` of layer l's ``apply`` applied to ``d_l``, in reverse); at that delta,
each layer's hand-written ``D_param``, ``D_input``, fused ``backward`` and ``time_deltas`` beside
their automatic twins; the cost's ``D(C y) a_L / batch``; the whole hand-written recurrence beside
``jax.grad``; the kink distances; and, when asked, the finite differences. The programs of
``check_vjp`` and ``check_layer`` do the same at a random output cotangent u, with the scalar
J = ⟨u, f(args)⟩, and can add the forward-mode consistency ⟨u, J v⟩ = ⟨Jᵀu, v⟩.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ..loss import batch_mean_cost, loss_fn
from ..network import backward, forward, sweep
from .fd import fd_block
from .rules import call_rule, layer_reference, time_deltas_reference

__all__ = ["spec", "program", "network_core", "grad_core", "vjp_core", "layer_core"]


def spec(tree):
    """A hashable description of a pytree of arrays: its structure, shapes and dtypes."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((tuple(jnp.shape(t)), jnp.result_type(t).name) for t in leaves)


def _unspec(spec_):
    treedef, leaves = spec_
    return jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in leaves])


@functools.lru_cache(maxsize=64)
def program(make_core, key, spec_, jit: bool):
    """``(fn, notes)``: ``make_core(key, notes)`` builds the traced function; it is lowered and
    compiled once for the argument spec ``spec_`` (``notes`` fill in while it is traced, with
    whatever a hand-written rule did wrong)."""
    notes: dict = {}
    core = make_core(key, notes)
    if not jit:
        return core, notes
    return jax.jit(core).lower(*_unspec(spec_)).compile(), notes


def _layer_entry(layer, l, p, a, d, notes):
    """Hand-written values of layer ``l`` beside their automatic twins at delta ``d``."""
    ref_p, ref_a = layer_reference(layer, p, a, d)
    entry = {"ref_p": ref_p, "ref_a": ref_a}
    entry["hand_p"], notes[(l, "D_param")] = call_rule(layer.D_param, ref_p, p, a, d)
    entry["hand_a"], notes[(l, "D_input")] = call_rule(layer.D_input, ref_a, p, a, d)
    if layer.backward is not None:
        entry["fused"], notes[(l, "backward")] = call_rule(layer.backward, (ref_a, ref_p), p, a, d)
    if layer.time_deltas is not None and layer.probes.offset_apply is not None:
        entry["time_ref"] = time_deltas_reference(layer, p, a, d)
        entry["time_hand"], notes[(l, "time")] = call_rule(layer.time_deltas, entry["time_ref"],
                                                           p, a, d)
    if layer.kink_distance is not None:
        entry["kink"] = jax.vmap(lambda ai: jnp.asarray(
            layer.kink_distance(p, jax.tree.map(lambda t: t[None], ai)), d.dtype))(a)
    return entry, ref_a


def _fan_out(net):
    """How many nodes read each activation a_0 … a_L."""
    count = [0] * (len(net.layers) + 1)
    for sources in net.sources:
        for s in sources:
            count[s] += 1
    return count


def network_core(key, notes):
    """The program for :func:`fbackprop.check`: ``core(params, x, y, V, rand_idx)``.

    The layers are walked by the network's own recurrence (:func:`fbackprop.network.sweep`) with
    each node's autodiff twin in place of its rules, so every node's rules are compared at the
    delta autodiff gives it. In a graph, an activation read by several nodes also gets its
    accumulated delta (the recurrence's sum of those twins) compared with ∂J/∂a by autodiff of
    the whole forward pass: a sum that overwrites instead of adding fails at that node.
    """
    (net, cost), fd, plan, _ = key
    L = len(net.layers)
    fan_out = _fan_out(net)
    summed = [i for i in range(L) if fan_out[i + 1] > 1]

    def cost_mean(y, a):
        return batch_mean_cost(cost, y, a)

    def core(params, x, y, V, rand_idx):
        activations = forward(net, params, x)
        a_L = activations[-1]
        loss, d = jax.value_and_grad(cost_mean, argnums=1)(y, a_L)  # d_L by autodiff
        d_L_hand = cost.D(y, a_L) / a_L.shape[0]   # the recurrence's d_L = D(C y) a_L / batch
        out = {"loss": loss, "cost": {"hand": d_L_hand, "auto": d}, "layers": [None] * L,
               "sums": {}}
        auto_deltas = None
        if summed:  # ∂J/∂a_{i+1} of every node by autodiff of the forward pass with offsets
            offsets = [jnp.zeros_like(a) for a in activations[1:]]
            auto_deltas = jax.grad(lambda o: cost_mean(y, forward(net, params, x,
                                                                  offsets=o)[-1]))(offsets)

        def node_reference(i, a, d_i, needs_input):
            del needs_input
            if auto_deltas is not None:
                if i in summed:
                    out["sums"][i] = {"hand": d_i, "auto": auto_deltas[i]}
                d_i = auto_deltas[i]
            out["layers"][i], ref_a = _layer_entry(net.layers[i], i, params[net.keys[i]], a, d_i,
                                                   notes)
            return ref_a, None

        sweep(net, activations, d, node_reference, input_grad=True)
        auto = jax.grad(loss_fn(net, cost))(params, x, y)
        # the whole hand-written recurrence (fails to trace if a rule returns a wrong shape)
        hand, why = call_rule(lambda: backward(net, params, activations, d_L_hand)[0], auto)
        notes["grad"] = {k: "not computed: the recurrence " + v for k, v in why.items()}
        out["grad"] = {"hand": hand, "auto": auto}
        if fd is not None:
            out["fd"] = fd_block(lambda q: cost_mean(y, forward(net, q, x)[-1]), params,
                                 (hand, auto, "*" not in notes["grad"]), (V, rand_idx), fd, plan)
        return out

    return core


def grad_core(key, notes):
    """The program for :func:`fbackprop.check_grad`: ``core(params, args, V, rand_idx)``."""
    (loss, grad_fn), fd, plan, _ = key

    def core(params, args, V, rand_idx):
        value, auto = jax.value_and_grad(loss)(params, *args)
        hand, notes["grad"] = call_rule(grad_fn, auto, params, *args)
        out = {"loss": value, "grad": {"hand": hand, "auto": auto}}
        if fd is not None:
            out["fd"] = fd_block(lambda q: loss(q, *args), params,
                                 (hand, auto, "*" not in notes["grad"]), (V, rand_idx), fd, plan)
        return out

    return core


def _inner(a, b):
    """⟨a, b⟩ summed over every leaf of two pytrees of one structure."""
    return sum((jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))),
               jnp.zeros(()))


def _norm(a):
    return jnp.sqrt(_inner(a, a))


def jvp_block(fun, args, v, u, hand):
    """⟨u, J v⟩ by ``jax.jvp`` of the forward ``fun`` at ``args`` along tangent ``v``, and
    ⟨Jᵀu, v⟩ with ``hand`` = Jᵀu from a hand-written rule; the scale ‖u‖·‖J v‖ bounds both."""
    _, Jv = jax.jvp(fun, tuple(args), tuple(v))
    return {"jv": _inner(u, Jv), "vjt": _inner(hand, v), "scale": _norm(u) * _norm(Jv)}


def vjp_core(key, notes):
    """The program for :func:`fbackprop.check_vjp`: ``core(args, u, v, V, rand_idx)``: the
    custom rule of ``f`` at cotangent u beside ``jax.vjp`` of its primal ``f.fun``, or of the
    ``reference`` (then with f's forward beside the reference's)."""
    (f, reference), fd, plan, with_jvp = key
    primal = f.fun if reference is None else reference

    def core(args, u, v, V, rand_idx):
        y, auto_vjp = jax.vjp(primal, *args)
        auto = auto_vjp(u)
        hand, notes["grad"] = call_rule(lambda: jax.vjp(f, *args)[1](u), auto)
        out = {"loss": _inner(u, y), "grad": {"hand": hand, "auto": auto}}
        if reference is not None:  # f's own forward (a kernel, say) against the reference
            value, notes["forward"] = call_rule(f, y, *args)
            out["forward"] = {"hand": value, "auto": y}
        if with_jvp:
            out["jvp"] = jvp_block(primal, args, v, u, hand)
        if fd is not None:
            out["fd"] = fd_block(lambda q: _inner(u, primal(*q)), args,
                                 (hand, auto, "*" not in notes["grad"]), (V, rand_idx), fd, plan)
        return out

    return core


def layer_core(key, notes):
    """The program for :func:`fbackprop.check_layer`: ``core(p, a, u, v, V, rand_idx)``: the
    layer's rules beside their autodiff twins at cotangent u (as :func:`network_core` does per
    layer), the kink distances, and optionally the JVP consistency and finite differences of
    the rule the recurrence runs (the fused ``backward`` when present)."""
    layer, fd, plan, with_jvp = key

    def core(p, a, u, v, V, rand_idx):
        entry, _ = _layer_entry(layer, 0, p, a, u, notes)
        hand = (entry["fused"][1], entry["fused"][0]) if "fused" in entry else \
            (entry["hand_p"], entry["hand_a"])
        out = {"loss": _inner(u, layer.apply(p, a)), "layers": [entry]}
        if with_jvp:
            out["jvp"] = jvp_block(layer.apply, (p, a), v, u, hand)
        if fd is not None:
            out["grad"] = {"hand": hand, "auto": (entry["ref_p"], entry["ref_a"])}
            ok = not any("*" in notes[(0, r)] for r in ("D_param", "D_input", "backward")
                         if (0, r) in notes)
            out["fd"] = fd_block(lambda q: _inner(u, layer.apply(*q)), (p, a),
                                 (hand, out["grad"]["auto"], ok), (V, rand_idx), fd, plan)
        return out

    return core
