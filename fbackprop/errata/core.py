"""The machinery of the errata table: each equation becomes a function that evaluates, at random
points, the text's formula as written, its corrected form (for errata) and a ``jax.grad``
reference; the runner compares them and renders the table.

An equation *holds* when the formula as written agrees with the reference to ``HOLDS_TOL``
(normwise relative error, float64) at every random draw. Entries that carry a correction are the
errata: the test suite asserts that each of them fails as written by a clear margin and that its
corrected form holds, and that every entry without a correction holds.

An erratum is *debatable* when the literal reading fails but the text's intent is a convention
rather than a mistake (the order of a product of matrices, the range of a quantifier, a free
index read as "for each sample"): its correction is the intended reading. Debatable rows are
evaluated like the others, shown as "debatable" and not counted among the equations that do not
hold.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from ..gradcheck.numerics import relative_error

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


def sig(z):
    """The logistic σ(z) = 1 / (1 + e^(−z)) in NumPy, as the texts write it.

    Args:
        z: a number or NumPy array.

    Returns:
        σ(z), elementwise.
    """
    return 1 / (1 + np.exp(-z))


def dsig(z):
    """σ'(z) = σ(z)(1 − σ(z)) in NumPy (the texts' derivative of the logistic).

    Args:
        z: a number or NumPy array.

    Returns:
        σ'(z), elementwise.
    """
    return sig(z) * (1 - sig(z))


class Entry(NamedTuple):
    """One equation of a source text in the errata table, and how to evaluate it."""

    text: str          # key of TEXTS
    where: str         # equation number or section
    written: str       # the equation as written (plain text)
    corrected: str     # the corrected form (the intended reading, if debatable); "" if it holds
    note: str          # what goes wrong, or the setting in which it is checked
    evaluate: Callable[[np.random.Generator], Values]
    debatable: bool = False  # the literal reading fails, but the intent is a convention


REGISTRY: list[Entry] = []


def equation(text: str, where: str, written: str, *, corrected: str = "", note: str = "",
             debatable: bool = False):
    """Register the decorated ``evaluate(rng) -> Values`` as an entry of the table.

    Args:
        text: key of ``TEXTS``.
        where: the equation number or section.
        written: the equation as the text writes it.
        corrected: the corrected form, for an erratum; for a debatable entry, the intended reading.
        note: what goes wrong, or the setting in which the equation is checked; for a debatable
            entry, the convention that makes the literal reading fail.
        debatable: the literal reading fails but the text's intent is a convention.

    Returns:
        A decorator that registers the function and returns it unchanged.
    """
    if text not in TEXTS:
        raise ValueError(f"unknown text {text!r}; expected one of {sorted(TEXTS)}.")
    if debatable and not (corrected and note):
        raise ValueError(f"{text} {where}: a debatable entry needs the intended reading as its "
                         f"correction and the convention in its note; received corrected="
                         f"{corrected!r}, note={note!r}.")

    def register(fn):
        REGISTRY.append(Entry(text, where, written, corrected, note, fn, debatable))
        return fn

    return register


def discrepancy(got, ref) -> float:
    """Normwise relative error between two pytrees of arrays of the same structure.

    Args:
        got: the formula's value (an array or a pytree of arrays).
        ref: the reference value, with the same leaves and shapes.

    Returns:
        The largest, over the leaves, of max|got − ref| / max|ref| (max|got − ref| where ref is 0).

    Raises:
        ValueError: if the leaves or their shapes differ. A check compares values; a mismatch is
            a bug in the entry, not an erratum.
    """
    gl, rl = jax.tree.leaves(got), jax.tree.leaves(ref)
    if len(gl) != len(rl):
        raise ValueError(f"expected {len(rl)} quantities, as in the reference; received {len(gl)}.")
    worst = 0.0
    for g, r in zip(gl, rl):
        g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
        if g.shape != r.shape:
            raise ValueError(f"expected shape {r.shape}, as in the reference; received {g.shape}.")
        worst = max(worst, relative_error(g, r))
    return worst


HOLDS, FAILS, DEBATABLE = "holds", "does not hold", "debatable"


class Result(NamedTuple):
    """The outcome of evaluating one :class:`Entry` at random points: whether it holds as
    written, its largest error, and the largest error of its correction (errata only)."""

    entry: Entry
    holds: bool
    error: float                     # largest error of the formula as written
    corrected_error: float | None  # largest error of the corrected formula (errata only)

    @property
    def corrected_holds(self) -> bool | None:
        """Whether the correction holds (``None`` for an entry without one)."""
        return None if self.corrected_error is None else self.corrected_error <= HOLDS_TOL

    @property
    def status(self) -> str:
        """``HOLDS``, ``FAILS`` (does not hold as written) or ``DEBATABLE`` (the literal reading
        fails, the intended one is a convention; a debatable entry that holds as written is
        reported as holding, and ``fbackprop errata`` flags it as behaving other than
        documented)."""
        if self.holds:
            return HOLDS
        return DEBATABLE if self.entry.debatable else FAILS

    def as_dict(self) -> dict:
        """The result as a JSON-ready dict (``fbackprop errata --json``)."""
        e = self.entry
        return {"text": e.text, "where": e.where, "written": e.written, "status": self.status,
                "holds": self.holds, "debatable": e.debatable, "error": self.error,
                "corrected": e.corrected or None, "corrected_error": self.corrected_error,
                "corrected_holds": self.corrected_holds, "note": e.note}


def counts(results) -> dict[str, int]:
    """How many results have each status.

    Args:
        results: ``Result``s, as returned by ``run``.

    Returns:
        ``{HOLDS: n, FAILS: n, DEBATABLE: n}``; ``FAILS`` counts exactly the rows that fail as
        written and are not debatable.
    """
    out = {HOLDS: 0, FAILS: 0, DEBATABLE: 0}
    for r in results:
        out[r.status] += 1
    return out


def run(entries=None, *, draws: int = DRAWS, seed: int = 0) -> list[Result]:
    """Evaluate every entry at random points, in float64.

    Args:
        entries: the entries to evaluate; default all registered ones.
        draws: random points per entry.
        seed: seed of the random points (each entry and draw gets its own stream).

    Returns:
        One ``Result`` per entry, in order.
    """
    entries = REGISTRY if entries is None else entries
    results = []
    with jax.enable_x64(True):
        for index, entry in enumerate(entries):
            errors, corrected_errors = [], []
            for draw in range(draws):
                values = entry.evaluate(np.random.default_rng([seed, index, draw]))
                errors.append(discrepancy(values.written, values.reference))
                if values.corrected is not None:
                    ref = (values.reference if values.corrected_reference is None
                           else values.corrected_reference)
                    corrected_errors.append(discrepancy(values.corrected, ref))
            error = max(errors)
            results.append(Result(entry, error <= HOLDS_TOL, error,
                                  max(corrected_errors) if corrected_errors else None))
    return results


def _fmt_err(e: float | None) -> str:
    """Errors within the tolerance print as a bound, so the table does not depend on rounding
    noise that differs between machines; larger ones print with two significant digits."""
    if e is None:
        return ""
    return f"< {HOLDS_TOL:g}" if e <= HOLDS_TOL else f"{e:.1e}"


def headline(results) -> str:
    """The one-line summary shared by the text and Markdown reports.

    Args:
        results: ``Result``s, as returned by ``run``.

    Returns:
        "N equations checked: F do not hold as written, D debatable, H hold."
    """
    c = counts(results)
    return (f"{len(results)} equations checked against jax.grad: {c[FAILS]} do not hold as "
            f"written, {c[DEBATABLE]} debatable (the literal reading fails, the intent is a "
            f"convention), {c[HOLDS]} hold.")


def render_text(results) -> str:
    """A plain-text report for the terminal."""
    lines = []
    for text in TEXTS:
        rows = [r for r in results if r.entry.text == text]
        if not rows:
            continue
        lines += [TEXTS[text], "=" * len(TEXTS[text])]
        for r in rows:
            status = {HOLDS: "holds",
                      FAILS: f"DOES NOT HOLD (error {_fmt_err(r.error)})",
                      DEBATABLE: f"debatable (read literally, error {_fmt_err(r.error)})"}[r.status]
            lines.append(f"  {r.entry.where}: {status}")
            lines.append(f"      as written: {r.entry.written}")
            if r.entry.corrected:
                label = "intended:  " if r.entry.debatable else "corrected: "
                ok = "holds" if r.corrected_holds else "STILL FAILS"
                lines.append(f"      {label} {r.entry.corrected}  "
                             f"[{ok}, error {_fmt_err(r.corrected_error)}]")
            if r.entry.note and not r.holds:
                lines.append(f"      note:       {r.entry.note}")
        lines.append("")
    lines.append(headline(results))
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
           "way. A row is *debatable* when the literal reading fails but the text's intent is a",
           "convention (the order of a matrix product, the range of a quantifier, a free index);",
           "its corrected form is then the intended reading, and its note names the convention.",
           "The code is in `fbackprop/errata/`.", ""]
    c = counts(results)
    out.append(f"{len(results)} equations checked; **{c[FAILS]} do not hold as written**, "
               f"{c[DEBATABLE]} debatable, {c[HOLDS]} hold.")
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
            status = {HOLDS: "yes", FAILS: "**no**", DEBATABLE: "debatable"}[r.status]
            out.append(f"| {_md(r.entry.where)} | {_md(r.entry.written)} | {status} | "
                       f"{_fmt_err(r.error)} | {corr} | {_md(r.entry.note)} |")
        out.append("")
    return "\n".join(out)
