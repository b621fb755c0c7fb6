"""fbackprop: backpropagation derived, executed and checked.

Networks are pure functions of parameter pytrees. Each layer is Gordon's curried ``f p x`` with
its two Euler derivatives ``D(f p) a`` and ``D(λv. f v a) p`` written by hand beside it; one
generic recurrence turns them into the backward pass, and every rule is checked against
``jax.grad``.
"""
from . import graph, notation
from .activations import Activation, get_activation
from .checker import GradientCheckError, GradientReport, check, check_grad
from .costs import Cost, get_cost
from .layers import Layer, dense
from .layers import conv, flatten, gate_params, lstm_layer, max_pool, mean_pool, rnn_layer
from .models import cnn, delta_norms, lstm, rnn
from .network import (Backprop, Network, astype, backprop, backward, forward, loss_fn,
                      manual_grad, mlp, serial)
from .notation import D, compose, nabla, star
from . import data
from .training import TrainResult, TrainingStopped, train

__version__ = "0.1.0"

__all__ = [
    "Activation", "Backprop", "Cost", "D", "GradientCheckError", "GradientReport", "Layer",
    "Network", "astype", "backprop", "backward", "check", "check_grad", "compose", "dense", "forward", "get_activation", "get_cost", "graph", "loss_fn",
    "manual_grad", "mlp", "nabla", "notation", "serial", "star",
    "data", "train", "TrainResult", "TrainingStopped",
    # convolutional and recurrent models (issue 3)
    "cnn", "conv", "delta_norms", "flatten", "gate_params", "lstm", "lstm_layer", "max_pool",
    "mean_pool", "rnn", "rnn_layer",
]
