"""Argument validation: the one home of every ``require_*`` check in fbackprop.

Each function takes the value, the name the user knows it by (``argument``), an optional ``who``
(the function or command reporting it, e.g. ``"cnn"``) and an optional ``fix`` (how to correct
it), and either returns the value normalised (a Python ``int``/``float``/``tuple``, an array) or
raises ``TypeError``/``ValueError`` with one message shaped as

    <who>: <argument> must be <what was expected>, received <what was received>. <fix>

NumPy and JAX scalars are accepted wherever Python numbers are. The array checks run on shapes
and dtypes only, so under ``jax.jit`` they cost nothing (they run once, at trace time).
"""
from .arrays import (as_float_input, as_network_input, is_concrete, require_finite, require_mask,
                     require_params, require_target, require_target_values, require_tree_like,
                     shape_str)
from .memory import free_bytes, require_fits, tree_bytes
from .scalars import (lookup, require_bool, require_callable, require_choice, require_float_dtype,
                      require_fraction,
                      require_int, require_number, require_positive_int, require_positive_ints)

__all__ = ["require_int", "require_positive_int", "require_positive_ints", "require_number",
           "require_fraction", "require_choice", "require_bool", "require_callable", "lookup",
           "as_float_input", "as_network_input", "require_target", "require_tree_like", "require_params",
           "shape_str", "require_finite", "require_target_values", "is_concrete", "require_mask",
           "tree_bytes", "free_bytes", "require_fits", "require_float_dtype"]
