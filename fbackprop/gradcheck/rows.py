"""From the compiled program's outputs to report rows, on the host (NumPy): per parameter leaf,
per time step of a recurrent layer's deltas, per layer, for the whole gradient with its
finite-difference rows and verdicts, and the forward-mode consistency row."""
from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from .fd import fd_rows, three_way
from .numerics import error_stats
from .report import FAIL, FUSED_EULER, HAND_AUTO, HAND_JVP, PASS, Row

__all__ = ["Place", "leaf_rows", "time_rows", "layer_rows", "gradient_rows", "jvp_row"]

INPUT = "∂J/∂a (input)"


class Place(NamedTuple):
    """Where a group of rows belongs: ``Row.layer`` (index, node name or ``None``), the
    ``where`` text, and the tolerance the rows are held to."""

    layer: int | str | None
    where: str
    tol: float


def _status(max_rel, tol):
    return PASS if max_rel <= tol else FAIL


def leaf_rows(hand, ref, notes, place: Place, rule: str, pair: str, leaf_name=None):
    """One row per leaf of ``hand`` against the same leaf of ``ref``.

    Args:
      hand, ref: pytrees of one structure (host arrays).
      notes: what went wrong calling the rule (:func:`~.rules.call_rule`): ``"*"`` for the
        whole value or a leaf's path; such a leaf is a failing row with the note.
      place: the rows' :class:`Place`.
      rule, pair: the rows' rule and compared pair.
      leaf_name: the name of every row's leaf (default: the leaf's pytree path).

    Returns:
      A list of :class:`~.report.Row`.
    """
    rows = []
    for (path, h), r in zip(jax.tree_util.tree_flatten_with_path(hand)[0], jax.tree.leaves(ref)):
        leaf = leaf_name or jax.tree_util.keystr(path)
        note = notes.get("*") or notes.get(jax.tree_util.keystr(path), "")
        if note:
            rows.append(Row(place.layer, place.where, rule, leaf, pair, float("nan"),
                            float("nan"), (), place.tol, FAIL, note))
            continue
        err, rel, idx = error_stats(h, r)
        rows.append(Row(place.layer, place.where, rule, leaf, pair, err, rel, idx, place.tol,
                        _status(rel, place.tol)))
    return rows


def time_rows(hand, ref, notes, place: Place):
    """One row per delta name of a recurrent layer's ``time_deltas``, with per-step relative
    errors (scale: that step's max |ref|) and the worst step τ.

    Args:
      hand, ref: dicts of (batch, T, …) arrays, hand-written and autodiff.
      notes: as for :func:`leaf_rows`.
      place: the rows' :class:`Place`.

    Returns:
      A list of :class:`~.report.Row` with ``steps`` set.
    """
    layer, where, tol = place
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


def layer_rows(net, l, e, notes, tol, sums, *, in_network=True):
    """The rows of node ``l`` (layer ``l`` of a chain): its rules and probes against autodiff,
    its fused rule against autodiff and against the Euler derivatives, and, where its output
    feeds several nodes, the recurrence's sum of their deltas against autodiff.

    Args:
      net: the :class:`~fbackprop.Network` (a layer checked alone: ``serial(layer)``).
      l: the node's index.
      e: the node's entry in the program's outputs (``hand_p``, ``ref_p``, ``hand_a``, …).
      notes: the program's notes, keyed by (node, rule).
      tol: the bound of the rows.
      sums: per node whose output several nodes read, the recurrence's ``hand`` and the
        ``auto`` sum of their deltas.
      in_network: a node reading only x is the first of a network, whose ``D_input`` feeds no
        parameter gradient (``False`` for a layer checked on its own).

    Returns:
      A list of :class:`~.report.Row`.
    """
    layer, key = net.layers[l], net.keys[l]
    where = f"layer {l}: {layer.name}" if net.nodes is None else f"node {key}: {layer.name}"
    place = Place(key, where, tol)
    rows = leaf_rows(e["hand_p"], e["ref_p"], notes[(l, "D_param")], place, "D_param", HAND_AUTO)
    only_x = in_network and all(s == 0 for s in net.sources[l])
    rows += [r._replace(note=r.note or ("only affects ∂J/∂x, not the parameter gradients"
                                        if only_x else ""))
             for r in leaf_rows(e["hand_a"], e["ref_a"], notes[(l, "D_input")], place,
                                "D_input", HAND_AUTO, INPUT)]
    if "fused" in e:
        why = notes[(l, "backward")]
        (f_a, f_p), euler = e["fused"], (e["hand_a"], e["hand_p"])
        for ref, pair in (((e["ref_a"], e["ref_p"]), HAND_AUTO), (euler, FUSED_EULER)):
            rows += leaf_rows(f_p, ref[1], why, place, "backward", pair)
            rows += leaf_rows(f_a, ref[0], why, place, "backward", pair, INPUT)
    if "time_ref" in e:
        rows += time_rows(e["time_hand"], e["time_ref"], notes[(l, "time")], place)
    if l in sums:  # Kamper §3: the delta of a shared activation is the sum over its readers
        rows += leaf_rows(sums[l]["hand"], sums[l]["auto"], {}, place, "Σ of readers' deltas",
                          HAND_AUTO, "∂J/∂a (output)")
    return rows


