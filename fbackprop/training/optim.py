"""Optimizers and the precision policy: the hand-written gradient goes through optax.

``"gd"`` is Gordon's Δp = −η∇φ(p) written out by hand as an optax ``GradientTransformation``
(:func:`gordon_gd`); ``"sgd"``, ``"momentum"`` (β = 0.9), ``"adam"`` and ``"adamw"`` (Adam with
decoupled weight decay, Loshchilov & Hutter 2019) are optax's own.

Mixed precision (:class:`Policy`, after DeepMind's jmp: a parameter, a compute and an output
dtype). ``"bf16"`` and ``"fp16"`` keep the parameters and the optimizer state in float32 (the
master weights); each step casts the parameters and the inputs to the compute dtype, runs the
forward pass and the hand-written backward there (the few steps that need float32 widen
themselves, :mod:`fbackprop.dtypes`), and casts the gradient back to float32 for the update.
``"fp16"`` adds dynamic loss scaling (:func:`dynamic_loss_scale`): float16 has 5 exponent bits,
so small deltas underflow to zero unless the backward starts from S·d_L. No library fits as a
whole: jmp is not a dependency (and unmaintained); optax offers :func:`optax.apply_if_finite`,
which skips a step whose gradient is not finite but keeps no scale, so the skipping is optax's
and the scale (halved on overflow, doubled after a run of finite steps) is written here.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..inputs import require_choice, require_number

__all__ = ["gordon_gd", "OPTIMIZERS", "LR_DEFAULTS", "WEIGHT_DECAY_DEFAULT", "make_optimizer",
           "Policy", "PRECISIONS", "get_policy", "LossScaleState", "dynamic_loss_scale",
           "loss_scale"]

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


def make_optimizer(name: str, lr: float, weight_decay=None,
                   precision: str = "fp32") -> optax.GradientTransformation:
    """The optimizer ``name`` with learning rate ``lr`` (with dynamic loss scaling under the
    precision ``"fp16"``).

    Args:
      name: ``"gd"`` (Gordon's Δp = −η∇φ(p), :func:`gordon_gd`), ``"sgd"``, ``"momentum"``
        (SGD with β = 0.9), ``"adam"`` or ``"adamw"``.
      lr: the learning rate η, a finite number > 0.
      weight_decay: ``"adamw"`` only: the decoupled weight decay λ ≥ 0 (``None``: 1e-4); it
        decays every parameter leaf.
      precision: a name in :data:`PRECISIONS`; ``"fp16"`` wraps the optimizer in
        :func:`dynamic_loss_scale`.

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: unknown ``name`` or ``precision``, ``lr`` not a finite number > 0, or a
        weight decay given for another optimizer than ``"adamw"`` or not a finite number ≥ 0.
    """
    require_choice(name, OPTIMIZERS, "optimizer")
    lr, weight_decay = check_lr(lr, name), check_weight_decay(weight_decay, name)
    optimizer = (OPTIMIZERS[name](lr, weight_decay=weight_decay) if weight_decay is not None
                 else OPTIMIZERS[name](lr))
    return dynamic_loss_scale(optimizer) if get_policy(precision).loss_scaling else optimizer


@dataclasses.dataclass(frozen=True)
class Policy:
    """A mixed-precision policy: which dtype parameters are kept in, which the forward and
    backward passes compute in, and which the network's outputs are read in.

    Attributes:
      name: ``"fp32" | "bf16" | "fp16"``.
      param_dtype: the master weights' and optimizer state's dtype (float32).
      compute_dtype: the dtype of the forward pass and the hand-written backward.
      output_dtype: the dtype outputs and gradients return to.
      loss_scaling: whether the backward starts from a scaled delta (float16).
    """

    name: str
    param_dtype: Any
    compute_dtype: Any
    output_dtype: Any
    loss_scaling: bool = False

    @property
    def low(self) -> bool:
        """Whether the compute dtype is bfloat16 or float16."""
        return jnp.dtype(self.compute_dtype) != jnp.dtype(self.param_dtype)

    def cast_to_compute(self, tree):
        """The floating leaves of ``tree`` in the compute dtype (integer leaves unchanged)."""
        return _cast(tree, self.compute_dtype)

    def cast_to_param(self, tree):
        """The floating leaves of ``tree`` in the parameter dtype (integer leaves unchanged)."""
        return _cast(tree, self.param_dtype)

    def cast_to_output(self, tree):
        """The floating leaves of ``tree`` in the output dtype (integer leaves unchanged)."""
        return _cast(tree, self.output_dtype)


def _cast(tree, dtype):
    return jax.tree.map(lambda t: t.astype(dtype) if jnp.issubdtype(t.dtype, jnp.floating)
                        else t, tree)


PRECISIONS = {
    "fp32": Policy("fp32", jnp.float32, jnp.float32, jnp.float32),
    "bf16": Policy("bf16", jnp.float32, jnp.bfloat16, jnp.float32),
    "fp16": Policy("fp16", jnp.float32, jnp.float16, jnp.float32, loss_scaling=True),
}


def get_policy(name: str) -> Policy:
    """The :class:`Policy` named ``name``.

    Args:
      name: ``"fp32"`` (everything float32), ``"bf16"`` or ``"fp16"`` (float32 master weights,
        bfloat16 or float16 compute; fp16 with dynamic loss scaling).

    Returns:
      The :class:`Policy`.

    Raises:
      ValueError: an unknown name; the message lists the valid ones.
    """
    require_choice(name, PRECISIONS, "precision")
    return PRECISIONS[name]


# Dynamic loss scaling: the scale a run starts from, the finite steps after which it doubles,
# and how many non-finite steps in a row are skipped before the update is applied anyway (then
# the run stops on its non-finite parameters: the overflow is not the scale's).
INITIAL_LOSS_SCALE = 2.0 ** 15
GROWTH_INTERVAL = 2000
MAX_CONSECUTIVE_SKIPS = 30


class LossScaleState(NamedTuple):
    """The state of :func:`dynamic_loss_scale`.

    Attributes:
      scale: the loss scale S, a float32 scalar ≥ 1.
      good_steps: finite steps since the scale last changed.
      inner: ``optax.apply_if_finite``'s state (its ``total_notfinite`` counts the skipped
        steps) around the optimizer's own state.
    """

    scale: Any
    good_steps: Any
    inner: Any


def dynamic_loss_scale(inner: optax.GradientTransformation, *,
                       initial: float = INITIAL_LOSS_SCALE, period: int = GROWTH_INTERVAL,
                       max_skips: int = MAX_CONSECUTIVE_SKIPS) -> optax.GradientTransformation:
    """``inner`` with dynamic loss scaling for float16 training.

    The step computes its gradient from the scaled loss S·J and divides it by S (the current
    scale, :func:`loss_scale`) before ``update``. A gradient with an infinity or a NaN (an
    overflow) is skipped by ``optax.apply_if_finite`` (zero update, optimizer state kept) and
    halves S (never below 1); ``period`` finite steps in a row double it.

    Args:
      inner: the optimizer.
      initial: the first scale.
      period: finite steps after which the scale doubles.
      max_skips: non-finite steps in a row skipped before the update is applied anyway.

    Returns:
      An ``optax.GradientTransformation`` whose state is a :class:`LossScaleState`.
    """
    guarded = optax.apply_if_finite(inner, max_skips)

    def init(params):
        return LossScaleState(jnp.asarray(initial, jnp.float32), jnp.zeros((), jnp.int32),
                              guarded.init(params))

    def update(grads, state, params=None):
        updates, inner_state = guarded.update(grads, state.inner, params)
        finite = inner_state.last_finite
        good = jnp.where(finite, state.good_steps + 1, 0)
        grow = good >= period
        scale = jnp.where(finite, jnp.where(grow, 2.0 * state.scale, state.scale),
                          jnp.maximum(state.scale / 2.0, 1.0))
        return updates, LossScaleState(scale.astype(jnp.float32),
                                       jnp.where(grow, 0, good).astype(jnp.int32), inner_state)

    return optax.GradientTransformation(init, update)


def loss_scale(opt_state):
    """The current loss scale of an optimizer state built by :func:`dynamic_loss_scale`.

    Args:
      opt_state: an optimizer state.

    Returns:
      The scale S (a float32 scalar), or ``None`` for a state without loss scaling.
    """
    return opt_state.scale if isinstance(opt_state, LossScaleState) else None
