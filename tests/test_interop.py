"""fb.as_custom_vjp (hand-written rules behind jax.vjp), fb.check_vjp and fb.check_layer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import fbackprop as fb

SUBJECTS = [  # (name, factory of (layer or network, x))
    ("dense_relu", lambda: (fb.dense(4, 3, "relu"), (5, 4))),
    ("mlp_tanh", lambda: (fb.mlp((4, 6, 3), "tanh"), (5, 4))),
    ("lstm", lambda: (fb.lstm(3, 4, 2), (2, 3, 3))),
]


def _point(obj, x_shape, seed=0):
    rng = np.random.default_rng(seed)
    params = fb.astype(obj.init(jax.random.PRNGKey(seed)), jnp.float64)
    return params, jnp.asarray(rng.standard_normal(x_shape))


@pytest.mark.parametrize("name,make", SUBJECTS, ids=[s[0] for s in SUBJECTS])
def test_as_custom_vjp_passes_check_grads_and_runs_the_hand_rules(name, make):
    obj, x_shape = make()
    with jax.enable_x64(True):
        params, x = _point(obj, x_shape)
        f = fb.as_custom_vjp(obj)
        np.testing.assert_allclose(f(params, x), obj.apply(params, x), rtol=1e-12)
        check_grads(jax.jit(f), (params, x), order=1, modes=["rev"])
        report = fb.check_vjp(f, params, x)
    assert report.ok, str(report)
    assert any(r.pair == "hand–JVP" for r in report.rows)


def test_as_custom_vjp_of_a_network_matches_manual_grad():
    net = fb.mlp((4, 6, 3), "tanh")
    with jax.enable_x64(True):
        params, x = _point(net, (5, 4))
        y = jnp.asarray(np.random.default_rng(1).uniform(size=(5, 3)))
        f = fb.as_custom_vjp(net)
        cost = fb.get_cost("mse")
        g = jax.grad(lambda p: jnp.mean(jnp.sum(cost.C(y, f(p, x)).reshape(5, -1), 1)))(params)
        ref = fb.manual_grad(net, "mse")(params, x, y)
    assert fb.gradcheck.tree_relative_error(g, ref) < 1e-12


def test_as_custom_vjp_really_uses_the_hand_written_rule():
    """A wrong D_param changes jax.grad of the wrapped layer: the rule is what runs."""
    layer = fb.dense(3, 2, "tanh")
    wrong = layer._replace(D_param=lambda p, a, d: jax.tree.map(lambda t: 0 * t, p))
    with jax.enable_x64(True):
        params, x = _point(layer, (4, 3))
        g = jax.grad(lambda p: fb.as_custom_vjp(wrong)(p, x).sum())(params)
        report = fb.check_vjp(fb.as_custom_vjp(wrong), params, x)
    assert all(float(jnp.abs(t).max()) == 0 for t in jax.tree.leaves(g))
    assert not report.ok
    assert "['W']" in report.failure_message()
    assert any(r.pair == "hand–JVP" and r.status == "fail" for r in report.rows)


def test_check_vjp_on_a_user_custom_vjp_names_the_wrong_argument():
    @jax.custom_vjp
    def scaled_tanh(w, x):
        return jnp.tanh(w * x)

    def fwd(w, x):
        y = jnp.tanh(w * x)
        return y, (w, x, y)

    def bwd(res, d):
        w, x, y = res
        dz = d * (1 - y ** 2)
        return jnp.sum(dz * x, axis=0), dz * w * 1.5   # the input rule is off by 1.5

    scaled_tanh.defvjp(fwd, bwd)
    rng = np.random.default_rng(0)
    w, x = rng.standard_normal(3), rng.standard_normal((4, 3))
    report = fb.check_vjp(scaled_tanh, w, x, finite_differences=True)
    failing = {r.leaf for r in report.failures if r.pair == "hand–autodiff"}
    assert failing == {"[1]"}, str(report)
    assert "scaled_tanh" in report.subject
    with pytest.raises(fb.GradientCheckError, match=r"\[1\]"):
        fb.check_vjp(scaled_tanh, w, x, raise_on_failure=True)


def test_check_layer_flags_the_wrong_rule_and_passes_the_right_one():
    layer = fb.dense(4, 3, "relu")
    params = layer.init(jax.random.PRNGKey(0))
    a = np.random.default_rng(0).standard_normal((6, 4))
    ok = fb.check_layer(layer, params, a, finite_differences=True)
    assert ok.ok, str(ok)
    assert ok.kinks["distance"][0] >= fb.gradcheck.KINK_TOL
    bad = fb.check_layer(layer._replace(D_input=lambda p, a, d: 2 * (d @ p["W"])), params, a)
    assert not bad.ok and "D_input" in bad.failure_message()
    seeded = fb.check_layer(layer, params, a, seed=3).to_dict()
    assert seeded == fb.check_layer(layer, params, a, seed=3).to_dict()


def test_check_vjp_and_check_layer_reject_wrong_subjects():
    with pytest.raises(TypeError, match="jax.custom_vjp"):
        fb.check_vjp(lambda x: x, jnp.ones(3))
    with pytest.raises(TypeError, match="fbackprop.Layer"):
        fb.check_layer(fb.mlp((2, 2)), None, jnp.ones((1, 2)))
    with pytest.raises(TypeError, match="Layer or fbackprop.Network"):
        fb.as_custom_vjp(lambda p, x: x)


def test_in_a_flax_linen_module():
    nn = pytest.importorskip("flax.linen")
    net = fb.mlp((3, 5, 2), "tanh")
    f = fb.as_custom_vjp(net)

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            params = self.param("fb", lambda key: net.init(key))
            return f(params, nn.Dense(3)(x))

    model = Model()
    x = jnp.ones((4, 6))
    variables = model.init(jax.random.PRNGKey(0), x)
    g = jax.grad(lambda v: model.apply(v, x).sum())(variables)
    assert jax.tree.structure(g) == jax.tree.structure(variables)
    # the same model with autodiff through fbackprop's forward gives the same gradient
    plain = jax.grad(lambda v: net.apply(v["params"]["fb"], nn.Dense(3).apply(
        {"params": v["params"]["Dense_0"]}, x)).sum())(variables)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_in_a_flax_nnx_module():
    nnx = pytest.importorskip("flax.nnx")
    layer = fb.dense(3, 2, "tanh")
    f = fb.as_custom_vjp(layer)

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.p = nnx.Param(layer.init(rngs.params()))

        def __call__(self, x):
            return f(self.p.get_value(), x)

    model = Model(nnx.Rngs(0))
    x = jnp.ones((4, 3))
    grads = nnx.grad(lambda m: m(x).sum())(model)
    ref = jax.grad(lambda p: layer.apply(p, x).sum())(model.p.get_value())
    np.testing.assert_allclose(grads.p.get_value()["W"], ref["W"], rtol=1e-6)


def test_in_an_equinox_module():
    eqx = pytest.importorskip("equinox")
    net = fb.mlp((3, 4, 2), "relu")
    f = fb.as_custom_vjp(net)

    class Model(eqx.Module):
        params: tuple

        def __call__(self, x):
            return f(self.params, x)

    model = Model(net.init(jax.random.PRNGKey(0)))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 3)), jnp.float32)
    grads = eqx.filter_grad(lambda m: m(x).sum())(model)
    ref = jax.grad(lambda p: net.apply(p, x).sum())(model.params)
    for g, r in zip(jax.tree.leaves(grads.params), jax.tree.leaves(ref)):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_ecosystem_doc_examples_run(capsys):
    """Every ```python block of docs/ECOSYSTEM.md runs, in order, in one namespace."""
    import pathlib
    import re

    pytest.importorskip("flax")
    pytest.importorskip("equinox")
    doc = (pathlib.Path(__file__).parent.parent / "docs" / "ECOSYSTEM.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert len(blocks) >= 7
    namespace = {}
    for block in blocks:
        exec(compile(block, "docs/ECOSYSTEM.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert out.count("True") >= 3 and "D_input" in out
    assert float(namespace["loss"]) < 0.02  # optax trained through the hand-written rules
