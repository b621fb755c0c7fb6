"""The machinery of the errata table: each equation becomes a function that evaluates, at random
points, the text's formula as written, its corrected form (for errata) and a ``jax.grad``
reference; the runner compares them and renders the table.

An equation *holds* when the formula as written agrees with the reference to ``HOLDS_TOL``
(normwise relative error, float64) at every random draw. Entries that carry a correction are the
errata: the test suite asserts that each of them fails as written by a clear margin and that its
corrected form holds, and that every entry without a correction holds.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import numpy as np

HOLDS_TOL = 1e-9
DRAWS = 3

TEXTS = {
    "Kamper": "H. Kamper, Yet another introduction to backpropagation (2017)",
    "Gordon": "M. Gordon, My attempt to understand the backpropagation algorithm",
    "Bradbury": "K. Bradbury, Tutorial on neural network math (2019)",
    "Fleuret": "F. Fleuret, EE-559 3b. Multi-Layer Perceptrons (2018)",
    "Jin": "X. Jin, Note on Backpropagation in Neural Networks (2019)",
}


class Values(NamedTuple):
    """What an equation's function returns at one random point (arrays or pytrees of arrays)."""

    written: object              # the text's formula, as written
    reference: object            # the same quantity by jax.grad (or jax.vjp / jax.jacobian)
    corrected: object = None     # the corrected formula, for errata
    corrected_reference: object = None  # when the correction speaks of another quantity


class Entry(NamedTuple):
    text: str          # key of TEXTS
    where: str         # equation number or section
    written: str       # the equation as written (plain text)
    corrected: str     # the corrected form; "" when the equation holds
    note: str          # what goes wrong, or the setting in which it is checked
    evaluate: Callable[[np.random.Generator], Values]


REGISTRY: list[Entry] = []


def equation(text: str, where: str, written: str, *, corrected: str = "", note: str = ""):
    """Register the decorated ``evaluate(rng) -> Values`` as an entry of the table."""
    if text not in TEXTS:
        raise ValueError(f"unknown text {text!r}; expected one of {sorted(TEXTS)}.")

    def register(fn):
        REGISTRY.append(Entry(text, where, written, corrected, note, fn))
        return fn

    return register


def discrepancy(got, ref) -> tuple[float, str]:
    """Normwise relative error between two pytrees of arrays, and a detail string; shapes that
    differ give ``inf`` (a dimension erratum)."""
    gl, rl = jax.tree.leaves(got), jax.tree.leaves(ref)
    if len(gl) != len(rl):
        return float("inf"), f"{len(gl)} quantities vs {len(rl)}"
    worst = 0.0
    for g, r in zip(gl, rl):
        g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
        if g.shape != r.shape:
            return float("inf"), f"shape {g.shape} vs {r.shape}"
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        err = float(np.max(np.abs(g - r))) if r.size else 0.0
        worst = max(worst, err / scale if scale > 0 else err)
    return worst, ""


class Result(NamedTuple):
    entry: Entry
    holds: bool
    error: float                     # largest error of the formula as written
    corrected_error: Optional[float]  # largest error of the corrected formula (errata only)
    detail: str

    @property
    def corrected_holds(self) -> Optional[bool]:
        return None if self.corrected_error is None else self.corrected_error <= HOLDS_TOL

    def as_dict(self) -> dict:
        e = self.entry
        return {"text": e.text, "where": e.where, "written": e.written, "holds": self.holds,
                "error": self.error, "corrected": e.corrected or None,
                "corrected_error": self.corrected_error, "corrected_holds": self.corrected_holds,
                "note": e.note, "detail": self.detail}


def run(entries=None, *, draws: int = DRAWS, seed: int = 0) -> list[Result]:
    """Evaluate every entry (default: all registered) at ``draws`` random points, in float64."""
    entries = REGISTRY if entries is None else entries
    results = []
    with jax.enable_x64(True):
        for index, entry in enumerate(entries):
            errors, corrected_errors, details = [], [], []
            for draw in range(draws):
                values = entry.evaluate(np.random.default_rng([seed, index, draw]))
                err, detail = discrepancy(values.written, values.reference)
                errors.append(err)
                details.append(detail)
                if values.corrected is not None:
                    ref = (values.reference if values.corrected_reference is None
                           else values.corrected_reference)
                    corrected_errors.append(discrepancy(values.corrected, ref)[0])
            error = max(errors)
            results.append(Result(entry, error <= HOLDS_TOL, error,
                                  max(corrected_errors) if corrected_errors else None,
                                  next((d for d in details if d), "")))
    return results


def _fmt_err(e: Optional[float]) -> str:
    """Errors within the tolerance print as a bound, so the table does not depend on rounding
    noise that differs between machines; larger ones print with two significant digits."""
    if e is None:
        return ""
    if e == float("inf"):
        return "shapes differ"
    return f"< {HOLDS_TOL:g}" if e <= HOLDS_TOL else f"{e:.1e}"


def render_text(results) -> str:
    """A plain-text report for the terminal."""
    lines = []
    for text in TEXTS:
        rows = [r for r in results if r.entry.text == text]
        if not rows:
            continue
        lines += [TEXTS[text], "=" * len(TEXTS[text])]
        for r in rows:
            status = "holds" if r.holds else f"DOES NOT HOLD (error {_fmt_err(r.error)})"
            lines.append(f"  {r.entry.where}: {status}")
            lines.append(f"      as written: {r.entry.written}")
            if r.entry.corrected:
                ok = "holds" if r.corrected_holds else "STILL FAILS"
                lines.append(f"      corrected:  {r.entry.corrected}  "
                             f"[{ok}, error {_fmt_err(r.corrected_error)}]")
            if r.entry.note and not r.holds:
                lines.append(f"      note:       {r.entry.note}")
        lines.append("")
    n_err = sum(bool(r.entry.corrected) for r in results)
    lines.append(f"{len(results)} equations checked against jax.grad: {n_err} do not hold as "
                 f"written, {sum(r.holds for r in results)} hold.")
    return "\n".join(lines)


def _md(s: str) -> str:
    return s.replace("|", "\\|")


def render_markdown(results) -> str:
    """The errata table as Markdown (docs/ERRATA.md is this output)."""
    out = ["# Errata for the source texts", "",
           "Generated by `fbackprop errata --markdown`; do not edit by hand. Every equation of the",
           "texts that fbackprop implements is evaluated as written at random points (float64) and",
           f"compared with `jax.grad`; it *holds* when the relative error is at most {HOLDS_TOL:g} at",
           f"each of {DRAWS} draws. Where it does not hold, the corrected form is evaluated the same",
           "way. The code is in `fbackprop/errata/`.", ""]
    n_err = sum(bool(r.entry.corrected) for r in results)
    out.append(f"{len(results)} equations checked; **{n_err} do not hold as written**.")
    out.append("")
    for text in TEXTS:
        rows = [r for r in results if r.entry.text == text]
        if not rows:
            continue
        out += [f"## {TEXTS[text]}", "",
                "| where | as written | holds | error | corrected form (error) | note |",
                "| --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            corr = (f"{_md(r.entry.corrected)} ({_fmt_err(r.corrected_error)})"
                    if r.entry.corrected else "")
            out.append(f"| {_md(r.entry.where)} | {_md(r.entry.written)} | "
                       f"{'yes' if r.holds else '**no**'} | {_fmt_err(r.error)} | {corr} | "
                       f"{_md(r.entry.note)} |")
        out.append("")
    return "\n".join(out)
