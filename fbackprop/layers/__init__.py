"""Layers: each an ``f p a`` with its two hand-written Euler derivatives beside it."""
from .base import Layer, Probes
from .conv import conv
from .dense import dense
from .gru import gru_gate_params, gru_layer
from .lstm import gate_params, lstm_layer
from .pool import flatten, max_pool, mean_pool
from .recurrent import rnn_layer

__all__ = ["Layer", "Probes", "conv", "dense", "flatten", "gate_params", "gru_gate_params", "gru_layer", "lstm_layer", "max_pool",
           "mean_pool", "rnn_layer"]
