"""The report of :func:`~fbackprop.check_custom_rules`: one :class:`RuleCheck` per checked call of
a custom rule, the :class:`CustomRulesReport` that holds them, its table and its JSON."""
from __future__ import annotations

import dataclasses
import json
import math
import os

from .report import GradientCheckError, GradientReport

__all__ = ["RuleCheck", "CustomRulesReport", "ModeReport", "OK", "FAIL", "KINK", "SKIPPED",
           "EXPECTED"]

OK, FAIL, KINK, SKIPPED, EXPECTED = "ok", "FAIL", "kink", "skipped", "expected mismatch"


@dataclasses.dataclass(frozen=True)
class ModeReport(GradientReport):
    """A :class:`~fbackprop.GradientReport` whose rows were compared another way than the
    hand–autodiff rows of ``check_vjp`` (forward mode, a low-precision budget): ``criterion``
    replaces the header line that states the pass criterion."""

    criterion: str = ""

    def __str__(self) -> str:
        lines = super().__str__().split("\n")
        if self.criterion and len(lines) > 1:
            lines[1] = self.criterion
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class RuleCheck:
    """One checked call of one custom rule.

    name, defined_at: the primal function and where it is defined (``file:line``); rule, rule_at:
    the backward (custom_vjp) or jvp (custom_jvp) function; called_at: ``file:line`` of the call
    in the user's code; scope: the name stack (Flax module path, ``jax.named_scope``) or ``""``;
    calls: how many times the run called this call site; call: which of them was checked
    (0-based); operands: ``"f32[3,4]"`` per operand; status: ``ok``, ``FAIL``, ``kink``,
    ``skipped`` or ``expected mismatch``; reason: why (for anything but ``ok``) and notes;
    mode: ``reverse`` (custom rule vs ``jax.vjp`` of the primal), ``forward`` (⟨u, J v⟩ by
    ``jax.jvp`` of the primal vs ⟨Jᵀu, v⟩ by the rule), ``reference`` (vs autodiff of a reference
    function) or ``budget`` (low precision, against its error budget); report: the rows.
    """

    name: str
    kind: str
    defined_at: str
    rule: str
    rule_at: str
    called_at: str
    scope: str
    calls: int
    call: int
    operands: tuple
    status: str
    reason: str = ""
    mode: str = ""
    report: GradientReport | None = None

    @property
    def max_rel(self) -> float:
        """The largest relative error over the rows (``nan`` when nothing was compared)."""
        vals = [r.max_rel for r in self.report.rows] if self.report else []
        return max(vals, default=float("nan"), key=lambda v: v if v == v else math.inf)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "report"}
        d["operands"] = list(self.operands)
        d["max_rel"] = self.max_rel if math.isfinite(self.max_rel) else None
        d["rows"] = None if self.report is None else self.report.to_dict()["rows"]
        return d


@dataclasses.dataclass(frozen=True)
class CustomRulesReport:
    """The result of :func:`~fbackprop.check_custom_rules`.

    ``ok`` is true when no check has status ``FAIL``; ``failing`` lists those checks;
    ``print(report)`` renders the table, ``to_json()`` the same content as JSON;
    ``raise_if_failed()`` raises :class:`~fbackprop.GradientCheckError` naming the first failure.
    ``unsearched`` names equations holding rules this sweep could not enter.
    """

    subject: str
    checks: tuple
    unsearched: tuple = ()
    settings: dict = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failing

    @property
    def failing(self) -> tuple:
        return tuple(c for c in self.checks if c.status == FAIL)

    def failure_message(self) -> str:
        """One sentence naming the first failing rule and where it is called ('' when ok)."""
        if self.ok:
            return ""
        c = self.failing[0]
        return (f"custom rule check of {self.subject} failed: {c.name} ({c.kind}, defined at "
                f"{c.defined_at}, called at {c.called_at}{' in ' + c.scope if c.scope else ''}): "
                f"{c.reason}" + (f"; {len(self.failing) - 1} more failing" if len(
                    self.failing) > 1 else "") + ".")

    def raise_if_failed(self) -> CustomRulesReport:
        """Raise :class:`~fbackprop.GradientCheckError` when a rule failed; return self when ok."""
        if not self.ok:
            raise GradientCheckError(self.failure_message() + "\n\n" + str(self), self)
        return self

    def to_dict(self) -> dict:
        return {"subject": self.subject, "ok": self.ok, "settings": dict(self.settings),
                "failing": [c.name for c in self.failing], "unsearched": list(self.unsearched),
                "checks": [c.to_dict() for c in self.checks]}

    def to_json(self, **kwargs) -> str:
        """The report as a JSON string (``kwargs`` go to ``json.dumps``)."""
        return json.dumps(self.to_dict(), **kwargs)

    def __str__(self) -> str:
        return _render(self)


def short_path(where: str) -> str:
    """``file:line`` relative to the working directory when inside it, else the base name."""
    path, sep, line = where.rpartition(":")
    if not sep or not path:
        return where
    rel = os.path.relpath(path) if os.path.isabs(path) else path
    return f"{rel if not rel.startswith('..') else os.path.basename(path)}:{line}"


def _render(rep: CustomRulesReport) -> str:
    s = rep.settings
    sites = len({(c.called_at, c.name, c.scope) for c in rep.checks})
    head = [f"custom rules reached by {rep.subject}: {sites}"
            f" call site(s), {len(rep.checks)} check(s) · calls checked: {s.get('calls', 'first')}"
            f" · seed {s.get('seed', 0)}"]
    if not rep.checks:
        head.append("no jax.custom_vjp or jax.custom_jvp rule was reached by this run")
    cols = ("rule", "kind", "defined at", "called at", "scope", "calls", "operands", "mode",
            "max rel", "status")
    table = [(c.name, c.kind, short_path(c.defined_at), short_path(c.called_at)
              + ("" if c.calls == 1 and c.call == 0 else f" #{c.call}"), c.scope or "—",
              str(c.calls), " ".join(c.operands), c.mode or "—",
              "—" if not math.isfinite(c.max_rel) else f"{c.max_rel:.1e}", c.status)
             for c in rep.checks]
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h)
              for i, h in enumerate(cols)]
    lines = head + (["", "  ".join(h.ljust(w) for h, w in zip(cols, widths)).rstrip()]
                    if table else [])
    for c, t in zip(rep.checks, table):
        lines.append("  ".join(v.ljust(w) for v, w in zip(t, widths)).rstrip())
        if c.reason:
            lines.append("  ↳ " + c.reason)
    lines += [f"not searched: {u}" for u in rep.unsearched]
    verdict = ("ok: every rule reached agrees with autodiff" if rep.ok and rep.checks else
               "ok: nothing to check" if rep.ok else
               f"FAILED: {len(rep.failing)} check(s)\n{rep.failure_message()}")
    return "\n".join(lines + ["", verdict])
