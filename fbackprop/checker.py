"""Gradient checking that names the layer whose hand-written rule is wrong.

``check(net, cost, params, x, y)`` runs three comparisons in one compiled program:

1. **Per layer, at the autodiff delta.** The incoming deltas are computed by autodiff alone:
   ``d_L`` = ``jax.vjp`` of the batch-mean cost at ``a_L``, then ``d_{l−1}`` = ``jax.vjp`` of
   layer l's ``apply`` applied to ``d_l``, in reverse. Each layer's ``D_param(p, a, d)`` and
   ``D_input(p, a, d)`` are compared with ``jax.vjp(apply, p, a)(d)`` at that same ``d``: a wrong
   rule therefore fails in its own layer only, never in the layers below it. The cost's
   ``D(C y) a_L / batch`` is compared the same way, and recurrent layers that expose
   ``time_deltas``/``time_deltas_ref`` get one row per delta name with the worst time step.
2. **Whole gradient.** ``manual_grad`` (the full backward recurrence on the hand-written rules)
   against ``jax.grad(loss_fn(net, cost))``, per parameter leaf.
3. **Finite differences** (float64 only, ``finite_differences=True``): central differences
   ``(J(p + εu) − J(p − εu)) / 2ε`` for ``directions`` random unit directions u over all the
   parameters (against ⟨g, u⟩) and for single elements of every leaf (u = a basis vector): the
   elements where hand-written and autodiff differ most, plus random ones. All of them are one
   ``vmap`` inside the same compiled program. With three answers, the report says which pair
   disagrees: a wrong hand-written rule (autodiff and FD agree), FD noise (hand-written and
   autodiff agree), or autodiff itself (hand-written and FD agree).

Error measure and tolerance (the same formula everywhere, with no scaling by array size): for a
leaf with hand-written value h and reference r,

    max abs = max_i |h_i − r_i|,   max rel = max abs / max_i |r_i|   (= max abs when r ≡ 0),

and the row passes when ``max rel ≤ tol``: ``tol`` = 1e-10 in float64 and 1e-4 in float32, the
latter computed under ``jax.default_matmul_precision("highest")`` (TF32 matmuls on GPUs would
otherwise cause false failures). Finite-difference rows compare FD with h (or r) the same way,
with the scale max_i |r_i| for element rows and ‖r‖₂ for direction rows (|⟨r, u⟩| ≤ ‖r‖₂ for
a unit u), against the FD tolerance ``fd_tol`` + ``FD_NOISE`` · max(1, |J|) / ε relative to that
scale: the second term is the rounding error of the two loss values divided by 2ε.

Kinks: a layer's ``kink_distance(p, a)`` (for dense: min |z| over ReLU pre-activations) is
computed per example. Examples closer than ``kink_tol`` to a kink are perturbed (x += N(0, σ_k²)
noise on those examples only, σ_k = 0.1·3^(k−1) in round k, so that a dead layer can come alive)
and the check is repeated, up to ``resample`` times; if a layer stays near a kink (a kink in the
parameters, say, which moving x cannot leave), its mismatches
are reported with status ``"kink"`` — at a kink the one-sided derivative of a rule (ReLU'(0) = 0,
as jax.nn.relu) and finite differences (which see the average slope) differ honestly, as may a
user's rule and autodiff — and never as a failure.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .costs import get_cost
from .network import Network, _per_example_mean, astype, backward, forward, loss_fn
from .validate import as_float_input, check_params, check_target
from .verify import TOLERANCE, _dtype_name, error_stats, precision_for

__all__ = ["check", "check_grad", "GradientReport", "GradientCheckError", "Row", "FD_EPS",
           "FD_TOLERANCE", "FD_NOISE", "KINK_TOL", "RESAMPLE_SCALE"]

FD_EPS = 1e-5           # central-difference step ε (length of the step in parameter space)
FD_TOLERANCE = 1e-6     # FD rows pass when |FD − g·u| ≤ (FD_TOLERANCE + FD_NOISE·max(1,|J|)/ε)·scale
FD_NOISE = 1e-13        # ≈ 450 float64 roundings of the loss, divided by the step
KINK_TOL = 1e-3         # sample points closer than this to a kink are resampled
RESAMPLE_SCALE = 0.1    # std of the noise added to x in the first resampling round (×3 per round)

HAND_AUTO, HAND_FD, AUTO_FD = "hand–autodiff", "hand–FD", "autodiff–FD"
PASS, FAIL, KINK, FD_NOISE_STATUS = "pass", "fail", "kink", "fd-noise"
AGREE = "all three agree"


class GradientCheckError(ValueError):
    """Raised by ``check``/``check_grad`` with ``raise_on_failure=True``; ``.report`` holds the
    full :class:`GradientReport`."""

    def __init__(self, message: str, report: "GradientReport"):
        super().__init__(message)
        self.report = report


class Row(NamedTuple):
    """One comparison in a :class:`GradientReport`.

    layer:     0-based index into the serial stack, or ``None`` (cost, whole gradient).
    where:     what is compared, e.g. ``"layer 1: dense(4→3, tanh)"``, ``"cost mse"``.
    rule:      ``"D_param"``, ``"D_input"``, ``"time_deltas"``, ``"D(C y)"``, ``"∂J/∂p"`` …
    leaf:      the parameter leaf's pytree path (``jax.tree_util.keystr``), or a name.
    pair:      ``"hand–autodiff"``, ``"hand–FD"`` or ``"autodiff–FD"``.
    max_abs:   max_i |h_i − r_i| (``nan`` when the value could not be computed).
    max_rel:   max_abs / scale (see the module docstring).
    index:     index of the worst element (for time rows: (batch, τ, …)).
    tolerance: the bound max_rel was held to.
    status:    ``"pass"``, ``"fail"``, ``"kink"`` (a mismatch at a kink, not a failure) or
               ``"fd-noise"`` (FD disagrees with both hand-written and autodiff, which agree).
    note:      a remark: why a value is missing, which pair disagrees, the worst time step.
    steps:     per-time-step relative errors (time rows only).
    """

    layer: Optional[int]
    where: str
    rule: str
    leaf: str
    pair: str
    max_abs: float
    max_rel: float
    index: tuple
    tolerance: float
    status: str
    note: str = ""
    steps: Optional[tuple] = None


def _json_float(v):
    return v if v is None or math.isfinite(v) else None


@dataclasses.dataclass(frozen=True)
class GradientReport:
    """The result of :func:`check` or :func:`check_grad`.

    ``ok`` is true when no row has status ``"fail"``; ``failing_layers`` lists the (sorted,
    0-based) layers of the serial stack with a failing row; ``print(report)`` renders the table;
    ``to_json()`` gives the same content as JSON (non-finite numbers as ``null``).
    """

    subject: str
    cost: Optional[str]
    dtype: str
    tolerance: float
    rows: tuple
    layer_names: tuple = ()
    fd: Optional[dict] = None
    kinks: Optional[dict] = None
    loss: float = float("nan")

    @property
    def failures(self) -> tuple:
        """The rows with status ``"fail"``."""
        return tuple(r for r in self.rows if r.status == FAIL)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failing_layers(self) -> tuple:
        return tuple(sorted({r.layer for r in self.failures if r.layer is not None}))

    @property
    def at_kink(self) -> tuple:
        """Layers that stayed within ``kink_tol`` of a kink after resampling."""
        return tuple(self.kinks["at_kink"]) if self.kinks else ()

    def first_failure(self) -> Optional[Row]:
        """The first failing row of the lowest failing layer (else the first failing row)."""
        fails = self.failures
        if not fails:
            return None
        layers = self.failing_layers
        if layers:
            return next(r for r in fails if r.layer == layers[0])
        return fails[0]

    def failure_message(self) -> str:
        """One sentence naming the first failing layer, rule, leaf and index ('' when ok)."""
        r = self.first_failure()
        if r is None:
            return ""
        value = (f"worst element {r.index}: max rel error {r.max_rel:.2e} > tolerance "
                 f"{r.tolerance:.0e}" if math.isfinite(r.max_rel) else "no comparable value")
        extra = [r.note] if r.note else []
        if len(self.failing_layers) > 1:
            extra.append(f"failing layers: {list(self.failing_layers)}")
        return (f"gradient check of {self.subject} failed: {r.where}, {r.rule} {r.leaf} "
                f"({r.pair}), {value}"
                + "".join(f"; {e}" for e in extra) + ".")

    def raise_if_failed(self) -> "GradientReport":
        """Raise :class:`GradientCheckError` naming the first failure; return self when ok."""
        if not self.ok:
            raise GradientCheckError(self.failure_message(), self)
        return self

    def to_dict(self) -> dict:
        rows = []
        for r in self.rows:
            d = r._asdict()
            for k in ("max_abs", "max_rel", "tolerance"):
                d[k] = _json_float(d[k])
            d["index"] = list(r.index)
            d["steps"] = None if r.steps is None else [_json_float(s) for s in r.steps]
            rows.append(d)
        kinks = None
        if self.kinks is not None:
            kinks = dict(self.kinks)
            kinks["distance"] = [_json_float(v) for v in kinks["distance"]]
        return {"subject": self.subject, "layers": list(self.layer_names), "cost": self.cost,
                "dtype": self.dtype,
                "tolerance": self.tolerance, "ok": self.ok,
                "failing_layers": list(self.failing_layers), "loss": _json_float(self.loss),
                "finite_differences": self.fd, "kinks": kinks, "rows": rows}

    def to_json(self, **kwargs) -> str:
        """The report as a JSON string (``kwargs`` go to ``json.dumps``)."""
        return json.dumps(self.to_dict(), **kwargs)

    def __str__(self) -> str:
        return _render(self)


# --------------------------------------------------------------------------------------------
# Rendering

def _fmt(v: float) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.1e}"


def _render(rep: GradientReport) -> str:
    head = [f"gradient check: {rep.subject}" + (f" · cost {rep.cost}" if rep.cost else "")
            + f" · {rep.dtype} · J = {_fmt(rep.loss)}",
            f"tolerance {rep.tolerance:.0e}: pass when max rel = max|h − r| / max|r| ≤ tol "
            f"({'float64' if rep.dtype == 'float64' else 'float32, matmul precision highest'})"]
    if rep.fd:
        head.append(f"finite differences: central, ε = {rep.fd['eps']:.0e}, "
                    f"{rep.fd['directions']} random unit directions + ≤ {rep.fd['elements']} "
                    f"elements per leaf; tolerance {rep.fd['tolerance']:.1e} "
                    f"(= {rep.fd['rtol']:.0e} + {FD_NOISE:.0e}·max(1,|J|)/ε)")
    if rep.kinks:
        k = rep.kinks
        dist = ", ".join(_fmt(v) if v is not None and math.isfinite(v) else "none"
                         for v in k["distance"])
        line = f"kinks: distance per layer [{dist}], kink_tol {k['kink_tol']:.0e}"
        if k["resampled"]:
            line += (f"; x resampled {k['resampled']}× at examples {k['perturbed_examples']} "
                     f"to move away from kinks")
        if k["at_kink"]:
            line += f"; layers {k['at_kink']} remain AT A KINK (mismatches there are not failures)"
        head.append(line)
    cols = ("where", "rule", "leaf", "pair", "max abs", "max rel", "worst index", "tol", "status")
    table, previous = [], None
    for r in rep.rows:  # "where" is printed once per group of rows
        table.append(("" if r.where == previous else r.where, r.rule, r.leaf, r.pair,
                      _fmt(r.max_abs), _fmt(r.max_rel), str(r.index), f"{r.tolerance:.0e}",
                      r.status.upper() if r.status == FAIL else r.status))
        previous = r.where
    widths = [max(len(c), *(len(t[i]) for t in table)) if table else len(c)
              for i, c in enumerate(cols)]
    lines = head + ["", "  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()]
    shown = None
    for r, t in zip(rep.rows, table):
        shown = None if t[0] else shown  # a repeated note prints as "(same)" within a group
        lines.append("  ".join(v.ljust(w) for v, w in zip(t, widths)).rstrip())
        if r.note and r.note != AGREE:
            lines.append(" " * (widths[0] + 2) + "↳ " + (r.note if r.note != shown else "(same)"))
            shown = r.note
    if rep.fd and all(r.status == PASS for r in rep.rows if r.layer is None):
        lines.append(f"three-way: hand-written, autodiff and finite differences agree on every "
                     f"leaf and direction")
    if rep.ok:
        verdict = "ok: every comparison passed" + (
            " (some rows at a kink or FD noise, see above)" if any(
                r.status in (KINK, FD_NOISE_STATUS) for r in rep.rows) else "")
    else:
        verdict = (f"FAILED: {len(rep.failures)} row(s)"
                   + (f"; failing layers {list(rep.failing_layers)}" if rep.failing_layers else "")
                   + "\n" + rep.failure_message())
    return "\n".join(lines + ["", verdict])


# --------------------------------------------------------------------------------------------
# Pieces traced inside the compiled program

class _FD(NamedTuple):
    eps: float
    directions: int
    elements: int


def _nan_like(ref):
    return jax.tree.map(lambda r: jnp.full(jnp.shape(r), jnp.nan, jnp.result_type(r)), ref)


def _call_rule(rule, ref, *args):
    """Call a hand-written rule at trace time; return (value shaped like ``ref``, notes).

    A rule that raises, or returns the wrong structure, becomes NaNs plus a note ``{"*": why}``;
    a leaf of the wrong shape becomes NaNs plus a note under its path. The report then shows a
    failing row instead of the whole check crashing.
    """
    try:
        got = rule(*args)
    except (TypeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return _nan_like(ref), {"*": f"raised {type(err).__name__}: {first}"}
    if jax.tree.structure(got) != jax.tree.structure(ref):
        return _nan_like(ref), {"*": f"returned structure {jax.tree.structure(got)}, expected "
                                     f"{jax.tree.structure(ref)}"}
    notes, leaves = {}, []
    for (path, g), r in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(ref)):
        if tuple(jnp.shape(g)) != tuple(jnp.shape(r)):
            hint = (" (transposed?)" if len(jnp.shape(g)) == 2
                    and tuple(jnp.shape(g)) == tuple(jnp.shape(r))[::-1] else
                    " (not summed over the batch?)" if len(jnp.shape(g)) == len(jnp.shape(r)) + 1
                    and tuple(jnp.shape(g))[1:] == tuple(jnp.shape(r)) else "")
            notes[jax.tree_util.keystr(path)] = (f"returned shape {tuple(jnp.shape(g))}, expected "
                                                 f"{tuple(jnp.shape(r))}{hint}")
            leaves.append(jnp.full(jnp.shape(r), jnp.nan, jnp.result_type(r)))
        else:
            leaves.append(jnp.asarray(g, jnp.result_type(r)))
    return jax.tree.unflatten(jax.tree.structure(ref), leaves), notes


def _element_plan(sizes, elements: int):
    """Static plan of the element-wise differences: per leaf (offset, size, n_worst, n_random);
    a leaf with at most ``elements`` entries is covered whole (n_worst = size, n_random = 0)."""
    plan, offset = [], 0
    for size in sizes:
        if size <= elements:
            plan.append((offset, size, size, 0))
        else:
            n_worst = max(1, elements // 2)
            plan.append((offset, size, n_worst, elements - n_worst))
        offset += size
    return tuple(plan)


def _random_elements(plan, rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([rng.choice(size, n_random, replace=False) for _, size, _, n_random
                           in plan] + [np.zeros(0, int)]).astype(np.int32)


def _fd_block(loss_of, params, hand, auto, hand_ok: bool, V, rand_idx, plan, eps):
    """Central differences of ``loss_of`` along the rows of V and along single elements, as one
    vmapped batch; returns the FD values and ⟨hand, u⟩, ⟨auto, u⟩ for each direction u."""
    theta, unravel = ravel_pytree(params)
    h_flat, r_flat = ravel_pytree(hand)[0], ravel_pytree(auto)[0]
    picks, start = [], 0
    for offset, size, n_worst, n_random in plan:
        if n_random == 0 and n_worst == size:
            picks.append(offset + jnp.arange(size))
            continue
        seg = slice(offset, offset + size)
        # where a wrong rule would show: largest |hand − auto| (largest |auto| without hand)
        score = jnp.abs(h_flat[seg] - r_flat[seg]) if hand_ok else jnp.abs(r_flat[seg])
        score = jnp.where(jnp.isnan(score), jnp.inf, score)
        picks.append(offset + jax.lax.top_k(score, n_worst)[1])
        picks.append(offset + rand_idx[start:start + n_random])
        start += n_random
    idx = jnp.concatenate(picks).astype(jnp.int32)
    U = jnp.concatenate([V.astype(theta.dtype), jax.nn.one_hot(idx, theta.size, dtype=theta.dtype)])
    points = jnp.concatenate([theta + eps * U, theta - eps * U])
    values = jax.vmap(lambda t: loss_of(unravel(t)))(points)
    k = U.shape[0]
    return {"idx": idx, "fd": (values[:k] - values[k:]) / (2 * eps),
            "hand": U @ h_flat, "auto": U @ r_flat}


# --------------------------------------------------------------------------------------------
# Compiled programs, one per (network, cost, settings, argument shapes)

def _spec(tree):
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((tuple(jnp.shape(t)), jnp.result_type(t).name) for t in leaves)


def _unspec(spec):
    treedef, leaves = spec
    return jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in leaves])


@functools.lru_cache(maxsize=64)
def _program(make_core, key, spec, jit: bool):
    """(fn, notes): ``make_core(key, notes)`` builds the traced function; it is lowered and
    compiled once for the argument ``spec`` (``notes`` fill in while it is traced)."""
    notes: dict = {}
    core = make_core(key, notes)
    if not jit:
        return core, notes
    return jax.jit(core).lower(*_unspec(spec)).compile(), notes


def _network_core(key, notes):
    net, cost, fd, plan = key
    L = len(net.layers)

    def cost_mean(y, a):
        return _per_example_mean(cost, y, a)

    def loss_of(params, x, y):
        return cost_mean(y, forward(net, params, x)[-1])

    def core(params, x, y, V, rand_idx):
        activations = forward(net, params, x)
        a_L = activations[-1]
        loss, d = jax.value_and_grad(cost_mean, argnums=1)(y, a_L)  # d_L by autodiff
        d_L_hand = cost.D(y, a_L) / a_L.shape[0]   # the recurrence's d_L = D(C y) a_L / batch
        out = {"loss": loss, "cost": {"hand": d_L_hand, "auto": d}, "layers": [None] * L}
        for l in reversed(range(L)):
            layer, p, a = net.layers[l], params[l], activations[l]
            _, vjp = jax.vjp(layer.apply, p, a)
            ref_p, ref_a = vjp(d)                     # the automatic twin at the autodiff delta
            entry = {"ref_p": ref_p, "ref_a": ref_a}
            entry["hand_p"], notes[(l, "D_param")] = _call_rule(layer.D_param, ref_p, p, a, d)
            entry["hand_a"], notes[(l, "D_input")] = _call_rule(layer.D_input, ref_a, p, a, d)
            if layer.time_deltas is not None and layer.time_deltas_ref is not None:
                entry["time_ref"] = layer.time_deltas_ref(p, a, d)
                entry["time_hand"], notes[(l, "time")] = _call_rule(
                    layer.time_deltas, entry["time_ref"], p, a, d)
            if layer.kink_distance is not None:
                entry["kink"] = jax.vmap(lambda ai, p=p, layer=layer: jnp.asarray(
                    layer.kink_distance(p, ai[None]), a.dtype))(a)
            out["layers"][l] = entry
            d = ref_a                                 # d_{l−1} by autodiff
        auto = jax.grad(loss_fn(net, cost))(params, x, y)
        # the whole hand-written recurrence (fails to trace if a rule returns a wrong shape)
        hand, why = _call_rule(lambda: backward(net, params, activations, d_L_hand)[0], auto)
        notes["grad"] = {k: "not computed: the recurrence " + v for k, v in why.items()}
        out["grad"] = {"hand": hand, "auto": auto}
        if fd is not None:
            out["fd"] = _fd_block(lambda q: loss_of(q, x, y), params, hand, auto,
                                  "*" not in notes["grad"], V, rand_idx, plan, fd.eps)
        return out

    return core


def _grad_core(key, notes):
    loss, grad_fn, fd, plan = key

    def core(params, args, V, rand_idx):
        value, auto = jax.value_and_grad(loss)(params, *args)
        hand, notes["grad"] = _call_rule(grad_fn, auto, params, *args)
        out = {"loss": value, "grad": {"hand": hand, "auto": auto}}
        if fd is not None:
            out["fd"] = _fd_block(lambda q: loss(q, *args), params, hand, auto,
                                  "*" not in notes["grad"], V, rand_idx, plan, fd.eps)
        return out

    return core


# --------------------------------------------------------------------------------------------
# From the program's outputs to report rows (NumPy, on the host)

def _status(max_rel, tol):
    return PASS if max_rel <= tol else FAIL


def _leaf_rows(hand, ref, notes, *, layer, where, rule, pair, tol, leaf_name=None):
    rows = []
    for (path, h), r in zip(jax.tree_util.tree_flatten_with_path(hand)[0], jax.tree.leaves(ref)):
        leaf = leaf_name or jax.tree_util.keystr(path)
        note = notes.get("*") or notes.get(jax.tree_util.keystr(path), "")
        if note:
            rows.append(Row(layer, where, rule, leaf, pair, float("nan"), float("nan"), (), tol,
                            FAIL, note))
            continue
        err, rel, idx = error_stats(h, r)
        rows.append(Row(layer, where, rule, leaf, pair, err, rel, idx, tol, _status(rel, tol)))
    return rows


def _time_rows(hand, ref, notes, *, layer, where, tol):
    """One row per delta name: per-step relative errors (scale: that step's max |ref|)."""
    rows = []
    for name in ref:
        if notes.get("*") or notes.get(f"[{name!r}]"):
            rows.append(Row(layer, where, "time_deltas", name, HAND_AUTO, float("nan"),
                            float("nan"), (), tol, FAIL,
                            notes.get("*") or notes.get(f"[{name!r}]")))
            continue
        h, r = np.asarray(hand[name], np.float64), np.asarray(ref[name], np.float64)
        steps = tuple(error_stats(h[:, t], r[:, t])[1] for t in range(r.shape[1]))
        worst_t = int(np.argmax(np.where(np.isnan(steps), np.inf, steps)))
        err, _, idx = error_stats(h[:, worst_t], r[:, worst_t])
        bad = [t for t, s in enumerate(steps) if not s <= tol]
        note = f"worst τ = {worst_t} of {len(steps)}" + (
            f"; {len(bad)} step(s) fail: τ ∈ {bad}" if bad else "")
        rows.append(Row(layer, where, "time_deltas", name, HAND_AUTO, err, steps[worst_t],
                        (idx[0], worst_t, *idx[1:]), tol, FAIL if bad else PASS, note, steps))
    return rows


def _verdict(ha: bool, hf: bool, af: bool) -> str:
    """Which pair of (hand-written, autodiff, finite differences) disagrees."""
    if ha and hf and af:
        return AGREE
    if not ha and af:
        return "the hand-written gradient is wrong: autodiff and finite differences agree"
    if ha and not hf and not af:
        return ("finite differences disagree with both: FD noise or a kink, not a rule error "
                "(hand-written and autodiff agree)")
    if not ha and hf and not af:
        return ("autodiff is the odd one out (hand-written and FD agree): is the forward "
                "differentiable at this point, or does it use a custom derivative?")
    if not ha:
        return "all three disagree"
    return "hand-written and autodiff agree; FD agrees with one of them only (borderline)"


def _fd_rows(f, pos, *, where, rule, leaf, scale, index_of, fd_tol):
    """hand–FD and autodiff–FD rows over the FD positions ``pos`` (relative to ``scale``)."""
    rows = []
    for pair, g in ((HAND_FD, f["hand"][pos]), (AUTO_FD, f["auto"][pos])):
        diff = np.abs(g - f["fd"][pos])
        diff = np.where(np.isnan(diff), np.inf, diff)
        w = int(np.argmax(diff))
        rel = float(diff[w]) / scale if scale > 0 else float(diff[w])
        rows.append(Row(None, where, rule, leaf, pair, float(diff[w]), rel, index_of(w), fd_tol,
                        _status(rel, fd_tol)))
    return rows


def _three_way(rows, ha: bool):
    """Attach the verdict to FD rows; FD failures that hand-written and autodiff explain by
    agreeing become ``"fd-noise"``."""
    hf = all(r.status == PASS for r in rows if r.pair == HAND_FD)
    af = all(r.status == PASS for r in rows if r.pair == AUTO_FD)
    noise = ha and not hf and not af
    return _verdict(ha, hf, af), [r._replace(status=FD_NOISE_STATUS if noise else r.status)
                                  for r in rows]


def _gradient_rows(out, notes, *, tol, fd, fd_tol, plan, where):
    """Rows of the whole gradient: hand vs autodiff per leaf, then (with ``fd``) FD on the chosen
    elements of each leaf and along the random directions, each with its three-way verdict."""
    hand, auto = out["grad"]["hand"], out["grad"]["auto"]
    rows = _leaf_rows(hand, auto, notes, layer=None, where=where, rule="∂J/∂p", pair=HAND_AUTO,
                      tol=tol)
    if fd is None:
        return rows
    f = {k: np.asarray(v, np.float64) for k, v in out["fd"].items()}
    idx, start, K = f["idx"].astype(np.int64), fd.directions, fd.directions
    result = []
    for row, (offset, size, n_worst, n_random), r_leaf in zip(rows, plan, jax.tree.leaves(auto)):
        shape, n = np.shape(r_leaf), n_worst + n_random
        picked = idx[start - K:start - K + n] - offset
        fd_leaf = [] if n == 0 else _fd_rows(
            f, slice(start, start + n), where=where, rule=f"FD at {n} element(s)",
            leaf=row.leaf, scale=float(np.max(np.abs(r_leaf), initial=0.0)), fd_tol=fd_tol,
            index_of=lambda w, picked=picked, shape=shape: tuple(
                int(i) for i in np.unravel_index(int(picked[w]), shape)))
        start += n
        if n == 0:  # an empty leaf has nothing to difference
            result.append(row)
            continue
        verdict, fd_leaf = _three_way(fd_leaf, row.status == PASS)
        result += [row._replace(note="; ".join(filter(None, (row.note, verdict))))] + fd_leaf
    r_flat = np.concatenate([np.ravel(t) for t in jax.tree.leaves(auto)] + [np.zeros(0)])
    directions = _fd_rows(f, slice(0, K), where="∂J/∂p · u, random unit u", rule=f"FD, {K} directions",
                          leaf="all leaves", scale=float(np.linalg.norm(r_flat)),
                          index_of=lambda w: (w,), fd_tol=fd_tol)
    verdict, directions = _three_way(directions, all(r.status == PASS for r in rows))
    return result + directions[:-1] + [directions[-1]._replace(note=verdict)]


# --------------------------------------------------------------------------------------------
# Public API

def _check_fd_args(dtype, finite_differences, eps, directions, fd_elements):
    if not finite_differences:
        return None
    if dtype != "float64":
        raise ValueError(
            f"finite differences need float64: in {dtype} the rounding error of J(p ± εu) "
            f"divided by 2ε swamps the derivative. Received dtype={dtype!r} with "
            f"finite_differences=True; pass dtype='float64' (params, x and y are cast) or "
            f"finite_differences=False.")
    if not (isinstance(eps, (int, float)) and 0 < eps < 1):
        raise ValueError(f"eps must be a float in (0, 1), received {eps!r}; the default is "
                         f"{FD_EPS}.")
    for name, v in (("directions", directions), ("fd_elements", fd_elements)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, received {v!r}.")
    return _FD(float(eps), directions, fd_elements)


def _fd_inputs(fd, params, rng):
    if fd is None:
        return None, np.zeros((0, 1)), np.zeros(0, np.int32)
    sizes = [int(np.prod(np.shape(t))) for t in jax.tree.leaves(params)]
    plan = _element_plan(sizes, fd.elements)
    V = rng.standard_normal((fd.directions, sum(sizes)))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    return plan, V, _random_elements(plan, rng)


def _fd_summary(fd, tol):
    return None if fd is None else {"eps": fd.eps, "directions": fd.directions,
                                    "elements": fd.elements, "rtol": tol[0], "tolerance": tol[1]}


def _check_bounds(**bounds):
    for name, v in bounds.items():
        if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool)
                                  and v >= 0):
            raise ValueError(f"{name} must be a number ≥ 0 (or None for the default), "
                             f"received {v!r}.")


