"""Graphs of layers: manual_grad equals jax.grad on a table of DAGs (fan-out into a residual sum,
a node read by three others, two-input nodes) and on a 2-block transformer, under jit and
eagerly; fb.check names the node where each classic mistake lives (a fan-out delta overwritten
instead of summed, softmax's backward without the weighted-sum subtraction, the attention scale
forgotten in the backward, layer norm's mean term dropped); bad graphs are clear errors."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import both_grads

import fbackprop as fb
import fbackprop.layers.attention as attention
import fbackprop.layers.norm as norm
import fbackprop.network as network
from fbackprop.gradcheck import TOLERANCE, sample_point, tree_relative_error


def residual_net():
    """h = dense(x); r = h + dense(tanh)(h); out = dense(r): h is read twice (fan-out)."""
    return fb.dag([("h", fb.dense(3, 4, "tanh"), "x")]
                  + fb.residual("r", fb.dense(4, 4, "tanh"), input="h")
                  + [("out", fb.dense(4, 2, "identity"), "r")], "out", input_shape=(3,),
                  name="residual")


def three_readers_net():
    """h is read by three nodes, which are then concatenated and summed."""
    return fb.dag([("h", fb.dense(3, 4, "sigmoid"), "x"),
                   ("a", fb.dense(4, 2, "tanh"), "h"),
                   ("b", fb.layer_norm(4), "h"),
                   ("c", fb.gelu(), "h"),
                   ("ab", fb.concat(), ("a", "b")),
                   ("abc", fb.concat(), ("ab", "c")),
                   ("out", fb.dense(10, 3, "identity"), "abc")], "out", input_shape=(3,))


def two_input_net():
    """x read by two branches that an add joins, then a residual of x's branch again."""
    return fb.dag([("u", fb.dense(3, 3, "tanh"), "x"),
                   ("v", fb.dense(3, 3, "sigmoid"), "x"),
                   ("s", fb.add(), ("u", "v")),
                   ("t", fb.add(), ("s", "u")),
                   ("out", fb.dense(3, 2, "identity"), "t")], "out", input_shape=(3,))


GRAPHS = [  # (constructor, cost, batch, one example's shape)
    (residual_net, "mse", 3, None),
    (three_readers_net, "softmax_cross_entropy", 4, None),
    (two_input_net, "sigmoid_cross_entropy", 2, None),
    (lambda: fb.transformer(7, 8, 2, 2, 6), "softmax_cross_entropy", 2, (5,)),
    (lambda: fb.transformer(5, 4, 1, 1, 3, mlp_ratio=2), "softmax_cross_entropy", 3, (3,)),
]
IDS = ["residual", "three-readers", "two-input", "transformer-2-blocks", "transformer-1-block"]


@pytest.mark.parametrize("make,cost,batch,shape", GRAPHS, ids=IDS)
def test_manual_grad_equals_jax_grad_float64(make, cost, batch, shape):
    net = make()
    params, x, y = sample_point(net, cost, batch, seed=1, input_shape=shape)
    manual, ref = both_grads(net, cost, jit=True)(params, x, y)
    assert jax.tree.structure(manual) == jax.tree.structure(params)
    assert set(manual) == set(net.nodes)
    assert tree_relative_error(manual, ref) <= TOLERANCE["float64"]


@pytest.mark.parametrize("make,cost,batch,shape", GRAPHS[:3], ids=IDS[:3])
def test_eager_manual_grad_equals_jit(make, cost, batch, shape):
    net = make()
    params, x, y = sample_point(net, cost, batch, seed=2, input_shape=shape)
    eager = fb.manual_grad(net, cost)(params, x, y)
    jitted, ref = both_grads(net, cost, jit=True)(params, x, y)
    assert tree_relative_error(eager, ref) <= TOLERANCE["float64"]
    assert tree_relative_error(jitted, eager) <= TOLERANCE["float64"]


def test_backprop_deltas_are_keyed_by_node_and_sum_over_readers():
    net = residual_net()
    params, x, y = sample_point(net, "mse", 3, seed=3)
    run = fb.backprop(net, "mse")(params, x, y)
    assert set(run.deltas) == {"x", "h", "r.0", "r", "out"}
    # h feeds the dense of the branch and the sum: its delta is d_r + (the branch's delta)
    branch = net.layers[net.nodes.index("r.0")]
    expected = run.deltas["r"] + branch.D_input(params["r.0"], run.activations["h"],
                                                run.deltas["r.0"])
    np.testing.assert_allclose(run.deltas["h"], expected, rtol=1e-14)
    d_x = jax.grad(lambda x_: fb.loss_fn(net, "mse")(params, x_, y))(x)
    np.testing.assert_allclose(run.deltas["x"], d_x, rtol=1e-12)


def test_integer_targets_are_one_hot_encoded_for_the_transformer():
    net = fb.transformer(6, 4, 2, 1, 4)
    params, x, y = sample_point(net, "softmax_cross_entropy", 2, seed=4, input_shape=(4,))
    ids = jnp.argmax(y, axis=-1)
    grad = fb.manual_grad(net, "softmax_cross_entropy")
    assert tree_relative_error(grad(params, x, ids), grad(params, x, y)) == 0.0


