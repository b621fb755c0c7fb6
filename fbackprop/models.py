"""Model constructors: an MLP (Gordon, Kamper, Bradbury), a CNN (Jin §2), a recurrent network
(Jin §3.1–3.2), an LSTM (Jin §3.3), a GRU (Cho et al. 2014) and a decoder-only transformer (a
graph of layers). Each returns an :class:`fbackprop.Network` — a serial stack or a DAG of
hand-written layers with ``input_shape`` set — so ``manual_grad``, ``loss_fn``, ``backprop`` and
the input checks work on it unchanged. :func:`delta_norms` reads the per-time-step deltas of the
hand-written BPTT.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from .activations import get_activation
from .inputs import require_bool, require_choice, require_positive_int, require_positive_ints
from .layers.attention import causal_self_attention
from .layers.combinators import dropout as dropout_layer
from .layers.combinators import residual
from .layers.conv import conv
from .layers.dense import dense
from .layers.embedding import embedding, positional
from .layers.gru import gru_layer
from .layers.lstm import lstm_layer
from .layers.norm import layer_norm
from .layers.pool import flatten, max_pool, mean_pool
from .layers.recurrent import require_output, rnn_layer
from .loss import backprop
from .network import Network, dag

__all__ = ["mlp", "cnn", "rnn", "lstm", "gru", "transformer", "with_dropout_key", "delta_norms"]

_POOLS = {"mean": mean_pool, "max": max_pool}


def mlp(sizes, activation="sigmoid", output_activation=None, bias: bool = True) -> Network:
    """A multi-layer perceptron of dense layers ``f p a = g(W a + b)``.

    Args:
      sizes: the widths, input first, e.g. ``(4, 8, 3)``: at least two positive ints (a tuple,
        list or integer array).
      activation: used on hidden layers and, when ``output_activation`` is ``None``, on the
        output layer too: ``"sigmoid" | "tanh" | "relu" | "identity"``.
      output_activation: the output layer's activation (``"softmax"`` allowed), or ``None``.
      bias: ``False`` gives Bradbury's bias-free network.

    Returns:
      A :class:`~fbackprop.Network` on x of shape (batch, sizes[0]) with output
      (batch, sizes[-1]); parameters are one ``{"W", "b"}`` dict per layer.
    """
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
        raise TypeError(f"mlp: sizes must be a sequence of layer widths such as (4, 8, 3), "
                        f"received {type(sizes).__name__}: {sizes!r}.")
    try:
        widths = require_positive_ints(sizes, "sizes", scalar_ok=False)
    except ValueError:
        widths = ()
    if len(widths) < 2:
        raise ValueError(f"mlp: sizes must hold at least two positive ints (input width, then "
                         f"each layer's width), received {tuple(sizes)!r}.")
    sizes = widths
    bias = require_bool(bias, "bias", who="mlp", fix="Pass bias=False for a bias-free network.")
    hidden = get_activation(activation)
    out = hidden if output_activation is None else get_activation(
        output_activation, argument="output_activation")
    acts = [hidden] * (len(sizes) - 2) + [out]
    layers = tuple(dense(n_in, n_out, g, bias=bias)
                   for n_in, n_out, g in zip(sizes[:-1], sizes[1:], acts))
    name = (f"mlp({'-'.join(map(str, sizes))}, {hidden.name}/{out.name}"
            f"{'' if bias else ', no bias'})")
    return Network(layers, (sizes[0],), name)


def _require_counts(value, argument: str, expected: str) -> tuple:
    """``cnn``'s ``conv_channels`` or ``hidden``: a sequence of positive ints, as a tuple."""
    if isinstance(value, int) or not hasattr(value, "__iter__"):
        raise TypeError(f"cnn: {argument} must be {expected}, received {value!r}.")
    return tuple(require_positive_int(c, f"{argument} entries", who="cnn") for c in value)