def _tolerances(dtype, tolerance, fd, fd_tolerance, loss):
    """(tol, FD rtol, FD tolerance): the FD tolerance adds the rounding floor of J(p ± εu)."""
    tol = TOLERANCE[dtype] if tolerance is None else float(tolerance)
    fd_rtol = FD_TOLERANCE if fd_tolerance is None else float(fd_tolerance)
    fd_tol = fd_rtol + (FD_NOISE * max(1.0, abs(float(loss))) / fd.eps if fd else 0.0)
    return tol, fd_rtol, fd_tol


def check(net: Network, cost, params, x, y, *, dtype="float64", finite_differences: bool = False,
          tolerance: Optional[float] = None, eps: float = FD_EPS, directions: int = 16,
          fd_elements: int = 8, fd_tolerance: Optional[float] = None, kink_tol: float = KINK_TOL,
          resample: int = 5, seed: int = 0, jit: bool = True,
          raise_on_failure: bool = False) -> GradientReport:
    """Check every hand-written rule of ``net`` at (params, x, y) and report layer by layer.

    Per layer of the serial stack, ``D_param`` and ``D_input`` (and, for recurrent layers,
    ``time_deltas``) are compared with ``jax.vjp`` of the layer's ``apply`` at the same incoming
    delta, the one autodiff computes, so that one wrong rule fails in its layer only; the cost's
    ``D(C y)`` is compared too, and the whole hand-written gradient (``manual_grad``) against
    ``jax.grad(loss_fn(net, cost))``. Gradients are of the batch-mean loss.

    Per row: max abs = max_i |h_i − r_i|, max rel = max abs / max_i |r_i|; pass when
    max rel ≤ ``tolerance`` (default 1e-10 in float64, 1e-4 in float32 under highest matmul
    precision). params, x and y are cast to ``dtype``.

    ``finite_differences=True`` (float64 only) adds central differences, step ``eps``, along
    ``directions`` random unit directions and ``fd_elements`` elements per leaf (the worst by
    |hand − autodiff| and random ones), in one compiled batch, and a verdict saying which pair of
    hand-written / autodiff / FD disagrees. FD rows pass when their relative error is at most
    ``fd_tolerance`` (default ``FD_TOLERANCE``) + ``FD_NOISE``·max(1, |J|)/eps.

    Examples within ``kink_tol`` of a kink (``Layer.kink_distance``) get x perturbed by
    N(0, σ_k²) noise, σ_k = ``RESAMPLE_SCALE``·3^(k−1) in round k, up to ``resample`` rounds
    (noise drawn from ``seed``); a layer still at a kink has its mismatches reported as
    ``"kink"``, not as failures.

    Returns a :class:`GradientReport`; with ``raise_on_failure=True`` a failure raises
    :class:`GradientCheckError` naming the first failing layer, leaf and index.
    """
    if not isinstance(net, Network):
        raise TypeError(f"check: net must be an fbackprop.Network (from fb.serial or fb.mlp), "
                        f"received {type(net).__name__}. For a loss and gradient of your own, "
                        f"use fb.check_grad(loss, grad_fn, params, *args).")
    cost = get_cost(cost)
    dtype = _dtype_name(dtype)
    fd = _check_fd_args(dtype, finite_differences, eps, directions, fd_elements)
    if not (isinstance(resample, int) and resample >= 0):
        raise ValueError(f"resample must be an int ≥ 0, received {resample!r}.")
    _check_bounds(tolerance=tolerance, fd_tolerance=fd_tolerance, kink_tol=kink_tol)
    rng = np.random.default_rng(seed)
    with precision_for(dtype):
        params = astype(params, jnp.dtype(dtype))
        check_params(net, params)
        x = as_float_input(x, net.input_shape).astype(dtype)
        y = check_target(y, jax.eval_shape(net.apply, params, x), cost_name=cost.name)
        plan, V, rand_idx = _fd_inputs(fd, params, rng)
        V = jnp.asarray(V, dtype)
        args = (params, x, y, V, jnp.asarray(rand_idx))
        fn, notes = _program(_network_core, (net, cost, fd, plan), _spec(args), jit)
        perturbed, rounds = set(), 0
        while True:
            out = jax.device_get(fn(*args))
            dist = np.stack([np.asarray(e["kink"], np.float64) if "kink" in e
                             else np.full(x.shape[0], np.inf) for e in out["layers"]])
            near = np.any(dist < kink_tol, axis=0)
            if not near.any() or rounds == resample:
                break
            rounds += 1
            perturbed |= {int(i) for i in np.flatnonzero(near)}
            noise = RESAMPLE_SCALE * 3.0 ** (rounds - 1) * rng.standard_normal(x.shape)
            mask = near.reshape((-1,) + (1,) * (x.ndim - 1))
            x = jnp.asarray(np.where(mask, np.asarray(x) + noise, np.asarray(x)), dtype)
            args = (params, x, y, V, args[4])
    tol, fd_rtol, fd_tol = _tolerances(dtype, tolerance, fd, fd_tolerance, out["loss"])
    at_kink = [l for l in range(len(net.layers)) if np.min(dist[l], initial=np.inf) < kink_tol]

    rows = []
    for l, (layer, e) in enumerate(zip(net.layers, out["layers"])):
        where = f"layer {l}: {layer.name}"
        rows += _leaf_rows(e["hand_p"], e["ref_p"], notes[(l, "D_param")], layer=l, where=where,
                           rule="D_param", pair=HAND_AUTO, tol=tol)
        rows += [r._replace(note=r.note or ("only affects ∂J/∂x, not the parameter gradients"
                                            if l == 0 else ""))
                 for r in _leaf_rows(e["hand_a"], e["ref_a"], notes[(l, "D_input")], layer=l,
                                     where=where, rule="D_input", pair=HAND_AUTO, tol=tol,
                                     leaf_name="∂J/∂a (input)")]
        if "time_ref" in e:
            rows += _time_rows(e["time_hand"], e["time_ref"], notes[(l, "time")], layer=l,
                               where=where, tol=tol)
    rows += _leaf_rows(out["cost"]["hand"], out["cost"]["auto"], {}, layer=None,
                       where=f"cost {cost.name}", rule="D(C y) a_L / batch", pair=HAND_AUTO,
                       tol=tol, leaf_name="∂J/∂a_L")
    rows += _gradient_rows(out, notes["grad"], tol=tol, fd=fd, fd_tol=fd_tol, plan=plan,
                           where="∂J/∂p (whole recurrence)")
    rows = _mark_kinks(rows, at_kink)
    report = GradientReport(
        subject=net.name if net.name != "serial" else repr(net), cost=cost.name, dtype=dtype,
        tolerance=tol, rows=tuple(rows), layer_names=tuple(l.name for l in net.layers),
        fd=_fd_summary(fd, (fd_rtol, fd_tol)),
        kinks={"kink_tol": kink_tol, "distance": [float(np.min(d, initial=np.inf)) for d in dist],
               "resampled": rounds, "perturbed_examples": sorted(perturbed), "at_kink": at_kink},
        loss=float(out["loss"]))
    return report.raise_if_failed() if raise_on_failure else report


