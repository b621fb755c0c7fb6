"""manual_grad against jax.grad(loss_fn): one table of configurations crossed with shapes and
dtypes, plus property-based shapes. Adding a row to CONFIGS adds its gradient tests."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import both_grads
from hypothesis import given
from hypothesis import strategies as st

import fbackprop as fb
from fbackprop.gradcheck import TOLERANCE, precision_for, sample_point, tree_relative_error

ACTIVATIONS = ("sigmoid", "tanh", "relu", "identity")
COSTS = ("mse", "sse", "sigmoid_cross_entropy", "softmax_cross_entropy", "logistic")
LOGIT_COSTS = {"sigmoid_cross_entropy", "softmax_cross_entropy", "logistic"}
# widths differ per layer; depths 1-4
SHAPES = [(3, 2), (4, 6, 3), (5, 3, 7, 2), (2, 5, 4, 6, 3)]


def _out_activation(act, cost):
    return "identity" if cost in LOGIT_COSTS else act


# (activation, cost, sizes, bias, batch): every activation × every cost, shapes and bias rotated
CONFIGS = [
    (act, cost, SHAPES[(i + j) % 4], (i + j) % 2 == 0, 1 if (i * 5 + j) % 3 == 0 else 5)
    for (i, act), (j, cost) in itertools.product(enumerate(ACTIVATIONS), enumerate(COSTS))
] + [("tanh", "mse", (4, 6, 3), True, 3, "softmax")]


def _net(row):
    act, cost, sizes, bias, _batch, *out = row
    return fb.mlp(sizes, act, out[0] if out else _out_activation(act, cost), bias=bias)


def _ids(row):
    act, cost, sizes, bias, batch, *out = row
    return f"{act}-{cost}-{'x'.join(map(str, sizes))}-{'bias' if bias else 'nobias'}-b{batch}" + (
        f"-{out[0]}" if out else "")


@pytest.mark.parametrize("row", CONFIGS, ids=_ids)
def test_manual_equals_jax_grad_float64(row):
    net, cost, batch = _net(row), row[1], row[4]
    params, x, y = sample_point(net, cost, batch, seed=len(_ids(row)), dtype="float64")
    manual, ref = both_grads(net, cost, jit=True)(params, x, y)
    assert jax.tree.structure(manual) == jax.tree.structure(params)
    assert tree_relative_error(manual, ref) <= TOLERANCE["float64"]


@pytest.mark.parametrize("row", CONFIGS[::3], ids=_ids)
def test_manual_equals_jax_grad_float32(row):
    net, cost, batch = _net(row), row[1], row[4]
    with precision_for("float32"):
        params, x, y = sample_point(net, cost, batch, seed=1, dtype="float32")
        manual, ref = both_grads(net, cost, jit=True)(params, x, y)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(manual))
    assert tree_relative_error(manual, ref) <= TOLERANCE["float32"]


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_eager_and_jit_agree(act):
    net = fb.mlp((4, 5, 3), act, "identity")
    params, x, y = sample_point(net, "softmax_cross_entropy", 6, seed=3)
    eager = fb.manual_grad(net, "softmax_cross_entropy")(params, x, y)
    jitted = jax.jit(fb.manual_grad(net, "softmax_cross_entropy"))(params, x, y)
    ref = jax.grad(fb.loss_fn(net, "softmax_cross_entropy"))(params, x, y)
    assert tree_relative_error(eager, ref) <= TOLERANCE["float64"]
    assert tree_relative_error(jitted, eager) <= TOLERANCE["float64"]


@given(
    sizes=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    batch=st.integers(1, 6),
    act=st.sampled_from(ACTIVATIONS),
    cost=st.sampled_from(COSTS),
    bias=st.booleans(),
)
def test_property_random_shapes(sizes, batch, act, cost, bias):
    net = fb.mlp(sizes, act, _out_activation(act, cost), bias=bias)
    params, x, y = sample_point(net, cost, batch, seed=sum(sizes) + batch)
    manual, ref = both_grads(net, cost, jit=True)(params, x, y)
    assert tree_relative_error(manual, ref) <= TOLERANCE["float64"]


@pytest.mark.parametrize("act", ACTIVATIONS + ("softmax",))
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead", [(1,), (4,), (3, 2)], ids=["batch1", "batch4", "seq3x2"])
def test_dense_rules_equal_jax_vjp(act, bias, lead, rng):
    layer = fb.dense(5, 4, act, bias=bias)
    p = jax.tree.map(lambda t: jnp.asarray(rng.standard_normal(t.shape)),
                     layer.init(jax.random.PRNGKey(0)))
    a = jnp.asarray(rng.standard_normal((*lead, 5)))
    d = jnp.asarray(rng.standard_normal((*lead, 4)))
    _, vjp = jax.vjp(layer.apply, p, a)
    ref_p, ref_a = vjp(d)
    np.testing.assert_allclose(layer.D_input(p, a, d), ref_a, rtol=1e-12, atol=1e-13)
    got_p = layer.D_param(p, a, d)
    assert jax.tree.structure(got_p) == jax.tree.structure(p)
    for g, r in zip(jax.tree.leaves(got_p), jax.tree.leaves(ref_p)):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-13)


def test_backprop_deltas_and_input_gradient():
    net = fb.mlp((4, 6, 5, 3), "tanh", "identity")
    cost = "softmax_cross_entropy"
    params, x, y = sample_point(net, cost, 5, seed=11)
    out = fb.backprop(net, cost)(params, x, y)
    loss = fb.loss_fn(net, cost)
    assert float(out.loss) == pytest.approx(float(loss(params, x, y)), rel=1e-14)
    # d_0 = ∂J/∂x (Bradbury Table 1 step 7)
    ref_dx = jax.grad(loss, argnums=1)(params, x, y)
    np.testing.assert_allclose(out.deltas[0], ref_dx, rtol=1e-12, atol=1e-15)
    # every d_l = ∂J/∂a_l: perturb a_l through an additive offset and differentiate
    for l in range(1, len(net) + 1):
        def loss_with_offset(e, l=l):
            a = x
            for i, (layer, p) in enumerate(zip(net.layers, params), start=1):
                a = layer.apply(p, a)
                if i == l:
                    a = a + e
            return jnp.mean(fb.get_cost(cost).C(y, a))
        ref = jax.grad(loss_with_offset)(jnp.zeros_like(out.activations[l]))
        np.testing.assert_allclose(out.deltas[l], ref, rtol=1e-12, atol=1e-15)


def test_user_written_serial_network():
    # Bradbury's bias-free net as user Layers: f W a = σ(W a)
    def neuron_layer(n_in, n_out):
        def init(key):
            return jax.random.normal(key, (n_out, n_in)) / np.sqrt(n_in)

        def apply(W, a):
            return jax.nn.sigmoid(a @ W.T)

        def D_input(W, a, d):
            s = apply(W, a)
            return (d * s * (1 - s)) @ W

        def D_param(W, a, d):
            s = apply(W, a)
            return (d * s * (1 - s)).T @ a

        return fb.Layer(init, apply, D_input, D_param, name=f"neuron({n_in}→{n_out})")

    net = fb.serial(neuron_layer(2, 3), neuron_layer(3, 2), neuron_layer(2, 1), input_shape=(2,))
    params, x, y = sample_point(net, "mse", 4, seed=5)
    manual, ref = both_grads(net, "mse", jit=False)(params, x, y)
    assert tree_relative_error(manual, ref) <= TOLERANCE["float64"]


def test_loss_is_batch_mean_of_per_example_cost():
    net = fb.mlp((3, 4, 2), "sigmoid")
    params, x, y = sample_point(net, "mse", 6, seed=2)
    loss = fb.loss_fn(net, "mse")
    per_example = [float(loss(params, x[i:i + 1], y[i:i + 1])) for i in range(6)]
    assert float(loss(params, x, y)) == pytest.approx(np.mean(per_example), rel=1e-13)
    # and the gradient is the mean of the per-example gradients (offline learning, Gordon)
    g = fb.manual_grad(net, "mse")
    mean_g = jax.tree.map(lambda *t: sum(t) / 6,
                          *[g(params, x[i:i + 1], y[i:i + 1]) for i in range(6)])
    assert tree_relative_error(g(params, x, y), mean_g) <= 1e-13


def test_manual_grad_uses_no_autodiff(monkeypatch):
    """The manual path must not call jax.grad, vjp, jvp, linearize or value_and_grad."""
    def forbidden(*args, **kwargs):
        raise AssertionError("autodiff called on the manual path")

    net = fb.mlp((3, 4, 2), "relu", "identity")
    params, x, y = sample_point(net, "softmax_cross_entropy", 3, seed=4)
    ref = jax.grad(fb.loss_fn(net, "softmax_cross_entropy"))(params, x, y)
    for name in ("grad", "vjp", "jvp", "linearize", "value_and_grad"):
        monkeypatch.setattr(jax, name, forbidden)
    manual = fb.manual_grad(net, "softmax_cross_entropy")(params, x, y)
    out = fb.backprop(net, "softmax_cross_entropy")(params, x, y)
    monkeypatch.undo()
    assert tree_relative_error(manual, ref) <= TOLERANCE["float64"]
    assert tree_relative_error(out.grads, ref) <= TOLERANCE["float64"]


def test_builtin_configurations_are_not_degenerate():
    """A check at a point where a leaf's gradient happens to be zero (a dead ReLU layer, say)
    proves nothing about that leaf. A leaf may be zero at the built-in point only if it is zero
    at other points too (structurally, e.g. W_hh of a one-step RNN whose h₋₁ = 0)."""
    from fbackprop.suite import builtin_configs

    def zero_leaves(cfg, net, seed):
        params, x, y = sample_point(net, cfg.cost, cfg.batch, seed=seed,
                                    input_shape=cfg.input_shape)
        ref = jax.jit(jax.grad(fb.loss_fn(net, cfg.cost)))(params, x, y)
        return {jax.tree_util.keystr(path) for path, leaf in
                jax.tree_util.tree_flatten_with_path(ref)[0] if not np.any(np.asarray(leaf) != 0)}

    for cfg in builtin_configs():
        net = cfg.make()
        zero = zero_leaves(cfg, net, seed=0)
        if zero:
            structural = zero_leaves(cfg, net, seed=1) & zero_leaves(cfg, net, seed=2)
            assert zero <= structural, f"{cfg.label}: zero gradient at {sorted(zero - structural)}"
