"""The report of a gradient check: one :class:`Row` per comparison, the :class:`GradientReport`
that holds them, its table rendering and its JSON."""
from __future__ import annotations

import dataclasses
import json
import math
from typing import NamedTuple

from .numerics import FD_NOISE

__all__ = ["Row", "GradientReport", "GradientCheckError", "HAND_AUTO", "HAND_FD", "AUTO_FD",
           "FUSED_EULER", "HAND_JVP", "HAND_REFERENCE", "PASS", "FAIL", "KINK", "FD_NOISE_STATUS",
           "SKIPPED", "AGREE"]

HAND_AUTO, HAND_FD, AUTO_FD = "hand–autodiff", "hand–FD", "autodiff–FD"
FUSED_EULER = "fused–Euler"  # a fused backward against the two Euler derivatives
HAND_REFERENCE = "kernel–reference"  # the forward of f against the reference implementation
HAND_JVP = "hand–JVP"  # ⟨Jᵀu, v⟩ by the hand-written rule against ⟨u, J v⟩ by jax.jvp
PASS, FAIL, KINK, FD_NOISE_STATUS, SKIPPED = "pass", "fail", "kink", "fd-noise", "skipped"
AGREE = "all three agree"


class GradientCheckError(ValueError):
    """Raised by ``check``/``check_grad`` with ``raise_on_failure=True``; ``.report`` holds the
    full :class:`GradientReport`."""

    def __init__(self, message: str, report: GradientReport):
        super().__init__(message)
        self.report = report


class Row(NamedTuple):
    """One comparison in a :class:`GradientReport`.

    layer:     0-based index into the serial stack, the node name in a DAG, or ``None`` (cost,
               whole gradient).
    where:     what is compared, e.g. ``"layer 1: dense(4→3, tanh)"``, ``"cost mse"``.
    rule:      ``"D_param"``, ``"D_input"``, ``"time_deltas"``, ``"D(C y)"``, ``"∂J/∂p"`` …
    leaf:      the parameter leaf's pytree path (``jax.tree_util.keystr``), or a name.
    pair:      ``"hand–autodiff"``, ``"hand–FD"``, ``"autodiff–FD"``, ``"fused–Euler"`` or
               ``"hand–JVP"``.
    max_abs:   max_i |h_i − r_i| (``nan`` when the value could not be computed).
    max_rel:   max_abs / scale (see the module docstring).
    index:     index of the worst element (for time rows: (batch, τ, …)).
    tolerance: the bound max_rel was held to.
    status:    ``"pass"``, ``"fail"``, ``"kink"`` (a mismatch at a kink, not a failure) or
               ``"fd-noise"`` (FD disagrees with both hand-written and autodiff, which agree).
    note:      a remark: why a value is missing, which pair disagrees, the worst time step.
    steps:     per-time-step relative errors (time rows only).
    budget:    for a low-precision check judged by its error budget: the rule's error, autodiff's
               error (both against float64 autodiff), their ratio, the budget and the floor;
               ``max_rel`` is then the rule's error and ``tolerance`` budget × autodiff's + floor.
    """

    layer: int | str | None
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
    steps: tuple | None = None
    budget: dict | None = None


def _json_float(v):
    return v if v is None or math.isfinite(v) else None