def gradient_rows(out, notes, where: str, tols, fd, plan):
    """Rows of the whole gradient: hand vs autodiff per leaf, then (with ``fd``) FD on the chosen
    elements of each leaf and along the random directions, each with its three-way verdict.

    Args:
      out: the program's outputs (``grad``: ``hand`` and ``auto``; ``fd`` with ``fd``).
      notes: as for :func:`leaf_rows`.
      where: the rows' ``where``.
      tols: the check's :class:`~.options.Tolerances`.
      fd, plan: the :class:`~.fd.FDPlan` (or ``None``) and its element plan.

    Returns:
      A list of :class:`~.report.Row` with ``layer=None``.
    """
    hand, auto = out["grad"]["hand"], out["grad"]["auto"]
    rows = leaf_rows(hand, auto, notes, Place(None, where, tols.tol), "∂J/∂p", HAND_AUTO)
    if fd is None:
        return rows
    f = {k: np.asarray(v, np.float64) for k, v in out["fd"].items()}
    idx, start, K = f["idx"].astype(np.int64), fd.directions, fd.directions
    result = []
    for row, (offset, _, n_worst, n_random), r_leaf in zip(rows, plan, jax.tree.leaves(auto)):
        shape, n = np.shape(r_leaf), n_worst + n_random
        if n == 0:  # an empty leaf has nothing to difference
            result.append(row)
            continue
        picked = idx[start - K:start - K + n] - offset
        fd_leaf = fd_rows(
            f, slice(start, start + n), (where, f"FD at {n} element(s)", row.leaf),
            scale=float(np.max(np.abs(r_leaf), initial=0.0)), fd_tol=tols.fd_tol,
            index_of=lambda w, picked=picked, shape=shape: tuple(
                int(i) for i in np.unravel_index(int(picked[w]), shape)))
        start += n
        verdict, fd_leaf = three_way(fd_leaf, row.status == PASS)
        result += [row._replace(note="; ".join(filter(None, (row.note, verdict))))] + fd_leaf
    r_flat = np.concatenate([np.ravel(t) for t in jax.tree.leaves(auto)] + [np.zeros(0)])
    directions = fd_rows(f, slice(0, K), ("∂J/∂p · u, random unit u", f"FD, {K} directions",
                                          "all leaves"),
                         scale=float(np.linalg.norm(r_flat)), index_of=lambda w: (w,),
                         fd_tol=tols.fd_tol)
    verdict, directions = three_way(directions, all(r.status == PASS for r in rows))
    return result + directions[:-1] + [directions[-1]._replace(note=verdict)]


def jvp_row(jvp, *, tol, layer=None):
    """The row ⟨u, J v⟩ (``jax.jvp`` of the forward) against ⟨Jᵀu, v⟩ (the hand-written rule),
    at random u and v: max abs = |difference|, max rel = that / (‖u‖·‖J v‖), a bound on both
    sides by Cauchy–Schwarz (so a near-zero inner product does not inflate it)."""
    jv, vjt, scale = (float(jvp[k]) for k in ("jv", "vjt", "scale"))
    err = abs(jv - vjt) if np.isfinite(vjt) else float("inf")
    rel = err / scale if scale > 0 else err
    return Row(layer, "⟨u, J v⟩ = ⟨Jᵀu, v⟩, random u, v", "JVP consistency", "all arguments",
               HAND_JVP, err, rel, (), tol, _status(rel, tol),
               "" if rel <= tol else "the hand-written Jᵀ is not the transpose of jax.jvp's J")