def _mark_kinks(rows, at_kink):
    """Failures that a kink explains become ``"kink"``: a kink layer's own rows; whole-gradient
    and FD rows when any layer is at a kink (its delta feeds every layer below it)."""
    if not at_kink:
        return rows
    note = f"at a kink (layers {at_kink}): one-sided derivatives may differ honestly"
    return [r._replace(status=KINK, note=(r.note + "; " if r.note else "") + note)
            if r.status in (FAIL, FD_NOISE_STATUS) and (r.layer in at_kink or r.layer is None
                                                        and not r.where.startswith("cost"))
            else r for r in rows]


def check_grad(loss: Callable, grad_fn: Callable, params, *args, dtype="float64",
               finite_differences: bool = False, tolerance: Optional[float] = None,
               eps: float = FD_EPS, directions: int = 16, fd_elements: int = 8,
               fd_tolerance: Optional[float] = None, seed: int = 0, jit: bool = True,
               raise_on_failure: bool = False) -> GradientReport:
    """Check a hand-written ``grad_fn(params, *args)`` against ``jax.grad(loss)`` (and, with
    ``finite_differences=True``, central differences), with no :class:`Layer` involved.

    ``loss(params, *args)`` must return a scalar and ``grad_fn`` a pytree shaped like
    ``params``; ``args`` are arrays (pytrees of arrays; close over anything else). Floating-point
    leaves of params and args are cast to ``dtype``. Rows, tolerances and finite differences are
    those of :func:`check` (one row per parameter leaf, named by its pytree path); a leaf of the
    wrong shape is reported as a failing row, a wrong structure raises ``TypeError``.
    """
    for name, f in (("loss", loss), ("grad_fn", grad_fn)):
        if not callable(f):
            raise TypeError(f"check_grad: {name} must be a function of (params, *args), "
                            f"received {type(f).__name__}.")
    dtype = _dtype_name(dtype)
    fd = _check_fd_args(dtype, finite_differences, eps, directions, fd_elements)
    _check_bounds(tolerance=tolerance, fd_tolerance=fd_tolerance)
    with precision_for(dtype):
        params, args = astype((params, args), jnp.dtype(dtype))
        value = jax.eval_shape(loss, params, *args)
        if getattr(value, "shape", None) != ():
            raise ValueError(f"check_grad: loss must return a scalar, received shape "
                             f"{getattr(value, 'shape', type(value).__name__)}.")
        got = jax.eval_shape(grad_fn, params, *args)
        if jax.tree.structure(got) != jax.tree.structure(params):
            raise TypeError(f"check_grad: grad_fn returned the wrong pytree structure.\n"
                            f"  expected: {jax.tree.structure(params)}\n"
                            f"  received: {jax.tree.structure(got)}\n"
                            f"grad_fn must return a gradient shaped like params.")
        plan, V, rand_idx = _fd_inputs(fd, params, np.random.default_rng(seed))
        call = (params, args, jnp.asarray(V, dtype), jnp.asarray(rand_idx))
        fn, notes = _program(_grad_core, (loss, grad_fn, fd, plan), _spec(call), jit)
        out = jax.device_get(fn(*call))
    tol, fd_rtol, fd_tol = _tolerances(dtype, tolerance, fd, fd_tolerance, out["loss"])
    rows = _gradient_rows(out, notes["grad"], tol=tol, fd=fd, fd_tol=fd_tol, plan=plan,
                          where=f"∂J/∂p by {getattr(grad_fn, '__name__', 'grad_fn')}")
    report = GradientReport(subject=getattr(loss, "__name__", "loss"), cost=None, dtype=dtype,
                            tolerance=tol, rows=tuple(rows), fd=_fd_summary(fd, (fd_rtol, fd_tol)),
                            loss=float(out["loss"]))
    return report.raise_if_failed() if raise_on_failure else report


