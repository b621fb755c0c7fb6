"""Activations and costs: each hand-written derivative against jax.grad, kinks and stability."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fbackprop as fb
from fbackprop.activations import ACTIVATIONS
from fbackprop.costs import COSTS
from fbackprop.gradcheck import sample_target

ELEMENTWISE = [n for n, a in ACTIVATIONS.items() if a.Dg is not None]


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_derivative_matches_jax_grad(name, rng):
    act = fb.get_activation(name)
    z = rng.standard_normal(50) * 3
    z = z[np.abs(z) > 1e-3]  # away from the ReLU kink; the kink is tested below
    ref = jax.vmap(jax.grad(act.g))(jnp.asarray(z))
    np.testing.assert_allclose(act.Dg(jnp.asarray(z)), ref, rtol=1e-13, atol=1e-15)


def test_texts_forms():
    z = jnp.linspace(-4, 4, 9)
    s = jax.nn.sigmoid(z)
    np.testing.assert_allclose(fb.get_activation("sigmoid").Dg(z), s * (1 - s))
    np.testing.assert_allclose(fb.get_activation("tanh").Dg(z), 1 - jnp.tanh(z) ** 2)


def test_relu_kink_is_zero_like_jax():
    relu = fb.get_activation("relu")
    assert float(relu.Dg(jnp.array(0.0))) == 0.0
    assert float(jax.grad(jax.nn.relu)(0.0)) == 0.0


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_vjp_matches_jax_vjp(name, rng):
    act = fb.get_activation(name)
    z = jnp.asarray(rng.standard_normal((3, 5)))
    d = jnp.asarray(rng.standard_normal((3, 5)))
    _, vjp = jax.vjp(act.g, z)
    np.testing.assert_allclose(act.D(z, d), vjp(d)[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", list(COSTS))
def test_cost_derivative_matches_jax_grad(name, rng):
    cost = fb.get_cost(name)
    a = jnp.asarray(rng.standard_normal((4, 3)))
    y = jnp.asarray(sample_target(cost, rng, (4, 3), np.float64))
    ref = jax.grad(lambda a_: jnp.sum(cost.C(y, a_)))(a)
    np.testing.assert_allclose(cost.D(y, a), ref, rtol=1e-12, atol=1e-15)


def test_softmax_ce_with_probability_targets(rng):
    cost = fb.get_cost("softmax_cross_entropy")
    a = jnp.asarray(rng.standard_normal((4, 3)))
    y = jax.nn.softmax(jnp.asarray(rng.standard_normal((4, 3))))
    ref = jax.grad(lambda a_: jnp.sum(cost.C(y, a_)))(a)
    np.testing.assert_allclose(cost.D(y, a), ref, rtol=1e-12, atol=1e-15)


def test_mse_and_sse_are_the_texts():
    y, a = jnp.array([[1.0, 2.0]]), jnp.array([[0.5, 4.0]])
    assert float(fb.get_cost("mse").C(y, a)[0]) == pytest.approx(0.5 * (0.25 + 4.0))  # ½‖y−a‖²
    assert float(fb.get_cost("sse").C(y, a)[0]) == pytest.approx(0.25 + 4.0)         # ‖y−a‖²


@pytest.mark.parametrize("name", [n for n, c in COSTS.items() if c.on_logits])
@pytest.mark.parametrize("logit", [1e4, -1e4])
def test_logit_costs_are_stable(name, logit):
    cost = fb.get_cost(name)
    a = jnp.full((2, 3), logit)
    y = jnp.asarray(sample_target(cost, np.random.default_rng(0), (2, 3), np.float64))
    loss = jnp.sum(cost.C(y, a))
    grad = jax.grad(lambda a_: jnp.sum(cost.C(y, a_)))(a)
    assert np.isfinite(float(loss))
    assert np.all(np.isfinite(np.asarray(cost.D(y, a))))
    assert np.all(np.isfinite(np.asarray(grad)))
    np.testing.assert_allclose(cost.D(y, a), grad, atol=1e-12)
    # the same in float32
    a32 = a.astype(jnp.float32)
    assert np.isfinite(float(jnp.sum(cost.C(y.astype(jnp.float32), a32))))


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"'swish'.*'sigmoid', 'tanh', 'relu'"):
        fb.get_activation("swish")
    with pytest.raises(ValueError, match=r"'hinge'.*'mse', 'sse'"):
        fb.get_cost("hinge")
    with pytest.raises(TypeError, match="received int"):
        fb.get_cost(3)


def test_kink_distance():
    z = jnp.array([[0.5, -0.002], [3.0, -1.0]])
    assert float(fb.get_activation("relu").kink_distance(z)) == pytest.approx(0.002)
    assert float(fb.get_activation("tanh").kink_distance(z)) == float("inf")
    layer = fb.dense(2, 2, "relu", bias=False)
    p = {"W": jnp.eye(2)}
    assert float(layer.kink_distance(p, z)) == pytest.approx(0.002)
