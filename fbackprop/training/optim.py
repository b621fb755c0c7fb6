"""Optimizers: the hand-written gradient goes through optax.

``"gd"`` is Gordon's Δp = −η∇φ(p) written out by hand as an optax ``GradientTransformation``
(:func:`gordon_gd`); ``"sgd"``, ``"momentum"`` (β = 0.9), ``"adam"`` and ``"adamw"`` (Adam with
decoupled weight decay, Loshchilov & Hutter 2019) are optax's own.
"""
from __future__ import annotations

import jax
import numpy as np
import optax

from ..inputs import require_choice, require_number

__all__ = ["gordon_gd", "OPTIMIZERS", "LR_DEFAULTS", "WEIGHT_DECAY_DEFAULT", "make_optimizer"]

# The learning rate each optimizer gets when none is given (a data set may override it).
LR_DEFAULTS = {"gd": 0.1, "sgd": 0.1, "momentum": 0.05, "adam": 3e-3, "adamw": 1e-3}
# AdamW's decoupled weight decay λ when none is given (optax's default; a data set may override
# it, as modular addition does).
WEIGHT_DECAY_DEFAULT = 1e-4


def gordon_gd(learning_rate: float) -> optax.GradientTransformation:
    """Plain gradient descent as Gordon writes it ("Gradient descent").

    The update of each parameter leaf is the delta Δp = −η ∇φ(p), returned as optax updates so
    that ``optax.apply_updates`` forms p + Δp. Stateless: no moments, no step count.

    Args:
      learning_rate: η > 0, the step size.

    Returns:
      An ``optax.GradientTransformation`` whose ``update(grads, state, params=None)`` returns
      ``(updates, state)`` with ``updates`` the pytree −η·grads (same structure, shapes and
      dtypes as ``grads``) and ``state`` an ``optax.EmptyState``.
    """

    def init(params):
        del params
        return optax.EmptyState()

    def update(grads, state, params=None):
        del params
        return jax.tree.map(lambda g: -learning_rate * g, grads), state  # Δp = −η·∇φ(p)

    return optax.GradientTransformation(init, update)


OPTIMIZERS = {
    "gd": gordon_gd,
    "sgd": optax.sgd,
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "adam": optax.adam,
    "adamw": optax.adamw,  # p ← p − η (Adam's step + λ p): the decay is not part of the gradient
}


def check_lr(lr, optimizer: str) -> float:
    """``lr`` as a float after checking that it is a finite number > 0.

    Args:
      lr: the learning rate η given by the user.
      optimizer: a name in :data:`OPTIMIZERS`; its default rate is suggested as the fix.

    Returns:
      ``float(lr)``.

    Raises:
      ValueError: ``lr`` is not a finite number > 0, or is 0 or inf in float32.
    """
    lr = require_number(lr, "the learning rate", positive=True,
                        fix=f"Try --lr {LR_DEFAULTS[optimizer]}.")
    with np.errstate(over="ignore"):
        as_f32 = float(np.float32(lr))  # the step is taken in float32: 1e-320 is 0 there
    if not (as_f32 > 0 and np.isfinite(as_f32)):
        f32 = np.finfo(np.float32)
        raise ValueError(f"the learning rate must be a number > 0 that float32 can hold "
                         f"({f32.smallest_subnormal:.2g} … {f32.max:.2g}), "
                         f"received {lr!r}, which is {as_f32:g} in float32. Try --lr "
                         f"{LR_DEFAULTS[optimizer]}.")
    return lr


def check_weight_decay(weight_decay, optimizer: str):
    """The weight decay λ for ``optimizer``: a finite number ≥ 0 for ``"adamw"`` (``None``: its
    default, :data:`WEIGHT_DECAY_DEFAULT`), ``None`` for every other optimizer.

    Args:
      weight_decay: λ as given, or ``None``.
      optimizer: a name in :data:`OPTIMIZERS`.

    Returns:
      λ as a float, or ``None``.

    Raises:
      ValueError: λ given for an optimizer without decoupled weight decay, or not a finite
        number ≥ 0.
    """
    if optimizer != "adamw":
        if weight_decay is not None:
            raise ValueError(f"weight_decay applies to the optimizer 'adamw' (decoupled weight "
                             f"decay); received weight_decay {weight_decay!r} with optimizer "
                             f"{optimizer!r}. Use --optimizer adamw, or drop --weight-decay.")
        return None
    if weight_decay is None:
        return WEIGHT_DECAY_DEFAULT
    return require_number(weight_decay, "the weight decay", minimum=0.0,
                          fix=f"E.g. --weight-decay {WEIGHT_DECAY_DEFAULT:g} (0 turns it off).")


def make_optimizer(name: str, lr: float, weight_decay=None) -> optax.GradientTransformation:
    """The optimizer ``name`` with learning rate ``lr``.

    Args:
      name: ``"gd"`` (Gordon's Δp = −η∇φ(p), :func:`gordon_gd`), ``"sgd"``, ``"momentum"``
        (SGD with β = 0.9), ``"adam"`` or ``"adamw"``.
      lr: the learning rate η, a finite number > 0.
      weight_decay: ``"adamw"`` only: the decoupled weight decay λ ≥ 0 (``None``: 1e-4); it
        decays every parameter leaf.

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: unknown ``name``, ``lr`` not a finite number > 0, or a weight decay given for
        another optimizer than ``"adamw"`` or not a finite number ≥ 0.
    """
    require_choice(name, OPTIMIZERS, "optimizer")
    lr, weight_decay = check_lr(lr, name), check_weight_decay(weight_decay, name)
    if weight_decay is not None:
        return OPTIMIZERS[name](lr, weight_decay=weight_decay)
    return OPTIMIZERS[name](lr)
