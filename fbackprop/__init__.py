"""fbackprop: backpropagation derived, executed and checked.

Networks are pure functions of parameter pytrees. Each layer is Gordon's curried ``f p x`` with
its two Euler derivatives ``D(f p) a`` and ``D(λv. f v a) p`` written by hand beside it; one
generic recurrence turns them into the backward pass, and every rule is checked against
``jax.grad``.
"""
import importlib
import importlib.util

__version__ = "0.1.0"

# Each public name and the module that defines it. They are imported on first use (PEP 562), so
# that `import fbackprop` and `fbackprop --help` do not import JAX; `fb.mlp` imports what it needs.
_HOME = {
    **dict.fromkeys(("D", "compose", "nabla", "star"), "notation"),
    **dict.fromkeys(("Activation", "get_activation"), "activations"),
    **dict.fromkeys(("Cost", "get_cost"), "costs"),
    **dict.fromkeys(("CheckOptions", "GradientCheckError", "GradientReport", "check", "check_grad",
                     "check_layer", "check_vjp", "check_custom_rules", "CustomRulesReport"),
                    "gradcheck"),
    "as_custom_vjp": "interop",
    **dict.fromkeys(("Layer", "Probes", "dense", "conv", "flatten", "gate_params",
                     "gru_gate_params", "gru_layer", "lstm_layer", "max_pool", "mean_pool",
                     "rnn_layer", "add", "causal_self_attention", "concat", "dropout",
                     "elementwise", "embedding", "gelu", "layer_norm", "positional",
                     "residual"), "layers"),
    **dict.fromkeys(("cnn", "delta_norms", "gru", "lstm", "mlp", "rnn", "transformer",
                     "with_dropout_key"), "models"),
    **dict.fromkeys(("Backprop", "astype", "backprop", "loss_fn", "manual_grad"), "loss"),
    **dict.fromkeys(("Network", "backward", "dag", "forward", "serial"), "network"),
    **dict.fromkeys(("TrainResult", "TrainingStopped", "load_run", "predict", "train"),
                    "training"),
}
_SUBMODULES = ("graph", "notation", "data", "testing")  # and fb.kernels (Pallas), on use


def __getattr__(name):
    if name in _HOME:
        value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
        globals()[name] = value  # found directly from now on
        return value
    if name in _SUBMODULES or (not name.startswith("_")
                               and importlib.util.find_spec(f"{__name__}.{name}") is not None):
        return importlib.import_module(f"{__name__}.{name}")  # e.g. fb.training, fb.gradcheck
    raise AttributeError(f"module 'fbackprop' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})


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
    "check", "check_grad", "check_vjp", "check_layer", "CheckOptions", "GradientReport",
    "GradientCheckError", "check_custom_rules", "CustomRulesReport", "testing",
    # the JAX ecosystem
    "as_custom_vjp",
    # training and data
    "data", "train", "TrainResult", "TrainingStopped", "load_run", "predict",
]
