"""The one skeleton every check runs: draw, compile, run (moving away from kinks), judge, report.

An entry point (``check``, ``check_grad``, ``check_vjp``, ``check_layer``) validates its subject,
then hands :func:`run_program` a ``prepare(rng)`` that casts its inputs and draws its random
cotangents; the skeleton adds the finite-difference draws, compiles the program of
:mod:`.program` once per shapes, runs it (resampling the input away from kinks where the entry
point asks), and sets the tolerances. The entry point turns the outputs into rows
(:mod:`.rows`) and a report (:func:`measured`, :func:`kink_record`); :func:`finish` raises on
failure when asked.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .budget import judge, views, widen
from .fd import fd_inputs, fd_summary
from .kinks import Resampled, resample_away_from_kinks
from .numerics import precision_for
from .options import CheckOptions, Tolerances
from .program import program, spec
from .report import GradientReport

__all__ = ["Prepared", "Outcome", "run_program", "judged_rows", "kink_record", "measured",
           "finish"]


class Prepared(NamedTuple):
    """What an entry point hands :func:`run_program`.

    make_core:      the program's factory (:mod:`.program`), called with ``(key, notes)``.
    static:         what the program closes over (hashable: the network and cost, the function…).
    inputs:         the program's array arguments before the finite-difference draws.
    differentiated: the pytree finite differences perturb.
    move:           the index in ``inputs`` of the batch to move away from kinks (``None``: the
                    point stays where it is).
    kink_distance:  with ``move=None``, the point's distance to a kink, when known.
    """

    make_core: Callable
    static: object
    inputs: tuple
    differentiated: object
    move: int | None = None
    kink_distance: float | None = None


class Outcome(NamedTuple):
    """What :func:`run_program` returns: the program's outputs on the host, the notes its
    tracing left, the FD element plan, the tolerances, the kink search, and (low precision)
    the same program's outputs in float64 at the same point."""

    out: dict
    notes: dict
    plan: tuple | None
    tols: Tolerances
    found: Resampled
    reference: dict | None = None


def _run(fn, prep: Prepared, draws, opts: CheckOptions, rng) -> Resampled:
    """Run the compiled ``fn`` at the prepared point, moving ``inputs[move]`` away from kinks."""
    if prep.move is None:
        distance = np.full((1, 1), np.inf if prep.kink_distance is None else prep.kink_distance)
        return Resampled(jax.device_get(fn(*prep.inputs, *draws)), None, distance, 0, ())

    def at(x):
        inputs = prep.inputs[:prep.move] + (x,) + prep.inputs[prep.move + 1:]
        return fn(*inputs, *draws)

    return resample_away_from_kinks(at, prep.inputs[prep.move], kink_tol=opts.kink_tol,
                                    resample=opts.resample, rng=rng)


def run_program(opts: CheckOptions, prepare: Callable, *, jvp: bool = False) -> Outcome:
    """Seed, prepare, compile and run one check.

    Args:
      opts: the check's :class:`~.options.CheckOptions`.
      prepare: ``prepare(rng)`` → :class:`Prepared`, called under the check's precision (float64
        enabled for float64 checks) with the check's seeded generator, before the FD draws.
      jvp: whether the program adds the forward-mode row.

    Returns:
      The :class:`Outcome`.
    """
    rng = np.random.default_rng(opts.seed)
    with precision_for(opts.dtype, opts.matmul_precision):
        prep = prepare(rng)
        plan, V, rand_idx = fd_inputs(opts.fd, prep.differentiated, rng)
        draws = (jnp.asarray(V, opts.dtype), jnp.asarray(rand_idx))
        fn, notes = program(prep.make_core, (prep.static, opts.fd, plan, bool(jvp)),
                            spec(prep.inputs + draws), opts.jit)
        found = _run(fn, prep, draws, opts, rng)
    reference = _in_float64(prep, found, opts, jvp) if opts.low_precision else None
    return Outcome(found.out, notes, plan, opts.tolerances(found.out["loss"]), found, reference)


def _in_float64(prep: Prepared, found: Resampled, opts: CheckOptions, jvp: bool) -> dict:
    """The same program in float64 at the point the low-precision run ended at (its values
    widened exactly): the reference of the error budget (:mod:`.budget`)."""
    inputs = prep.inputs
    if prep.move is not None:
        inputs = inputs[:prep.move] + (found.x,) + inputs[prep.move + 1:]
    with precision_for("float64"):
        inputs = widen(inputs)
        draws = (jnp.zeros((0, 1), jnp.float64), jnp.zeros(0, jnp.int32))
        fn, _ = program(prep.make_core, (prep.static, None, None, bool(jvp)),
                        spec(inputs + draws), opts.jit)
        return jax.device_get(fn(*inputs, *draws))


def judged_rows(opts: CheckOptions, outcome: Outcome, rows_of: Callable) -> list:
    """The rows of a check: ``rows_of(outputs)`` against the tolerances, or, in low precision,
    built from both :func:`~.budget.views` and judged by the error budget.

    Args:
      opts: the check's options.
      outcome: from :func:`run_program`.
      rows_of: the entry point's rows as a function of the program's outputs.

    Returns:
      A list of :class:`~.report.Row`.
    """
    if outcome.reference is None:
        return rows_of(outcome.out)
    rule, auto = views(outcome.out, outcome.reference)
    return judge(rows_of(rule), rows_of(auto), opts.budget, opts.budget_floor)


def kink_record(opts: CheckOptions, found: Resampled, keys) -> tuple[list, dict]:
    """``(at_kink, record)``: the layers (named by ``keys``) still within ``kink_tol`` of a kink,
    and the report's record of distances and resampling."""
    nearest = [float(np.min(d, initial=np.inf)) for d in found.distance]
    at_kink = [k for k, d in zip(keys, nearest) if d < opts.kink_tol]
    return at_kink, {"kink_tol": opts.kink_tol, "distance": nearest, "resampled": found.rounds,
                     "perturbed_examples": list(found.perturbed), "at_kink": at_kink}


def measured(opts: CheckOptions, outcome: Outcome) -> dict:
    """The report fields every check shares: dtype, tolerance, finite differences, loss and
    (low precision) the error budget."""
    budget = None if outcome.reference is None else {
        "budget": opts.budget, "floor": opts.budget_floor,
        "matmul_precision": opts.matmul_precision, "reference": "autodiff in float64"}
    return {"dtype": opts.dtype, "tolerance": outcome.tols.tol, "loss": float(outcome.out["loss"]),
            "fd": fd_summary(opts.fd, (outcome.tols.fd_rtol, outcome.tols.fd_tol)),
            "budget": budget}


def finish(opts: CheckOptions, report: GradientReport) -> GradientReport:
    """``report``, or :class:`~fbackprop.GradientCheckError` when it fails and
    ``opts.raise_on_failure`` is set."""
    return report.raise_if_failed() if opts.raise_on_failure else report
