"""Bad input raises ValueError/TypeError saying what was expected, what was received, and how
to fix it — on every public entry point."""
import jax
import jax.numpy as jnp
import pytest

import fbackprop as fb

NET = fb.mlp((4, 5, 3), "tanh", "identity")
PARAMS = NET.init(jax.random.PRNGKey(0))
X = jnp.ones((2, 4), jnp.float32)
Y = jnp.zeros((2, 3), jnp.float32)
ENTRY_POINTS = {
    "loss_fn": lambda: fb.loss_fn(NET, "mse"),
    "manual_grad": lambda: fb.manual_grad(NET, "mse"),
    "backprop": lambda: fb.backprop(NET, "mse"),
    "jit(manual_grad)": lambda: jax.jit(fb.manual_grad(NET, "mse")),
}


@pytest.fixture(params=list(ENTRY_POINTS))
def fn(request):
    return ENTRY_POINTS[request.param]()


def test_x_of_wrong_width_names_both_widths(fn):
    with pytest.raises(ValueError, match=r"width 6.*expects 4"):
        fn(PARAMS, jnp.ones((2, 6)), Y)


def test_x_without_batch_axis(fn):
    with pytest.raises(ValueError, match=r"shape \(batch, 4\).*received shape \(4,\).*x\[None\]"):
        fn(PARAMS, jnp.ones(4), Y)


def test_integer_x(fn):
    with pytest.raises(TypeError, match=r"floating-point.*int32.*astype"):
        fn(PARAMS, jnp.ones((2, 4), jnp.int32), Y)


def test_y_of_wrong_shape(fn):
    with pytest.raises(ValueError, match=r"y must have the shape of the network output \(2, 3\).*"
                                         r"received shape \(2, 4\)"):
        fn(PARAMS, X, jnp.zeros((2, 4)))


def test_class_labels_get_a_one_hot_hint():
    with pytest.raises(ValueError, match=r"one_hot\(y, 3\)"):
        fb.loss_fn(NET, "softmax_cross_entropy")(PARAMS, X, jnp.array([0, 2]))


def test_params_of_wrong_structure_show_both(fn):
    with pytest.raises(TypeError, match=r"params has the wrong pytree structure\.\n  expected: .*\n"
                                        r"  received: "):
        fn(list(PARAMS), X, Y)
    with pytest.raises(TypeError, match="wrong pytree structure"):
        fn(PARAMS[:1], X, Y)


def test_params_leaf_of_wrong_shape(fn):
    bad = ({"W": jnp.ones((5, 3)), "b": PARAMS[0]["b"]}, PARAMS[1])
    with pytest.raises(ValueError,
                       match=r"params\[0\]\['W'\] has shape \(5, 3\), expected \(5, 4\)"):
        fn(bad, X, Y)


def test_apply_checks_too():
    with pytest.raises(ValueError, match="width 2"):
        NET.apply(PARAMS, jnp.ones((1, 2)))


@pytest.mark.parametrize("kwargs,match", [
    (dict(activation="swish"),
     r"unknown activation 'swish'.*'sigmoid', 'tanh', 'relu', 'identity'"),
    (dict(output_activation="softplus"), r"unknown output_activation 'softplus'"),
])
def test_unknown_activation_names(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fb.mlp((2, 3), **kwargs)


def test_unknown_cost_name():
    with pytest.raises(ValueError, match=r"unknown cost 'cross_entropy'.*'softmax_cross_entropy'"):
        fb.manual_grad(NET, "cross_entropy")


@pytest.mark.parametrize("sizes", [(4,), (4, 0), (4, 2.5), ()])
def test_bad_sizes(sizes):
    with pytest.raises(ValueError, match="sizes must hold at least two positive ints"):
        fb.mlp(sizes)


def test_sizes_not_a_sequence():
    with pytest.raises(TypeError, match="sequence of layer widths"):
        fb.mlp(4)


def test_serial_rejects_non_layers():
    with pytest.raises(TypeError,
                       match=r"argument 1 must be an fbackprop.Layer.*received function"):
        fb.serial(fb.dense(2, 2), lambda p, a: a)


def test_user_layer_with_wrong_gradient_structure_is_named():
    good = fb.dense(3, 2)
    bad = fb.Layer(good.init, good.apply, good.D_input,
                   lambda p, a, d: {"W": good.D_param(p, a, d)["W"]}, name="my_layer")
    net = fb.serial(fb.dense(4, 3), bad, input_shape=(4,))
    params = net.init(jax.random.PRNGKey(1))
    with pytest.raises(TypeError, match=r"D_param of layer 1 \(my_layer\).*wrong pytree structure"):
        fb.manual_grad(net, "mse")(params, X, jnp.zeros((2, 2)))


def test_user_layer_with_wrong_delta_shape_is_named():
    good = fb.dense(3, 2)
    bad = fb.Layer(good.init, good.apply, lambda p, a, d: d, good.D_param, name="my_layer")
    net = fb.serial(fb.dense(4, 3), bad, input_shape=(4,))
    params = net.init(jax.random.PRNGKey(1))
    with pytest.raises(ValueError,
                       match=r"D_input of layer 1 \(my_layer\).*shape \(2, 2\).*\(2, 3\)"):
        fb.manual_grad(net, "mse")(params, X, jnp.zeros((2, 2)))