@dataclasses.dataclass(frozen=True)
class GradientReport:
    """The result of :func:`check` or :func:`check_grad`.

    ``ok`` is true when no row has status ``"fail"``; ``failing_layers`` lists the (sorted,
    0-based) layers of the serial stack with a failing row — for a DAG the node names, in
    topological order (``node_names``); ``print(report)`` renders the table;
    ``to_json()`` gives the same content as JSON (non-finite numbers as ``null``).
    """

    subject: str
    cost: str | None
    dtype: str
    tolerance: float
    rows: tuple
    layer_names: tuple = ()
    node_names: tuple = ()
    fd: dict | None = None
    kinks: dict | None = None
    loss: float = float("nan")
    budget: dict | None = None
    skipped: str = ""

    @property
    def failures(self) -> tuple:
        """The rows with status ``"fail"``."""
        return tuple(r for r in self.rows if r.status == FAIL)

    @property
    def ok(self) -> bool:
        """No row failed, and the check ran (it was not skipped)."""
        return not self.failures and not self.skipped

    @property
    def status(self) -> str:
        """``"fail"`` (a row failed), ``"skipped"`` (nothing could be checked, ``skipped`` says
        why), ``"kink"`` (passed, with mismatches at a kink) or ``"ok"``."""
        if self.failures:
            return FAIL
        if self.skipped:
            return SKIPPED
        return KINK if any(r.status == KINK for r in self.rows) else "ok"

    @property
    def failing_layers(self) -> tuple:
        failing = {r.layer for r in self.failures if r.layer is not None}
        order = {name: i for i, name in enumerate(self.node_names)}
        return tuple(sorted(failing, key=lambda k: order.get(k, k)))

    @property
    def at_kink(self) -> tuple:
        """Layers that stayed within ``kink_tol`` of a kink after resampling."""
        return tuple(self.kinks["at_kink"]) if self.kinks else ()

    def first_failure(self) -> Row | None:
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

    def raise_if_failed(self) -> GradientReport:
        """Raise :class:`GradientCheckError` naming the first failure; return self when no row
        failed (a skipped check does not raise: its ``status`` says ``"skipped"``)."""
        if self.failures:
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
            if r.budget is None:
                del d["budget"]
            else:
                d["budget"] = {k: _json_float(v) for k, v in r.budget.items()}
            rows.append(d)
        kinks = None
        if self.kinks is not None:
            kinks = dict(self.kinks)
            kinks["distance"] = [_json_float(v) for v in kinks["distance"]]
        return {"subject": self.subject, "layers": list(self.layer_names), "cost": self.cost,
                "dtype": self.dtype,
                "tolerance": self.tolerance, "ok": self.ok,
                "failing_layers": list(self.failing_layers), "loss": _json_float(self.loss),
                "finite_differences": self.fd, "kinks": kinks, "rows": rows,
                **({"budget": self.budget} if self.budget else {}),
                **({"status": SKIPPED, "skipped": self.skipped} if self.skipped else {})}

    def to_json(self, **kwargs) -> str:
        """The report as a JSON string (``kwargs`` go to ``json.dumps``)."""
        return json.dumps(self.to_dict(), **kwargs)

    def __str__(self) -> str:
        return _render(self)


# --------------------------------------------------------------------------------------------
# Rendering

def _fmt(v: float) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.1e}"


def _header(rep: GradientReport) -> list:
    """The lines above the table: subject, how rows are judged, FD and kink settings."""
    head = [f"gradient check: {rep.subject}" + (f" · cost {rep.cost}" if rep.cost else "")
            + f" · {rep.dtype} · J = {_fmt(rep.loss)}"]
    if rep.budget:
        b = rep.budget
        head.append(f"error budget: pass when rule error ≤ {b['budget']:g} × autodiff error + "
                    f"{b['floor']:.0e}, both max|· − r₆₄| / max|r₆₄| against autodiff in "
                    f"float64 at the same point ({rep.dtype}, matmul precision "
                    f"{b['matmul_precision']})")
    else:
        how = "float64" if rep.dtype == "float64" else "float32, matmul precision highest"
        head.append(f"tolerance {rep.tolerance:.0e}: pass when max rel = max|h − r| / max|r| ≤ "
                    f"tol ({how})")
    if rep.skipped:
        head.append(f"SKIPPED: {rep.skipped}")
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
    return head


def _render(rep: GradientReport) -> str:
    head = _header(rep)
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
        lines.append("three-way: hand-written, autodiff and finite differences agree on every "
                     "leaf and direction")
    if rep.skipped and not rep.failures:
        verdict = f"SKIPPED: {rep.skipped}"
    elif rep.ok:
        verdict = "ok: every comparison passed" + (
            " (some rows at a kink or FD noise, see above)" if any(
                r.status in (KINK, FD_NOISE_STATUS) for r in rep.rows) else "")
    else:
        verdict = (f"FAILED: {len(rep.failures)} row(s)"
                   + (f"; failing layers {list(rep.failing_layers)}" if rep.failing_layers else "")
                   + "\n" + rep.failure_message())
    return "\n".join(lines + ["", verdict])