# --------------------------------------------------------------------------------------------
# Built-in configurations (``fbackprop check``)

def check_configs(configs, dtypes=("float64", "float32"), *, finite_differences: bool = False,
                  seed: int = 0):
    """Check each :class:`~fbackprop.verify.Config` in each dtype at a reproducible sample point;
    yields ``(config, dtype, report)``. Finite differences run in the float64 checks only."""
    from .verify import sample_point

    for cfg in configs:
        net = cfg.make()
        for dtype in dtypes:
            with precision_for(dtype):
                params, x, y = sample_point(net, cfg.cost, cfg.batch, seed=seed, dtype=dtype,
                                            input_shape=cfg.input_shape)
            yield cfg, dtype, check(net, cfg.cost, params, x, y, dtype=dtype, seed=seed,
                                    finite_differences=finite_differences and dtype == "float64")


def summary_row(cfg, dtype: str, report: GradientReport) -> dict:
    """One line of the ``fbackprop check`` table: the largest hand–autodiff error over every row
    (layers, cost, whole gradient), the largest FD error, the tolerance and the verdict; rows at
    a kink or of FD noise are not counted (the report lists them)."""
    def worst(rows):
        return max((r.max_rel if math.isfinite(r.max_rel) else math.inf for r in rows),
                   default=None)

    judged = [r for r in report.rows if r.status in (PASS, FAIL)]  # not kink or FD-noise rows
    hand_auto = [r for r in judged if r.pair == HAND_AUTO]
    fd_rows = [r for r in judged if r.pair != HAND_AUTO]
    return {"model": cfg.label, "family": cfg.model, "activation": cfg.activation,
            "cost": cfg.cost, "dtype": dtype, "max_rel_error": worst(hand_auto),
            "fd_max_rel_error": worst(fd_rows), "tolerance": report.tolerance,
            "fd_tolerance": report.fd["tolerance"] if report.fd else None,
            "pass": report.ok, "failing_layers": list(report.failing_layers),
            "at_kink": list(report.at_kink)}
