"""One epoch of training as one compiled function.

The function shuffles with the key it is given, runs a ``lax.scan`` over the minibatches (Gordon:
subsets drawn without replacement; the last subset is whatever remains unused, padded to a whole
batch with masked examples so that every step runs the one step body), then evaluates on the training and test sets — on data placed on the device once. Its
inputs keep their shapes and dtypes from epoch to epoch, so it is traced once per run.

Gradient sources: ``"manual"`` (the hand-written rules, :func:`fbackprop.backprop`),
``"autodiff"`` (``jax.grad`` of :func:`fbackprop.loss_fn`) and ``"checked"`` (manual, compared
with ``jax.grad`` every ``check_every`` steps by :func:`fbackprop.gradcheck.max_relative_error`).
Every gradient is of the batch mean of the per-example cost. A non-finite value or a divergence
freezes the parameters from that step on and is reported in the epoch's status.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..gradcheck import max_relative_error
from ..costs import get_cost
from ..loss import backprop, batch_mean_cost, loss_fn
from ..network import Network

__all__ = []  # internal to fbackprop.training


class _Setup(NamedTuple):
    """The static settings an epoch is compiled for (the tolerance bounds the checked
    gradient's relative error)."""

    net: Network
    cost: Any
    optimizer: Any
    n_train: int
    batch_size: int
    grad: str
    check_every: int
    tolerance: float
    task: str
    n_classes: int = 0  # the vocabulary size of a "sequence" task (its targets are token ids)


def _encode_targets(s: _Setup, y):
    """The targets the cost reads: for a ``"sequence"`` task the token ids (batch, T) one-hot
    encoded, an unscored position (id −1) as a zero row; other tasks' targets as they are."""
    if s.task != "sequence":
        return y
    return jax.nn.one_hot(y, s.n_classes, dtype=jnp.float32)  # id −1 → a row of zeros


def _gradient_source(net, cost, grad):
    """(params, x, y, mask) → (loss, ∂J/∂params) from the chosen source; J is the mean over the
    unmasked examples of the batch."""
    if grad == "autodiff":
        return jax.value_and_grad(loss_fn(net, cost))
    run = backprop(net, cost, input_grad=False)

    def manual(params, x, y, mask):
        r = run(params, x, y, mask)
        return r.loss, r.grads

    return manual


def _leaf_names(params) -> list:
    """Names of the entries of the epoch status's ``finite`` vector, in order: the loss, each
    gradient leaf, each updated parameter leaf."""
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return (["loss"] + [f"gradient{p}" for p in paths]
            + [f"params{p} after the update" for p in paths])


def _all_finite(tree):
    """One bool per leaf of ``tree``: all its values finite."""
    return jnp.stack([jnp.all(jnp.isfinite(t)) for t in jax.tree.leaves(tree)])


def _epoch_function(s: _Setup, batch_sharding=None, replicated=None):
    """The (un-jitted) epoch: ``epoch(params, opt_state, key, epoch_index, data)`` →
    ``(params, opt_state, metrics, status)``. ``status`` records the first step that produced a
    non-finite value or a diverging gradient; from that step on, parameters stay frozen."""
    value_and_grad = _gradient_source(s.net, s.cost, s.grad)
    manual = backprop(s.net, s.cost, input_grad=False)
    reference = jax.grad(loss_fn(s.net, s.cost))
    cost = get_cost(s.cost)
    steps_per_epoch = -(-s.n_train // s.batch_size)

    def constrain(tree, sharding):
        return tree if sharding is None else jax.lax.with_sharding_constraint(tree, sharding)

    def check_error(params, x, y, mask):
        # jax.grad against the hand-written gradient, both at the highest matmul precision.
        with jax.default_matmul_precision("highest"):
            return max_relative_error(manual(params, x, y, mask).grads,
                                      reference(params, x, y, mask))

    def epoch(params, opt_state, key, epoch_index, data):
        def step(carry, batch):
            params, opt_state, status, global_step = carry
            if len(batch) == 3:  # the batch itself, brought by several processes (.distributed)
                x, y, mask = batch
                mask = constrain(mask, replicated)  # counted on every device, no collective
            else:  # indices into the training set, which sits whole on the device
                idx, mask = batch
                x, y = data["x_train"][idx], data["y_train"][idx]
            x = constrain(x, batch_sharding)
            y = constrain(_encode_targets(s, y), batch_sharding)
            loss, grads = value_and_grad(params, x, y, mask)
            updates, new_opt_state = s.optimizer.update(grads, opt_state, params)
            new_params = constrain(optax.apply_updates(params, updates), replicated)
            finite = jnp.concatenate([jnp.isfinite(loss)[None], _all_finite(grads),
                                      _all_finite(new_params)])
            if s.grad == "checked":
                error = jax.lax.cond(global_step % s.check_every == 0, check_error,
                                     lambda *_: jnp.zeros((), jnp.float32), params, x, y, mask)
            else:
                error = jnp.zeros((), jnp.float32)
            bad = ~jnp.all(finite) | (error > s.tolerance)
            go = ~status["stopped"] & ~bad  # after a failure, parameters stay frozen
            first = ~status["stopped"] & bad
            now = {"stopped": jnp.bool_(True), "step": global_step, "finite": finite,
                   "error": error.astype(jnp.float32)}
            status = jax.tree.map(lambda a, b: jnp.where(first, a, b), now, status)
            params, opt_state = jax.tree.map(lambda a, b: jnp.where(go, a, b),
                                             (new_params, new_opt_state), (params, opt_state))
            return (params, opt_state, status, global_step + 1), (loss * jnp.sum(mask), error)

        if "x_batches" in data:
            batches = (data["x_batches"], data["y_batches"], data["mask"])
        else:
            batches = _batches(key, s.n_train, s.batch_size)
        first_step = epoch_index * steps_per_epoch
        status = {"stopped": jnp.bool_(False), "step": first_step,
                  "finite": jnp.ones((1 + 2 * len(jax.tree.leaves(params)),), bool),
                  "error": jnp.zeros((), jnp.float32)}
        carry = (params, opt_state, status, first_step)
        carry, (totals, errors) = jax.lax.scan(step, carry, batches)
        params, opt_state, status, _ = carry
        status = dict(status, step=status["step"] - first_step)
        test_out = s.net.apply(params, data["x_test"])  # one forward pass: loss and accuracy
        y_test = _encode_targets(s, data["y_test"])
        metrics = {"loss": jnp.sum(totals) / s.n_train,
                   "test_loss": batch_mean_cost(cost, y_test, test_out),
                   "test_accuracy": _accuracy(s.task, test_out, y_test),
                   "train_accuracy": _train_accuracy(s, params, data)}
        if s.task == "sequence":  # the cost per scored token (a language model's usual figure)
            metrics["test_loss_per_token"] = (metrics["test_loss"] * y_test.shape[0]
                                              / jnp.maximum(jnp.sum(y_test), 1.0))
            # every split scores as many positions per sequence (all of them, or the last)
            metrics["loss_per_token"] = (metrics["loss"] * y_test.shape[0]
                                         / jnp.maximum(jnp.sum(y_test), 1.0))
        if s.grad == "checked":  # the largest hand–autodiff relative error of the epoch's checks
            metrics["check_max_rel_error"] = jnp.max(errors)
        return params, opt_state, metrics, status

    return epoch


def _batches(key, n_train, batch_size):
    """The minibatches of the epoch shuffled with ``key``: ``(indices, mask)``, each of shape
    (steps, batch_size). Gordon: subsets drawn without replacement; the last subset is what
    remains unused. It runs through the same step body as the others, padded to a whole batch
    with examples whose mask is 0 (they add nothing)."""
    steps = -(-n_train // batch_size)
    perm = jax.random.permutation(key, n_train)
    padded = jnp.concatenate([perm, perm[:steps * batch_size - n_train]])
    mask = (jnp.arange(steps * batch_size) < n_train).astype(jnp.float32)
    return padded.reshape(steps, batch_size), mask.reshape(steps, batch_size)


def _train_accuracy(s, params, data):
    """Accuracy on the training set: on the whole set on the device, or, when several processes
    each brought their rows of every batch, on those batches without the padding."""
    if "x_batches" not in data:
        return _accuracy(s.task, s.net.apply(params, data["x_train"]),
                         _encode_targets(s, data["y_train"]))
    out = jax.vmap(lambda x: s.net.apply(params, x))(data["x_batches"])
    return _accuracy(s.task, out, _encode_targets(s, data["y_batches"]), data["mask"])


def _accuracy(task, out, y, mask=None):
    """Fraction of examples classified right (``nan`` for regression, which has no classes); for
    sequences, the fraction of scored positions (one-hot rows) whose most likely token is the
    target. Only the examples whose ``mask`` is 1 count (all by default)."""
    if task == "sequence":
        scored = jnp.sum(y, -1)  # 1 at a scored position, 0 elsewhere
        if mask is not None:
            scored = scored * mask.reshape(mask.shape + (1,) * (scored.ndim - mask.ndim))
        right = (jnp.argmax(out, -1) == jnp.argmax(y, -1)) * scored
        return jnp.sum(right) / jnp.maximum(jnp.sum(scored), 1.0)
    if task == "classification":
        right = jnp.argmax(out, -1) == jnp.argmax(y, -1)
    elif task == "binary":
        right = (out[..., 0] > 0) == (y[..., 0] > 0)
    else:
        return jnp.full((), jnp.nan, jnp.float32)
    return jnp.mean(right) if mask is None else jnp.sum(right * mask) / jnp.sum(mask)


def _compile(fn):
    """Jit the epoch (tests wrap ``fn`` with ``chex.assert_max_traces`` here)."""
    return jax.jit(fn)


def _batch_at(setup, step, epoch_key, data_dev):
    """The batch that step ``step`` of the epoch shuffled with ``epoch_key`` used, without its
    padding (drawn by :func:`_batches`, as the compiled epoch draws it)."""
    idx, mask = (np.asarray(a[step]) for a in _batches(np.asarray(epoch_key), setup.n_train,
                                                          setup.batch_size))
    idx = idx[mask > 0]
    return data_dev["x_train"][idx], _encode_targets(setup, data_dev["y_train"][idx])
