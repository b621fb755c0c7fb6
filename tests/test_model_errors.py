"""Bad input to the CNN, RNN and LSTM raises ValueError/TypeError naming what was expected and
what was received — through every entry point, and from the constructors."""
import jax
import jax.numpy as jnp
import pytest

import fbackprop as fb

CNN = fb.cnn((1, 8, 8), conv_channels=(2,), kernel_size=3, pool_size=2, n_out=3)
RNN_LAST = fb.rnn(3, 4, 2, output="last")
RNN_ALL = fb.rnn(3, 4, 2, output="all")
LSTM_ALL = fb.lstm(3, 4, 2, output="all")
ENTRY_POINTS = {
    "loss_fn": lambda net: fb.loss_fn(net, "mse"),
    "manual_grad": lambda net: fb.manual_grad(net, "mse"),
    "backprop": lambda net: fb.backprop(net, "mse"),
    "jit(manual_grad)": lambda net: jax.jit(fb.manual_grad(net, "mse")),
}


def _params(net):
    return net.init(jax.random.PRNGKey(0))


@pytest.fixture(params=list(ENTRY_POINTS))
def entry(request):
    return ENTRY_POINTS[request.param]


def test_wrong_channel_count(entry):
    with pytest.raises(ValueError,
                       match=r"channel count \(axis 1\) 3, but the network expects 1: "
                             r"received shape \(2, 3, 8, 8\), expected \(batch, 1, 8, 8\)"):
        entry(CNN)(_params(CNN), jnp.ones((2, 3, 8, 8)), jnp.zeros((2, 3)))


@pytest.mark.parametrize("net", [RNN_LAST, LSTM_ALL], ids=["rnn", "lstm"])
def test_sequence_with_wrong_feature_size(entry, net):
    with pytest.raises(ValueError, match=r"width 5, but the network expects 3: received shape "
                                         r"\(2, 4, 5\), expected \(batch, T, 3\)"):
        entry(net)(_params(net), jnp.ones((2, 4, 5)), jnp.zeros((2, 4, 2)))


def test_y_for_every_step_when_only_the_last_is_scored(entry):
    with pytest.raises(ValueError, match=r"network output \(2, 2\).*received shape \(2, 5, 2\)\. "
                                         r"The network scores only the last time step"):
        entry(RNN_LAST)(_params(RNN_LAST), jnp.ones((2, 5, 3)), jnp.zeros((2, 5, 2)))


@pytest.mark.parametrize("net", [RNN_ALL, LSTM_ALL], ids=["rnn", "lstm"])
def test_y_without_time_axis_when_every_step_is_scored(entry, net):
    with pytest.raises(ValueError,
                       match=r"network output \(2, 5, 2\).*received shape \(2, 2\)\. "
                             r"The network scores every time step.*\(batch, T = 5, 2\)"):
        entry(net)(_params(net), jnp.ones((2, 5, 3)), jnp.zeros((2, 2)))


def test_y_with_another_number_of_steps(entry):
    with pytest.raises(ValueError, match=r"received shape \(2, 4, 2\)\. y has 4 time steps but x "
                                         r"has T = 5"):
        entry(RNN_ALL)(_params(RNN_ALL), jnp.ones((2, 5, 3)), jnp.zeros((2, 4, 2)))


def test_empty_sequence(entry):
    with pytest.raises(ValueError, match=r"at least one time step, received T = 0"):
        entry(RNN_LAST)(_params(RNN_LAST), jnp.ones((2, 0, 3)), jnp.zeros((2, 2)))


@pytest.mark.parametrize("kwargs,match", [
    (dict(input_shape=(1, 4, 4), kernel_size=5, pool_size=1),
     r"block 1's kernel \(5, 5\) is larger than its input map \(4, 4\)"),
    (dict(input_shape=(1, 9), conv_channels=(2, 2), kernel_size=4, pool_size=2),
     r"block 2's kernel \(4,\) is larger than its input map \(3,\)"),
    (dict(input_shape=(1, 8), kernel_size=3, pool_size=4),
     r"block 1's convolution gives a map of size \(6,\), which the pool size \(4,\) does not "
     r"divide"),
    (dict(input_shape=(8,)), r"input_shape must be \(C, L\) for 1-D signals or \(C, H, W\)"),
    (dict(kernel_size=(3, 3, 3)),
     r"kernel_size must be a positive int or a tuple of 2 positive ints"),
    (dict(pool_size=0), r"pool_size must be a positive int or a tuple of 2"),
    (dict(pool="median"), r"unknown pool 'median'; valid names are 'mean', 'max'"),
    (dict(conv_channels=(2, 0)), r"conv_channels entries must be a positive int, received 0"),
    (dict(activation="softmax"), r"activation must be elementwise.*received 'softmax'"),
])
def test_cnn_constructor_errors(kwargs, match):
    args = dict(input_shape=(1, 8, 8), conv_channels=(2,), kernel_size=3, pool_size=2, n_out=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fb.cnn(args.pop("input_shape"), **args)


@pytest.mark.parametrize("kwargs", [dict(hidden=16), dict(conv_channels=4)])
def test_cnn_sequences_given_as_ints(kwargs):
    args = dict(conv_channels=(2,), kernel_size=3, pool_size=2, n_out=3)
    args.update(kwargs)
    with pytest.raises(TypeError, match=r"must be a sequence"):
        fb.cnn((1, 8, 8), **args)


def test_layers_check_their_own_input():
    """Layers used without a network's input_shape still refuse what they cannot take."""
    conv = fb.conv(1, 2, (5, 5))
    p = conv.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"kernel \(5, 5\) is larger than the input map \(3, 3\)"):
        conv.apply(p, jnp.ones((1, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"C = 1 channels, received shape \(1, 2, 6, 6\)"):
        conv.apply(p, jnp.ones((1, 2, 6, 6)))
    with pytest.raises(ValueError, match=r"map size \(5, 6\) is not a multiple of the pool size "
                                         r"\(2, 2\)"):
        fb.max_pool((2, 2)).apply({}, jnp.ones((1, 1, 5, 6)))
    lstm = fb.lstm_layer(3, 4)
    with pytest.raises(ValueError, match=r"shape \(batch, T, 3\), received shape \(2, 3\)"):
        lstm.apply(lstm.init(jax.random.PRNGKey(0)), jnp.ones((2, 3)))


@pytest.mark.parametrize("make", [lambda: fb.rnn(3, 4, 2, output="every"),
                                  lambda: fb.lstm(3, 4, 2, output="first")])
def test_unknown_output_mode(make):
    with pytest.raises(ValueError, match=r"unknown output '\w+'; valid names are 'last', 'all'"):
        make()


@pytest.mark.parametrize("make", [lambda: fb.rnn(0, 4, 2), lambda: fb.lstm(3, 4.5, 2),
                                  lambda: fb.rnn(3, 4, 2, activation="softmax")])
def test_bad_recurrent_sizes_and_activation(make):
    with pytest.raises(ValueError, match=r"must be (a positive int|elementwise)"):
        make()


def test_delta_norms_needs_a_recurrent_layer():
    net = fb.mlp((3, 2))
    with pytest.raises(ValueError, match=r"delta_norms needs a network with a recurrent layer"):
        fb.delta_norms(net, "mse", _params(net), jnp.ones((1, 3)), jnp.zeros((1, 2)))
