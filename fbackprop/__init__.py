"""fbackprop: backpropagation derived, executed and checked.

Networks are pure functions of parameter pytrees. Each layer is Gordon's curried ``f p x`` with
its two Euler derivatives ``D(f p) a`` and ``D(λv. f v a) p`` written by hand beside it; one
generic recurrence turns them into the backward pass, and every rule is checked against
``jax.grad``.
"""
import importlib
import warnings

from . import graph, notation
from .activations import Activation, get_activation
from .costs import Cost, get_cost
from .gradcheck import (GradientCheckError, GradientReport, check, check_grad, check_layer,
                        check_vjp)
from .gradcheck import CustomRulesReport, check_custom_rules
from .interop import as_custom_vjp
from .layers import Layer, Probes, dense
from .layers import (conv, flatten, gate_params, gru_gate_params, gru_layer, lstm_layer,
                     max_pool, mean_pool, rnn_layer)
from .layers import (add, causal_self_attention, concat, dropout, elementwise, embedding, gelu,
                     layer_norm, positional, residual)
from .models import cnn, delta_norms, gru, lstm, mlp, rnn, transformer, with_dropout_key
from .loss import Backprop, astype, backprop, loss_fn, manual_grad
from .network import Network, backward, dag, forward, serial
from .notation import D, compose, nabla, star
from . import data, testing
from .training import TrainResult, TrainingStopped, load_run, train

__version__ = "0.1.0"

# Modules renamed when the checker became a package; the old names still import, with a warning.
_RENAMED = {"checker": "fbackprop.gradcheck", "verify": "fbackprop.gradcheck",
            "validate": "fbackprop.inputs", "rundir": "fbackprop.training.rundir"}


def __getattr__(name):
    if name == "kernels":  # Pallas kernels: imported on first use (Pallas is slow to import)
        return importlib.import_module("fbackprop.kernels")
    if name in _RENAMED:
        warnings.warn(f"fbackprop.{name} is deprecated; use {_RENAMED[name]}.", DeprecationWarning,
                      stacklevel=2)
        return importlib.import_module(_RENAMED[name])
    raise AttributeError(f"module 'fbackprop' has no attribute {name!r}")

__all__ = [
    # notation, activations, costs
    "D", "compose", "nabla", "star", "notation", "graph", "Activation", "get_activation", "Cost",
    "get_cost",
    # layers and networks
    "Layer", "Probes", "dense", "conv", "mean_pool", "max_pool", "flatten", "rnn_layer",
    "lstm_layer", "gate_params", "gru_layer", "gru_gate_params", "add", "concat", "residual",
    "elementwise", "gelu", "dropout", "layer_norm", "embedding", "positional",
    "causal_self_attention", "Network", "serial", "dag", "forward", "backward", "backprop",
    "Backprop", "loss_fn", "manual_grad", "astype",
    # models
    "mlp", "cnn", "rnn", "lstm", "gru", "transformer", "with_dropout_key", "delta_norms",
    # checking
    "check", "check_grad", "check_vjp", "check_layer", "GradientReport", "GradientCheckError",
    "check_custom_rules", "CustomRulesReport", "testing",
    # the JAX ecosystem
    "as_custom_vjp",
    # training and data
    "data", "train", "TrainResult", "TrainingStopped", "load_run",
]
