"""From the compiled program's outputs to report rows, on the host (NumPy): per parameter leaf,
per time step of a recurrent layer's deltas, for the whole gradient with its
finite-difference rows and verdicts, and the forward-mode consistency row."""
from __future__ import annotations

import jax
import numpy as np

from .fd import fd_rows, three_way
from .numerics import error_stats
from .report import FAIL, HAND_AUTO, HAND_JVP, PASS, Row

__all__ = ["leaf_rows", "time_rows", "gradient_rows", "jvp_row"]


def _status(max_rel, tol):
    return PASS if max_rel <= tol else FAIL


def leaf_rows(hand, ref, notes, *, layer, where, rule, pair, tol, leaf_name=None):
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


def time_rows(hand, ref, notes, *, layer, where, tol):
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


def gradient_rows(out, notes, *, tol, fd, fd_tol, plan, where):
    """Rows of the whole gradient: hand vs autodiff per leaf, then (with ``fd``) FD on the chosen
    elements of each leaf and along the random directions, each with its three-way verdict."""
    hand, auto = out["grad"]["hand"], out["grad"]["auto"]
    rows = leaf_rows(hand, auto, notes, layer=None, where=where, rule="∂J/∂p", pair=HAND_AUTO,
                      tol=tol)
    if fd is None:
        return rows
    f = {k: np.asarray(v, np.float64) for k, v in out["fd"].items()}
    idx, start, K = f["idx"].astype(np.int64), fd.directions, fd.directions
    result = []
    for row, (offset, size, n_worst, n_random), r_leaf in zip(rows, plan, jax.tree.leaves(auto)):
        shape, n = np.shape(r_leaf), n_worst + n_random
        picked = idx[start - K:start - K + n] - offset
        fd_leaf = [] if n == 0 else fd_rows(
            f, slice(start, start + n), where=where, rule=f"FD at {n} element(s)",
            leaf=row.leaf, scale=float(np.max(np.abs(r_leaf), initial=0.0)), fd_tol=fd_tol,
            index_of=lambda w, picked=picked, shape=shape: tuple(
                int(i) for i in np.unravel_index(int(picked[w]), shape)))
        start += n
        if n == 0:  # an empty leaf has nothing to difference
            result.append(row)
            continue
        verdict, fd_leaf = three_way(fd_leaf, row.status == PASS)
        result += [row._replace(note="; ".join(filter(None, (row.note, verdict))))] + fd_leaf
    r_flat = np.concatenate([np.ravel(t) for t in jax.tree.leaves(auto)] + [np.zeros(0)])
    directions = fd_rows(f, slice(0, K), where="∂J/∂p · u, random unit u", rule=f"FD, {K} directions",
                          leaf="all leaves", scale=float(np.linalg.norm(r_flat)),
                          index_of=lambda w: (w,), fd_tol=fd_tol)
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
