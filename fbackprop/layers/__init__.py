"""Layers: each an ``f p a`` with its two hand-written Euler derivatives beside it."""
from .attention import causal_self_attention
from .base import Layer, Probes
from .combinators import add, concat, dropout, elementwise, gelu, residual
from .conv import conv
from .dense import dense
from .embedding import embedding, positional
from .gru import gru_gate_params, gru_layer
from .lstm import gate_params, lstm_layer
from .norm import layer_norm
from .pool import flatten, max_pool, mean_pool
from .recurrent import rnn_layer

__all__ = ["Layer", "Probes", "add", "causal_self_attention", "concat", "conv", "dense",
           "dropout", "elementwise", "embedding", "flatten", "gate_params", "gelu",
           "gru_gate_params", "gru_layer", "layer_norm", "lstm_layer", "max_pool", "mean_pool",
           "positional", "residual", "rnn_layer"]