def test_dropout_is_identity_until_keyed_and_its_keyed_gradient_is_exact():
    net = fb.transformer(5, 4, 1, 1, 4, dropout=0.3)
    params, x, y = sample_point(net, "softmax_cross_entropy", 2, seed=5, input_shape=(4,))
    identity = dataclasses.replace(net, layers=tuple(
        fb.elementwise("identity") if layer.name.startswith("dropout") else layer
        for layer in net.layers))
    np.testing.assert_array_equal(net.apply(params, x), identity.apply(params, x))
    keyed = fb.with_dropout_key(net, jax.random.PRNGKey(0))
    assert not np.allclose(keyed.apply(params, x), net.apply(params, x))
    manual, ref = both_grads(keyed, "softmax_cross_entropy")(params, x, y)
    assert tree_relative_error(manual, ref) <= TOLERANCE["float64"]


def test_a_residual_dag_trains():
    net = residual_net()
    params, x, y = sample_point(net, "mse", 8, seed=6)
    grad, loss = jax.jit(fb.manual_grad(net, "mse")), jax.jit(fb.loss_fn(net, "mse"))
    start = float(loss(params, x, y))
    for _ in range(30):
        params = jax.tree.map(lambda p, g: p - 0.5 * g, params, grad(params, x, y))
    assert float(loss(params, x, y)) < 0.5 * start


def test_check_passes_on_graphs_and_names_nodes():
    net = fb.transformer(7, 8, 2, 1, 5)
    params, x, y = sample_point(net, "softmax_cross_entropy", 2, input_shape=(5,))
    report = fb.check(net, "softmax_cross_entropy", params, x, y)
    assert report.ok, report.failure_message()
    wheres = {r.where for r in report.rows}
    assert "node block0.attn.1: causal_self_attention(8, 2 heads)" in wheres
    summed = {r.layer for r in report.rows if r.rule.startswith("Σ")}
    assert summed == {"pos", "block0.attn"}  # the activations read twice


# ---------------------------------------------------------------------------------------------
# Planted mistakes, each located by fb.check at its node

def _overwrite(total, d):
    return d  # the classic mistake: the last reader's delta replaces the others'


def _softmax_without_subtraction(s, d):
    return s * d


def _scale_forgotten(dS, Q, K, scale):
    return SCORES_BACKWARD(dS, Q, K, 1.0)


def _mean_term_dropped(x_hat, r, g):
    return r * (g - x_hat * jnp.mean(g * x_hat, axis=-1, keepdims=True))


SCORES_BACKWARD = attention.scores_backward
PLANTED = [  # (module, name, wrong function, network, node where the mistake lives)
    (network, "accumulate", _overwrite, residual_net, "h"),
    (attention, "softmax_backward", _softmax_without_subtraction,
     lambda: fb.transformer(5, 4, 2, 1, 4), "block0.attn.1"),
    (attention, "scores_backward", _scale_forgotten,
     lambda: fb.transformer(5, 8, 2, 1, 4), "block0.attn.1"),
    (norm, "normalize_backward", _mean_term_dropped, lambda: fb.dag(
        [("h", fb.dense(3, 4, "tanh"), "x"), ("n", fb.layer_norm(4), "h"),
         ("out", fb.dense(4, 2, "identity"), "n")], "out", input_shape=(3,)), "n"),
]


@pytest.mark.parametrize("module,name,wrong,make,node", PLANTED,
                         ids=["fan-out overwritten", "softmax without subtraction",
                              "attention scale forgotten", "layer norm mean term dropped"])
def test_planted_mistake_is_located_at_its_node(module, name, wrong, make, node, monkeypatch):
    monkeypatch.setattr(module, name, wrong)
    net = make()
    cost = "softmax_cross_entropy" if net.input_vocab else "mse"
    params, x, y = sample_point(net, cost, 3, seed=7, input_shape=(4,) if net.input_vocab else None)
    report = fb.check(net, cost, params, x, y)
    assert report.failing_layers == (node,), report.failure_message()
    assert f"node {node}" in report.failure_message()
    whole = [r for r in report.rows if r.where.startswith("∂J/∂p")]
    assert any(r.status == "fail" for r in whole)  # and the whole gradient is wrong too


# ---------------------------------------------------------------------------------------------
# Bad graphs and inputs

@pytest.mark.parametrize("nodes,output,match", [
    ([("a", fb.dense(2, 2), "b"), ("b", fb.dense(2, 2), "a")], "b",
     r"cycle a → b → a|cycle b → a → b"),
    ([("a", fb.dense(2, 2), "y")], "a", r"reads \['y'\].*expected one of"),
    ([("a", fb.dense(2, 2), "x"), ("a", fb.dense(2, 2), "a")], "a", r"unique"),
    ([("x", fb.dense(2, 2), "x")], "x", r"not 'x'"),
    ([("a", fb.dense(2, 2), "x"), ("b", fb.dense(2, 2), "x")], "a", r"\['b'\] do not lead"),
    ([("a", fb.dense(2, 2), "x")], "z", r"output must be a node name"),
    ([], "a", r"at least one node"),
])
def test_bad_graphs_are_clear_value_errors(nodes, output, match):
    with pytest.raises(ValueError, match=match):
        fb.dag(nodes, output)


def test_token_inputs_are_checked():
    net = fb.transformer(5, 4, 1, 1, 4)
    params = net.init(jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match="integer array of token ids"):
        net.apply(params, jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"token ids in \[0, 7\]; expected ids in \[0, 5\)"):
        net.apply(params, jnp.asarray([[0, 7]]))
    with pytest.raises(ValueError, match="T ≤ 4"):
        net.apply(params, jnp.zeros((1, 6), jnp.int32))
    with pytest.raises(TypeError, match="floating-point"):  # still rejected without an embedding
        fb.mlp((3, 2)).apply(fb.mlp((3, 2)).init(jax.random.PRNGKey(0)), jnp.zeros((1, 3), int))
