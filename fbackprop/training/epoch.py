"""One epoch of training as one compiled function, and the cache of compiled epochs.

The function shuffles with the key it is given (:func:`.batches.batch_order`), runs a
``lax.scan`` over the minibatches (Gordon: subsets drawn without replacement; the last subset is
whatever remains unused, padded to a whole batch with masked examples so that every step runs the
one step body), then evaluates on the training and test sets, on data placed on the device once.
Its inputs keep their shapes and dtypes from epoch to epoch, so it is traced once per run.

Gradient sources: ``"manual"`` (the hand-written rules, :func:`fbackprop.backprop`),
``"autodiff"`` (``jax.grad`` of :func:`fbackprop.loss_fn`) and ``"checked"`` (manual, compared
with ``jax.grad`` every ``check_every`` steps by :func:`fbackprop.gradcheck.max_relative_error`).
Every gradient is of the batch mean of the per-example cost. A non-finite value or a divergence
freezes the parameters from that step on and is reported in the epoch's status.

Precision (:class:`.optim.Policy`): the parameters and optimizer state stay float32; under
``"bf16"``/``"fp16"`` each step casts the parameters and the inputs to the compute dtype, takes
the gradient there and casts it back to float32 for the update; the metrics are computed by the
network in the compute dtype too. A ``checked`` gradient in low precision is judged by the error
budget (:func:`fbackprop.gradcheck.max_budget_ratio`): the hand-written gradient and
``jax.grad``'s, both in the low precision, against ``jax.grad`` in float32 at the same rounded
point. Under ``"fp16"`` the gradient is of the scaled loss S·J, divided by S in float32; a step
whose gradient overflows is skipped (:func:`.optim.dynamic_loss_scale`), not stopped.

The cache (:func:`compiled_epoch`): one jitted epoch per :class:`EpochSetup` and shardings, so a
second ``fb.train`` with the same settings skips tracing and compiling. Its key holds values
(names, sizes, the optimizer's name and rate) and the network object itself: a network is equal
to another only when it is the same object, because its layers are functions compared by
identity. A registry model is built once per recipe (:func:`.registry.build_model`), so it hits
the cache; a network the user builds twice (``fb.mlp(...)`` called twice) is two sets of new
functions and compiles twice, as ``jax.jit`` would. :func:`clear_cache` empties it.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ..costs import get_cost
from ..gradcheck import max_budget_ratio, max_relative_error
from ..loss import backprop, batch_mean_cost, loss_fn
from ..network import Network
from .batches import batch_order
from .optim import get_policy, loss_scale, make_optimizer

__all__ = ["EpochSetup", "epoch_function", "compile_epoch", "compiled_epoch", "clear_cache",
           "gradient_source", "leaf_names", "encode_targets", "accuracy"]


class EpochSetup(NamedTuple):
    """The static settings an epoch is compiled for: the key of the compiled-epoch cache.

    Attributes:
      net: the :class:`~fbackprop.Network` trained.
      cost: the :class:`~fbackprop.Cost` (or its name).
      optimizer: the optimizer's name (see :func:`.optim.make_optimizer`).
      lr: its learning rate η.
      weight_decay: ``"adamw"``'s λ, else ``None``.
      n_train: the number of training examples.
      batch_size: examples per step.
      grad: the gradient source, ``"manual" | "autodiff" | "checked"``.
      check_every: steps between comparisons with ``jax.grad`` (``"checked"``).
      tolerance: the largest relative error a checked gradient may have.
      task: the data set's task.
      n_classes: the vocabulary size of a ``"sequence"`` task (its targets are token ids).
      precision: the :class:`.optim.Policy`'s name, ``"fp32" | "bf16" | "fp16"``.
      recompute: the hand-written backward recomputes what its rules derive from each layer's
        input (:func:`fbackprop.backprop`'s ``recompute``).
    """

    net: Network
    cost: Any
    optimizer: str
    lr: float
    weight_decay: Any
    n_train: int
    batch_size: int
    grad: str
    check_every: int
    tolerance: float
    task: str
    n_classes: int = 0
    precision: str = "fp32"
    recompute: bool = False

    def make_optimizer(self):
        """The optax optimizer these settings name (a new, equal object each call).

        Returns:
          An ``optax.GradientTransformation``.
        """
        return make_optimizer(self.optimizer, self.lr, self.weight_decay, self.precision)


def encode_targets(s: EpochSetup, y):
    """The targets the cost reads: for a ``"sequence"`` task the token ids (batch, T) one-hot
    encoded, an unscored position (id −1) as a zero row; other tasks' targets as they are."""
    if s.task != "sequence":
        return y
    return jax.nn.one_hot(y, s.n_classes, dtype=jnp.float32)  # id −1 → a row of zeros


def gradient_source(net, cost, grad, recompute: bool = False):
    """(params, x, y, mask, scale=None) → (loss, ∂J/∂params) from the chosen source; J is the
    mean over the unmasked examples of the batch. With a loss scale S the gradient is of S·J
    (the loss returned stays J); ``recompute`` as :func:`fbackprop.backprop`'s."""
    if grad == "autodiff":
        loss = loss_fn(net, cost)

        def auto(params, x, y, mask, scale=None):
            if scale is None:
                return jax.value_and_grad(loss)(params, x, y, mask)
            scaled, grads = jax.value_and_grad(lambda p: loss(p, x, y, mask) * scale)(params)
            return scaled / scale, grads

        return auto
    run = backprop(net, cost, input_grad=False, recompute=recompute)

    def manual(params, x, y, mask, scale=None):
        r = run(params, x, y, mask, scale)
        return r.loss, r.grads

    return manual


def leaf_names(params) -> list:
    """Names of the entries of the epoch status's ``finite`` vector, in order: the loss, each
    gradient leaf, each updated parameter leaf."""
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return (["loss"] + [f"gradient{p}" for p in paths]
            + [f"params{p} after the update" for p in paths])


def _all_finite(tree):
    """One bool per leaf of ``tree``: all its values finite."""
    return jnp.stack([jnp.all(jnp.isfinite(t)) for t in jax.tree.leaves(tree)])


def epoch_function(s: EpochSetup, batch_sharding=None, replicated=None, sharded=None):
    """The (un-jitted) epoch: ``epoch(params, opt_state, key, epoch_index, data)`` →
    ``(params, opt_state, metrics, status)``. ``status`` records the first step that produced a
    non-finite value or a diverging gradient; from that step on, parameters stay frozen.

    ``sharded`` (a :class:`.sharding.ParamSharding`, or ``None``: replicated parameters) keeps
    the parameters and optimizer state split over the devices: each step gathers the parameters
    for the forward and backward passes and scatters the gradient back to the slices."""
    value_and_grad = gradient_source(s.net, s.cost, s.grad, s.recompute)
    optimizer = s.make_optimizer()
    policy = get_policy(s.precision)
    check_error = functools.partial(_check_error, s, policy)
    steps_per_epoch = -(-s.n_train // s.batch_size)

    def epoch(params, opt_state, key, epoch_index, data):
        def step(carry, batch):
            params, opt_state, status, global_step = carry
            x, y, mask = _step_batch(data, batch, replicated)
            x = policy.cast_to_compute(_constrain(x, batch_sharding))
            y = _constrain(encode_targets(s, y), batch_sharding)
            whole = params if sharded is None else _constrain(params, replicated)  # all-gather
            low_params = policy.cast_to_compute(whole)  # the master weights stay float32
            scale = loss_scale(opt_state)  # fp16 only, else None
            loss, grads = _float32_grads(value_and_grad, policy, low_params, x, y, mask, scale)
            if sharded is not None:  # the sum over devices, each device keeping its slice
                grads = sharded.constrain(grads)
            updates, new_opt_state = optimizer.update(grads, opt_state, params)
            new_params, new_opt_state = _placed(sharded, replicated,
                                                optax.apply_updates(params, updates),
                                                new_opt_state)
            finite = jnp.concatenate([jnp.isfinite(loss)[None], _all_finite(grads),
                                      _all_finite(new_params)])
            error = (jax.lax.cond(global_step % s.check_every == 0, check_error,
                                  lambda *_: jnp.zeros((), jnp.float32), low_params, x, y, mask)
                     if s.grad == "checked" else jnp.zeros((), jnp.float32))
            n_grads = len(jax.tree.leaves(grads))
            # under loss scaling an overflowing gradient is a skipped step, not a failure
            counted = finite if scale is None else finite.at[1:1 + n_grads].set(True)
            bad = ~jnp.all(counted) | (error > s.tolerance)
            go = ~status["stopped"] & ~bad  # after a failure, parameters stay frozen
            first = ~status["stopped"] & bad
            now = {"stopped": jnp.bool_(True), "step": global_step, "finite": finite,
                   "error": error.astype(jnp.float32)}
            status = jax.tree.map(lambda a, b: jnp.where(first, a, b), now, status)
            params, opt_state = jax.tree.map(lambda a, b: jnp.where(go, a, b),
                                             (new_params, new_opt_state), (params, opt_state))
            return (params, opt_state, status, global_step + 1), (loss * jnp.sum(mask), error)

        batches = ((data["x_batches"], data["y_batches"], data["mask"]) if "x_batches" in data
                   else batch_order(key, s.n_train, s.batch_size))
        first_step = epoch_index * steps_per_epoch
        carry = (params, opt_state, _initial_status(first_step, params), first_step)
        carry, (totals, errors) = jax.lax.scan(step, carry, batches)
        params, opt_state, status, _ = carry
        if sharded is not None:  # returned split as they came in, small leaves replicated
            params, opt_state = sharded.constrain((params, opt_state))
        status = dict(status, step=status["step"] - first_step)
        return params, opt_state, _metrics(s, params, data, totals, errors, opt_state), status

    return epoch


def _step_batch(data, batch, replicated):
    """(x, y, mask) of one step: the batch itself, brought by the caller (several processes,
    :mod:`.batches`), or indices into the training set, which sits whole on the device."""
    if len(batch) == 3:
        x, y, mask = batch
        return x, y, _constrain(mask, replicated)  # counted on every device, no collective
    idx, mask = batch
    return data["x_train"][idx], data["y_train"][idx], mask


def _placed(sharded, replicated, params, opt_state):
    """The updated state placed as the epoch holds it: replicated parameters, or parameters and
    optimizer state split over the devices (:mod:`.sharding`)."""
    if sharded is None:
        return _constrain(params, replicated), opt_state
    return sharded.constrain((params, opt_state))


def _initial_status(first_step, params) -> dict:
    """The status before the epoch's first step: not stopped, everything finite, no error."""
    return {"stopped": jnp.bool_(False), "step": first_step,
            "finite": jnp.ones((1 + 2 * len(jax.tree.leaves(params)),), bool),
            "error": jnp.zeros((), jnp.float32)}


def _float32_grads(value_and_grad, policy, low_params, x, y, mask, scale):
    """(loss, gradient) in the compute precision, the gradient returned in the parameters'
    float32 and, under loss scaling, divided by the scale there."""
    loss, grads = value_and_grad(low_params, x, y, mask, scale)
    grads = policy.cast_to_param(grads)
    if scale is not None:
        grads = jax.tree.map(lambda g: g / scale, grads)
    return loss, grads


def _check_error(s, policy, params, x, y, mask):
    """jax.grad against the hand-written gradient, both at the highest matmul precision: their
    relative error in float32; in low precision both computed in it and judged by the error
    budget against float32 jax.grad at the same rounded point (the ratio, ≤ 1 passes)."""
    manual = backprop(s.net, s.cost, input_grad=False)
    reference = jax.grad(loss_fn(s.net, s.cost))
    with jax.default_matmul_precision("highest"):
        if not policy.low:
            return max_relative_error(manual(params, x, y, mask).grads,
                                      reference(params, x, y, mask))
        widened = policy.cast_to_param((params, x))  # the rounded point, exactly in float32
        return max_budget_ratio(manual(params, x, y, mask).grads, reference(params, x, y, mask),
                                reference(*widened, y, mask))


def _constrain(tree, sharding):
    """``tree`` constrained to ``sharding`` (as it is, on one device)."""
    return tree if sharding is None else jax.lax.with_sharding_constraint(tree, sharding)


def _metrics(s: EpochSetup, params, data, totals, errors, opt_state) -> dict:
    """The epoch's metrics: the mean training cost over its steps, the test cost and the
    accuracies at the final parameters (and, by task and source, the per-token cost and the
    largest checked error; under fp16 the loss scale and the skipped steps)."""
    test_out = _apply(s, params, data["x_test"])  # one forward pass: loss and accuracy
    y_test = encode_targets(s, data["y_test"])
    metrics = {"loss": jnp.sum(totals) / s.n_train,
               "test_loss": batch_mean_cost(get_cost(s.cost), y_test, test_out),
               "test_accuracy": accuracy(s.task, test_out, y_test),
               "train_accuracy": _train_accuracy(s, params, data)}
    if s.task == "sequence":  # the cost per scored token (a language model's usual figure)
        metrics["test_loss_per_token"] = (metrics["test_loss"] * y_test.shape[0]
                                          / jnp.maximum(jnp.sum(y_test), 1.0))
        # every split scores as many positions per sequence (all of them, or the last)
        metrics["loss_per_token"] = (metrics["loss"] * y_test.shape[0]
                                     / jnp.maximum(jnp.sum(y_test), 1.0))
    if s.grad == "checked":  # the largest hand–autodiff relative error of the epoch's checks
        low = get_policy(s.precision).low  # (in low precision: the largest budget ratio)
        metrics["check_max_budget_ratio" if low else "check_max_rel_error"] = jnp.max(errors)
    if loss_scale(opt_state) is not None:  # fp16: the scale reached, the steps skipped
        metrics["loss_scale"] = opt_state.scale
        metrics["skipped_steps"] = opt_state.inner.total_notfinite
    return metrics


def _apply(s, params, x):
    """The network's output in the run's compute precision (float32 and float64 unchanged)."""
    policy = get_policy(s.precision)
    return s.net.apply(policy.cast_to_compute(params), policy.cast_to_compute(x))


def _train_accuracy(s, params, data):
    """Accuracy on the training set: on the whole set on the device, or, when several processes
    each brought their rows of every batch, on those batches without the padding."""
    if "x_batches" not in data:
        return accuracy(s.task, _apply(s, params, data["x_train"]),
                         encode_targets(s, data["y_train"]))
    out = jax.vmap(lambda x: _apply(s, params, x))(data["x_batches"])
    return accuracy(s.task, out, encode_targets(s, data["y_batches"]), data["mask"])


def accuracy(task, out, y, mask=None):
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


def compile_epoch(fn):
    """Jit the epoch (tests wrap ``fn`` with ``chex.assert_max_traces`` here).

    Args:
      fn: the epoch from :func:`epoch_function`.

    Returns:
      ``jax.jit(fn)``.
    """
    return jax.jit(fn)


def compiled_epoch(setup: EpochSetup, shardings=(None, None)):
    """The jitted epoch for ``setup``, built once per process (see the module docstring).

    Args:
      setup: the :class:`EpochSetup`.
      shardings: ``(batch_sharding, replicated)`` from :func:`.batches.placement`, and
        optionally the :class:`.sharding.ParamSharding` of the parameters.

    Returns:
      ``epoch(params, opt_state, key, epoch_index, data)`` → ``(params, opt_state, metrics,
      status)``, jitted.
    """
    return _compiled(setup, shardings, compile_epoch)  # read at call time: tests replace it


@functools.lru_cache(maxsize=16)
def _compiled(setup, shardings, compile_fn):
    return compile_fn(epoch_function(setup, *shardings))


def clear_cache():
    """Forget every compiled epoch (the next run traces and compiles again)."""
    _compiled.cache_clear()
