"""Finite differences, all in one vmapped batch inside the compiled program, and the three-way
verdict between hand-written, autodiff and finite-difference gradients.

Central differences ``(J(p + εu) − J(p − εu)) / 2ε`` run along ``directions`` random unit
directions u over all the parameters (compared with ⟨g, u⟩) and along single elements of every
leaf (u a basis vector): the elements where hand-written and autodiff differ most, plus random
ones. With three answers the verdict says which pair disagrees: a wrong hand-written rule
(autodiff and FD agree), FD noise (hand-written and autodiff agree), or autodiff itself
(hand-written and FD agree). Tolerances are in :mod:`.numerics`.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..inputs import require_number, require_positive_int
from .numerics import FD_EPS
from .report import AGREE, AUTO_FD, FAIL, FD_NOISE_STATUS, HAND_FD, PASS, Row

__all__ = ["FDPlan", "fd_settings", "fd_inputs", "fd_block", "fd_rows", "three_way",
           "fd_summary"]


class FDPlan(NamedTuple):
    """The finite-difference settings of one check."""

    eps: float
    directions: int
    elements: int


def fd_settings(dtype, finite_differences, eps, directions, fd_elements):
    """The :class:`FDPlan` (``None`` without finite differences), after checking the arguments."""
    if not finite_differences:
        return None
    if dtype != "float64":
        raise ValueError(
            f"finite differences need float64: in {dtype} the rounding error of J(p ± εu) "
            f"divided by 2ε swamps the derivative. Received dtype={dtype!r} with "
            f"finite_differences=True; pass dtype='float64' (params, x and y are cast) or "
            f"finite_differences=False.")
    try:
        step = require_number(eps, "eps", positive=True)
    except ValueError:
        step = None
    if step is None or step >= 1:
        raise ValueError(f"eps must be a float in (0, 1), received {eps!r}; the default is "
                         f"{FD_EPS}.")
    return FDPlan(step, require_positive_int(directions, "directions"),
                  require_positive_int(fd_elements, "fd_elements"))


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


def fd_block(loss_of, params, compared, draws, fd: FDPlan, plan):
    """Central differences of ``loss_of`` along the rows of V and along single elements, as one
    vmapped batch (traced inside a check's program).

    Args:
      loss_of: J as a function of ``params``.
      params: the point, a pytree.
      compared: ``(hand, auto, hand_ok)``: the hand-written and autodiff gradients at
        ``params``, and whether the hand-written one could be computed (else the worst elements
        are chosen by |auto|).
      draws: ``(V, rand_idx)`` from :func:`fd_inputs`.
      fd: the :class:`FDPlan` (its step ε).
      plan: the element plan from :func:`fd_inputs`.

    Returns:
      A dict: the chosen element indices ``idx``, the FD values ``fd`` and ⟨hand, u⟩, ⟨auto, u⟩
      for each direction u (the V rows first, then the elements).
    """
    (hand, auto, hand_ok), (V, rand_idx), eps = compared, draws, fd.eps
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


def fd_rows(f, pos, label, *, scale, index_of, fd_tol):
    """hand–FD and autodiff–FD rows over the FD positions ``pos``.

    Args:
      f: the FD block's outputs on the host (:func:`fd_block`).
      pos: a slice of its directions.
      label: ``(where, rule, leaf)`` of the rows.
      scale: the reference's scale the errors are divided by.
      index_of: maps the worst position within ``pos`` to the index the row reports.
      fd_tol: the bound.

    Returns:
      Two :class:`~.report.Row`: hand–FD, then autodiff–FD.
    """
    where, rule, leaf = label
    rows = []
    for pair, g in ((HAND_FD, f["hand"][pos]), (AUTO_FD, f["auto"][pos])):
        diff = np.abs(g - f["fd"][pos])
        diff = np.where(np.isnan(diff), np.inf, diff)
        w = int(np.argmax(diff))
        rel = float(diff[w]) / scale if scale > 0 else float(diff[w])
        rows.append(Row(None, where, rule, leaf, pair, float(diff[w]), rel, index_of(w), fd_tol,
                        PASS if rel <= fd_tol else FAIL))
    return rows


def three_way(rows, ha: bool):
    """Attach the verdict to FD rows; FD failures that hand-written and autodiff explain by
    agreeing become ``"fd-noise"``."""
    hf = all(r.status == PASS for r in rows if r.pair == HAND_FD)
    af = all(r.status == PASS for r in rows if r.pair == AUTO_FD)
    noise = ha and not hf and not af
    return _verdict(ha, hf, af), [r._replace(status=FD_NOISE_STATUS if noise else r.status)
                                  for r in rows]


def fd_inputs(fd, params, rng):
    """The random draws of the finite differences, made on the host before the program runs.

    Args:
      fd: the :class:`FDPlan`, or ``None`` without finite differences.
      params: the pytree that is differentiated (arrays or shapes).
      rng: the check's NumPy generator.

    Returns:
      ``(plan, V, rand_idx)``: the static element plan (per leaf: offset, size, worst, random),
      ``directions`` random unit rows V over all parameters, and the random element indices.
    """
    if fd is None:
        return None, np.zeros((0, 1)), np.zeros(0, np.int32)
    sizes = [int(np.prod(np.shape(t))) for t in jax.tree.leaves(params)]
    plan = _element_plan(sizes, fd.elements)
    V = rng.standard_normal((fd.directions, sum(sizes)))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    return plan, V, _random_elements(plan, rng)


def fd_summary(fd, tol):
    """The report's record of the finite differences.

    Args:
      fd: the :class:`FDPlan`, or ``None``.
      tol: ``(relative tolerance, whole bound)``.

    Returns:
      ``None`` without finite differences, else a dict of eps, directions, elements, rtol and
      tolerance.
    """
    return None if fd is None else {"eps": fd.eps, "directions": fd.directions,
                                    "elements": fd.elements, "rtol": tol[0], "tolerance": tol[1]}
