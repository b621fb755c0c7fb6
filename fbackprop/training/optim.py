"""Optimizers: the hand-written gradient goes through optax.

``"gd"`` is Gordon's Δp = −η∇φ(p) written out by hand as an optax ``GradientTransformation``
(:func:`gordon_gd`); ``"sgd"``, ``"momentum"`` (β = 0.9) and ``"adam"`` are optax's own.
"""
from __future__ import annotations

import jax
import optax

from ..inputs import require_choice, require_number

__all__ = ["gordon_gd", "OPTIMIZERS", "LR_DEFAULTS", "make_optimizer"]

# The learning rate each optimizer gets when none is given (a data set may override it).
LR_DEFAULTS = {"gd": 0.1, "sgd": 0.1, "momentum": 0.05, "adam": 3e-3}


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
}


def check_lr(lr, optimizer: str) -> float:
    """``lr`` as a float after checking that it is a finite number > 0.

    Args:
      lr: the learning rate η given by the user.
      optimizer: a name in :data:`OPTIMIZERS`; its default rate is suggested as the fix.

    Returns:
      ``float(lr)``.

    Raises:
      ValueError: ``lr`` is not a finite number > 0.
    """
    return require_number(lr, "the learning rate", positive=True,
                          fix=f"Try --lr {LR_DEFAULTS[optimizer]}.")


def make_optimizer(name: str, lr: float) -> optax.GradientTransformation:
    """The optimizer ``name`` with learning rate ``lr``.

    Args:
      name: ``"gd"`` (Gordon's Δp = −η∇φ(p), :func:`gordon_gd`), ``"sgd"``, ``"momentum"``
        (SGD with β = 0.9) or ``"adam"``.
      lr: the learning rate η, a finite number > 0.

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: unknown ``name``, or ``lr`` not a finite number > 0.
    """
    require_choice(name, OPTIMIZERS, "optimizer")
    return OPTIMIZERS[name](check_lr(lr, name))