def _conv_blocks(shape, conv_channels, ks, ps, pool_layer, g):
    """The CNN's conv+pool blocks, each map size checked before anything is built, and the
    width of the flattened output of the last one."""
    layers, channels, spatial = [], shape[0], shape[1:]
    for block, c_out in enumerate(conv_channels, start=1):
        if any(s < k for s, k in zip(spatial, ks)):
            raise ValueError(f"cnn: block {block}'s kernel {ks} is larger than its input map "
                             f"{spatial} (valid convolution, no padding). Use a smaller "
                             f"kernel_size, fewer blocks, or a larger input.")
        spatial = tuple(s - k + 1 for s, k in zip(spatial, ks))
        if any(s % q for s, q in zip(spatial, ps)):
            raise ValueError(f"cnn: block {block}'s convolution gives a map of size {spatial}, "
                             f"which the pool size {ps} does not divide (non-overlapping pooling "
                             f"needs whole windows). Change kernel_size, pool_size or input_shape.")
        layers += [conv(channels, c_out, ks, g), pool_layer(ps)]
        channels, spatial = c_out, tuple(s // q for s, q in zip(spatial, ps))
    return layers, channels * math.prod(spatial)


def cnn(input_shape, *, conv_channels, kernel_size, pool_size, pool: str = "mean", hidden=(),
        n_out: int, activation="sigmoid", output_activation="identity") -> Network:
    """A convolutional network (Jin §2): one conv(+activation)+pool block per entry of
    ``conv_channels``, then flatten, dense layers of widths ``hidden``, and ``n_out`` outputs.

    Args:
      input_shape: one example's shape including channels: (C, L) for 1-D signals, (C, H, W)
        for images; x has shape (batch, *input_shape), floating point.
      conv_channels: output channels of each block, e.g. (8, 16).
      kernel_size: an int or one int per spatial axis, the same for every block; convolutions
        are valid (no padding), stride 1 (Jin eq. 12).
      pool_size: an int or one int per spatial axis; pools are non-overlapping and must divide
        the map they pool.
      pool: ``"mean"`` (Jin eq. 13) or ``"max"``.
      hidden: widths of the dense layers after flattening (Jin eqs. 14–15).
      n_out: the output width.
      activation: used in the conv blocks and the hidden dense layers.
      output_activation: the last layer's (``"identity"`` gives logits for the cross-entropy
        costs).

    Returns:
      A :class:`~fbackprop.Network` with output (batch, n_out).

    Raises:
      ValueError, TypeError: a shape that does not fit (a kernel larger than its map, a pool
        that does not divide it) or a malformed argument, before anything is built.
    """
    try:
        shape = require_positive_ints(input_shape, "input_shape", scalar_ok=False)
    except ValueError:
        shape = ()
    if len(shape) not in (2, 3):
        raise ValueError(f"cnn: input_shape must be (C, L) for 1-D signals or (C, H, W) for "
                         f"images, with positive ints, received {input_shape!r}.")
    n = len(shape) - 1
    per_axis = "One entry per spatial axis of the input."
    ks = require_positive_ints(kernel_size, "kernel_size", n=n, who="cnn", fix=per_axis)
    ps = require_positive_ints(pool_size, "pool_size", n=n, who="cnn", fix=per_axis)
    require_choice(pool, tuple(_POOLS), "pool", who="cnn")
    conv_channels = _require_counts(conv_channels, "conv_channels",
                                    "a sequence of channel counts such as (4, 8)")
    hidden = _require_counts(hidden, "hidden",
                             "a sequence of dense widths such as (32,) (or () for none)")
    n_out = require_positive_int(n_out, "n_out", who="cnn")
    g = get_activation(activation)
    out = get_activation(output_activation, argument="output_activation")

    layers, flat_width = _conv_blocks(shape, conv_channels, ks, ps, _POOLS[pool], g)
    layers.append(flatten())
    widths = (flat_width,) + hidden
    layers += [dense(a, b, g) for a, b in zip(widths[:-1], widths[1:])]
    layers.append(dense(widths[-1], n_out, out))
    name = (f"cnn({'x'.join(map(str, shape))}, conv {'-'.join(map(str, conv_channels)) or 'none'}, "
            f"k{'x'.join(map(str, ks))}, {pool} pool {'x'.join(map(str, ps))}, "
            f"hidden {'-'.join(map(str, hidden)) or 'none'}, {n_out} out, {g.name}/{out.name})")
    return Network(tuple(layers), shape, name)


def rnn(n_in: int, n_hidden: int, n_out: int, *, activation="tanh",
        output: str = "last") -> Network:
    """A recurrent network (Jin eqs. 26–27): ``h_τ = φ(W_xh x_τ + W_hh h_{τ−1} + b)``, then a
    linear dense head ``W_hy h + b_y`` (logits; Jin's softmax is the softmax cross-entropy cost).

    Args:
      n_in: features per step; x has shape (batch, T, n_in), any T ≥ 1.
      n_hidden: the state width H.
      n_out: the output width.
      activation: φ, elementwise.
      output: ``"last"`` scores h_T only (y of shape (batch, n_out)); ``"all"`` scores every step
        (y of shape (batch, T, n_out)) with J = Σ_τ J^(τ) per example (Jin eq. 28).

    Returns:
      A :class:`~fbackprop.Network` (:func:`~fbackprop.rnn_layer`, then
      :func:`~fbackprop.dense`); losses and gradients are batch means.
    """
    n_in, n_hidden, n_out = (require_positive_int(v, arg, who="rnn") for arg, v in
                             (("n_in", n_in), ("n_hidden", n_hidden), ("n_out", n_out)))
    require_output(output, "rnn")
    body = rnn_layer(n_in, n_hidden, activation, output=output)
    g = get_activation(activation)
    return Network((body, dense(n_hidden, n_out, "identity")), (None, n_in),
                   f"rnn({n_in}→{n_hidden}→{n_out}, {g.name}, output={output})")


def lstm(n_in: int, n_hidden: int, n_out: int, *, output: str = "last") -> Network:
    """An LSTM (Jin eqs. 30–35) followed by a linear dense head on h (logits, or the prediction
    for ``"mse"``; Jin's eq. 36 scores h_τ itself, i.e. a head fixed to the identity).

    Args:
      n_in: features per step; x has shape (batch, T, n_in).
      n_hidden: the width H of h and C.
      n_out: the output width.
      output: ``"last"`` or ``"all"``, as for :func:`rnn`.

    Returns:
      A :class:`~fbackprop.Network` (:func:`~fbackprop.lstm_layer`, then a linear dense head).
    """
    n_in, n_hidden, n_out = (require_positive_int(v, arg, who="lstm") for arg, v in
                             (("n_in", n_in), ("n_hidden", n_hidden), ("n_out", n_out)))
    require_output(output, "lstm")
    return Network((lstm_layer(n_in, n_hidden, output=output), dense(n_hidden, n_out, "identity")),
                   (None, n_in), f"lstm({n_in}→{n_hidden}→{n_out}, output={output})")


def gru(n_in: int, n_hidden: int, n_out: int, *, output: str = "last") -> Network:
    """A GRU (Cho et al. 2014, reset gate before the candidate's product; see
    :mod:`fbackprop.layers.gru`) followed by a linear dense head on h (logits, or the prediction
    for ``"mse"``).

    Args:
      n_in: features per step; x has shape (batch, T, n_in).
      n_hidden: the width H of h.
      n_out: the output width.
      output: ``"last"`` or ``"all"``, as for :func:`rnn`.

    Returns:
      A :class:`~fbackprop.Network` (:func:`~fbackprop.gru_layer`, then a linear dense head);
      losses and gradients are batch means.
    """
    n_in, n_hidden, n_out = (require_positive_int(v, arg, who="gru") for arg, v in
                             (("n_in", n_in), ("n_hidden", n_hidden), ("n_out", n_out)))
    require_output(output, "gru")
    return Network((gru_layer(n_in, n_hidden, output=output), dense(n_hidden, n_out, "identity")),
                   (None, n_in), f"gru({n_in}→{n_hidden}→{n_out}, output={output})")


def transformer(vocab_size: int, d_model: int, n_heads: int, n_layers: int, max_len: int,
                mlp_ratio: int = 4, dropout: float = 0.0) -> Network:
    """A decoder-only transformer: token and learned positional embeddings, ``n_layers``
    pre-layer-norm blocks ``h ← h + attn(ln(h))``, ``h ← h + mlp(ln(h))`` (mlp = dense with GELU,
    then a linear dense), a final layer norm and a linear head giving logits over the vocabulary
    at every position.

    Args:
      vocab_size: the number of token ids V.
      d_model: the width D.
      n_heads: attention heads per block (dividing D).
      n_layers: the number of blocks.
      max_len: the longest sequence T.
      mlp_ratio: the MLP's hidden width is ``mlp_ratio · D``.
      dropout: the rate of the dropout nodes after the embeddings and on each residual branch;
        0 adds none. They are the identity until the network is rebuilt with a key
        (:func:`with_dropout_key`).

    Returns:
      A DAG :class:`~fbackprop.Network`: x of shape (batch, T) integer token ids in [0, V),
      output (batch, T, V) logits. Train it with ``"softmax_cross_entropy"`` and y either
      one-hot (batch, T, V) or integer next tokens (batch, T), which are one-hot encoded; the
      loss sums over positions and averages over the batch.
    """
    V, D, H, L, T = (require_positive_int(v, arg, who="transformer") for arg, v in
                     (("vocab_size", vocab_size), ("d_model", d_model), ("n_heads", n_heads),
                      ("n_layers", n_layers), ("max_len", max_len)))
    ratio = require_positive_int(mlp_ratio, "mlp_ratio", who="transformer")

    def drop():
        return (dropout_layer(dropout),) if dropout else ()

    nodes = [("embed", embedding(V, D), ("x",)), ("pos", positional(T, D), ("embed",))]
    nodes += [("drop", layer, ("pos",)) for layer in drop()]
    h = nodes[-1][0]
    for b in range(L):
        nodes += residual(f"block{b}.attn", layer_norm(D), causal_self_attention(D, H), *drop(),
                          input=h)
        nodes += residual(f"block{b}.mlp", layer_norm(D), dense(D, ratio * D, "gelu"),
                          dense(ratio * D, D, "identity"), *drop(), input=f"block{b}.attn")
        h = f"block{b}.mlp"
    nodes += [("ln_f", layer_norm(D), (h,)), ("logits", dense(D, V, "identity"), ("ln_f",))]
    return dag(nodes, "logits", input_shape=(None,),
               name=f"transformer(V={V}, D={D}, H={H}, L={L}, T≤{T}"
                    + (f", dropout={dropout:g})" if dropout else ")"))


def with_dropout_key(net: Network, key) -> Network:
    """The network for one training step: every dropout node rebuilt with its own key,
    ``jax.random.fold_in(key, node index)``; evaluation uses ``net`` itself (dropout the
    identity). Pure: call it inside the jitted step with that step's key.

    Args:
      net: a network with dropout layers (built by :func:`~fbackprop.dropout` with no key).
      key: a ``jax.random`` key, a fresh one per step.

    Returns:
      The same network with keyed dropout layers (same parameters).
    """
    if not isinstance(key, jax.Array) or not (
            jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
            or (key.dtype == jnp.uint32 and key.shape == (2,))):
        raise TypeError(f"with_dropout_key: key must be a jax.random key (jax.random.key(0) or "
                        f"jax.random.PRNGKey(0)), received {type(key).__name__}: {key!r}.")
    layers = tuple(
        dropout_layer(float(layer.name[len("dropout("):-1]), jax.random.fold_in(key, i))
        if layer.name.startswith("dropout(") and layer.name.endswith(")") and "keyed" not in
        layer.name else layer for i, layer in enumerate(net.layers))
    return dataclasses.replace(net, layers=layers)


def delta_norms(net: Network, cost, params, x, y) -> dict:
    """Norms over τ of the hand-written per-time-step deltas, to see gradients vanish or
    explode (Jin §3.2).

    Args:
      net: a network with at least one recurrent layer.
      cost: a cost name or :class:`~fbackprop.Cost`.
      params, x, y: as for :func:`~fbackprop.backprop`; x of shape (batch, T, n_in).

    Returns:
      ``{"h": (T,), "C": (T,)}``: ``norms[τ]`` is the batch average of ‖∂J_b/∂h_τ‖ (Euclidean
      norm over the hidden units), J_b being example b's own cost; since J is the batch mean,
      that equals Σ_b ‖∂J/∂h_τ^(b)‖. "C" (∂J/∂C_τ) appears for LSTM layers. With several
      recurrent layers the keys are prefixed by the layer's index, e.g. ``"0.h"``. Computed by
      the manual pass (``Layer.time_deltas``).

    Raises:
      ValueError: the network has no recurrent layer.
    """
    run = backprop(net, cost, input_grad=False)(params, x, y)
    recurrent = [l for l, layer in enumerate(net.layers) if layer.time_deltas is not None]
    if not recurrent:
        raise ValueError(f"delta_norms needs a network with a recurrent layer (one with "
                         f"time_deltas, such as fbackprop.rnn, fbackprop.lstm or fbackprop.gru); "
                         f"{net!r} has none.")
    out = {}
    for l in recurrent:
        layer = net.layers[l]
        deltas = layer.time_deltas(params[l], run.activations[l], run.deltas[l + 1])
        for key, t in deltas.items():
            norms = jnp.sum(jnp.linalg.norm(t.reshape(t.shape[:2] + (-1,)), axis=-1), axis=0)
            out[key if len(recurrent) == 1 else f"{l}.{key}"] = norms
    return out
