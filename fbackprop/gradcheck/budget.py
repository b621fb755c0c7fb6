"""Low precision judged by its own error budget.

In bfloat16 or float16 (or float32 under a lower matmul precision) a hand-written rule and
autodiff both round, so a fixed tolerance either fails right rules or passes wrong ones. The
check's program therefore runs twice at the same point: in the low precision (the rule's value
h and autodiff's value r) and in float64 (autodiff's value r₆₄, the reference; the point's
values are the low-precision ones, widened exactly). Each row then holds

    rule error e_h = max|h − r₆₄| / max|r₆₄|,    autodiff error e_r = max|r − r₆₄| / max|r₆₄|

and passes when e_h ≤ budget · e_r + floor (budget 2, as flash-attention's tests judge their
kernels; the floor, 1e-4 by default, covers a computation that autodiff happens to do exactly).

Both errors come from the rows the check builds anyway: :func:`views` gives two copies of the
program's outputs, one where every reference is r₆₄ (its rows measure e_h) and one where every
hand-written value is replaced by its autodiff twin r (its rows measure e_r); :func:`judge`
pairs the rows. Two kinds of row are left out: fused–Euler (a rule against other rules, with no
autodiff twin: the fused rule and the Euler derivatives are each judged against r₆₄ instead), and
the JVP row (one inner product, whose autodiff error can vanish by cancellation, so that a ratio
says nothing; the per-leaf rows already hold the rule's Jᵀu against r₆₄).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .report import FAIL, FUSED_EULER, HAND_JVP, PASS

__all__ = ["views", "judge", "widen"]

# the keys of the program's outputs that hold a hand-written value, and their autodiff twins
TWINS = {"hand_p": "ref_p", "hand_a": "ref_a", "time_hand": "time_ref", "hand": "auto",
         "vjt": "jv"}
REFERENCES = frozenset(TWINS.values()) | {"scale"}


def widen(tree):
    """Floating-point leaves of ``tree`` as float64 (exactly: every low-precision value is a
    float64 value), other leaves unchanged."""
    return jax.tree.map(lambda t: jnp.asarray(t, jnp.float64)
                        if jnp.issubdtype(jnp.result_type(t), jnp.floating) else t, tree)


def views(low, reference):
    """Two copies of the low-precision outputs ``low``: ``(rule, auto)``.

    Args:
      low: the program's outputs in the low precision.
      reference: the same program's outputs in float64 at the same point.

    Returns:
      ``rule``: the references replaced by float64 autodiff (rows measure the rule's error);
      ``auto``: the references likewise, and every hand-written value replaced by its autodiff
      twin in the low precision (rows measure autodiff's error).
    """
    if isinstance(low, list):
        pairs = [views(lo, hi) for lo, hi in zip(low, reference)]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    if not isinstance(low, dict):
        return low, low
    rule, auto = {}, {}
    for key, value in low.items():
        if key in REFERENCES:
            rule[key] = auto[key] = reference[key]
        elif key in TWINS:
            rule[key], auto[key] = value, low[TWINS[key]]
        elif key == "fused":
            rule[key], auto[key] = value, (low["ref_a"], low["ref_p"])
        elif isinstance(value, (dict, list)):
            rule[key], auto[key] = views(value, reference[key])
        else:
            rule[key] = auto[key] = value
    return rule, auto


def judge(rule_rows, auto_rows, budget: float, floor: float):
    """Pair the rows of the two :func:`views`: each row's error is the rule's, its bound
    ``budget`` × autodiff's error + ``floor``.

    Args:
      rule_rows, auto_rows: the rows built from the ``rule`` and ``auto`` views, in one order.
      budget, floor: the error budget.

    Returns:
      The judged rows (fused–Euler and JVP rows left out), each with ``budget`` set to
      ``{"rule_error", "autodiff_error", "ratio", "budget", "floor"}`` and a note.
    """
    rows = []
    for r, a in zip(rule_rows, auto_rows, strict=True):
        if r.pair in (FUSED_EULER, HAND_JVP):
            continue
        bound = budget * a.max_rel + floor
        ratio = r.max_rel / a.max_rel if a.max_rel > 0 else (0.0 if r.max_rel == 0 else math.inf)
        record = {"rule_error": r.max_rel, "autodiff_error": a.max_rel, "ratio": ratio,
                  "budget": budget, "floor": floor}
        # a rule that raised or returned the wrong shape (no value: NaN) stays failed
        ok, note = math.isfinite(r.max_rel) and r.max_rel <= bound, r.note
        if r.steps is not None:  # a time row: every step within its own budget
            ok, note = _steps_within(r, a, budget, floor)
        note = "; ".join(filter(None, (note, f"rule error {r.max_rel:.1e}, autodiff error "
                                             f"{a.max_rel:.1e} (both against float64 "
                                             f"autodiff), ratio {ratio:.2f}")))
        rows.append(r._replace(tolerance=bound, status=PASS if ok else FAIL, budget=record,
                               note=note))
    return rows


def _steps_within(r, a, budget: float, floor: float):
    """``(ok, note)`` of a time row: each step τ's rule error against budget × autodiff's error
    at τ + floor."""
    if not math.isfinite(r.max_rel):
        return False, r.note
    bad = [t for t, (e_h, e_r) in enumerate(zip(r.steps, a.steps))
           if not e_h <= budget * e_r + floor]
    note = f"worst τ = {r.index[1]} of {len(r.steps)}" + (
        f"; {len(bad)} step(s) over budget: τ ∈ {bad}" if bad else "")
    return not bad, note
