"""Custom rules written the way real projects write them, each in a correct and a planted-mistake
version, and one program that reaches them all — through lax.scan, jax.checkpoint, jax.vmap, a
Flax linen module, an Equinox module and the Pallas kernel. Used by tests/test_custom_rules.py and
by the CLI test (``--target custom_rules_zoo:factory --custom-rules``).

``PLANTED`` maps each rule to its mistake; ``build(planted)`` returns ``(fn, args, sites)`` with
``sites`` the line of each rule's call in this file, so a test can check that each mistake is
reported at exactly its call site.
"""
from __future__ import annotations

import functools
import inspect

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp

from fbackprop.kernels.softmax_xent import make_softmax_xent, softmax_xent_reference

PLANTED = {
    "stable_lse": "wrong sign",
    "scaled_power": "missing factor",
    "tied_matmul": "transposed",
    "gated": "swapped arguments",
    "soft_clip": "missing factor",
    "dense_bias": "forgotten batch sum",
    "eqx_scale": "wrong sign",
    "softmax_xent": "1% error in the backward kernel",
}


def _lse(bad):
    @jax.custom_jvp
    def stable_lse(x):
        m = jnp.max(x, axis=-1, keepdims=True)
        return (m + jnp.log(jnp.sum(jnp.exp(x - m), axis=-1, keepdims=True)))[..., 0]

    @stable_lse.defjvp
    def stable_lse_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        y = stable_lse(x)
        dy = jnp.sum(jax.nn.softmax(x) * t, axis=-1)
        return y, -dy if bad else dy
    return stable_lse


def _ste():
    @jax.custom_vjp
    def straight_through(x):
        return jnp.round(x)
    straight_through.defvjp(lambda x: (jnp.round(x), None), lambda _, g: (g,))
    return straight_through


def _power(bad):
    @functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
    def scaled_power(x, p):
        return x ** p

    def fwd(x, p):
        return x ** p, x

    def bwd(p, x, g):
        return ((1 if bad else p) * x ** (p - 1) * g,)
    scaled_power.defvjp(fwd, bwd)
    return scaled_power


def _tied(bad):
    @jax.custom_vjp
    def tied_matmul(h, w):
        return jnp.tanh(h @ w)

    def fwd(h, w):
        y = jnp.tanh(h @ w)
        return y, (h, w, y)

    def bwd(res, g):
        h, w, y = res
        d = g * (1 - y ** 2)
        return d @ (w if bad else w.T), h.T @ d
    tied_matmul.defvjp(fwd, bwd)
    return tied_matmul


def _gated(bad):
    @jax.custom_vjp
    def gated(a, b):
        return a * jax.nn.sigmoid(b)

    def fwd(a, b):
        return gated(a, b), (a, b)

    def bwd(res, g):
        a, b = res
        s = jax.nn.sigmoid(b)
        da, db = g * s, g * a * s * (1 - s)
        return (db, da) if bad else (da, db)
    gated.defvjp(fwd, bwd)
    return gated


def _soft_clip(bad):
    @jax.custom_vjp
    def soft_clip(x):
        return 3.0 * jnp.tanh(x / 3.0)
    soft_clip.defvjp(lambda x: (soft_clip(x), x),
                     lambda x, g: ((1 - jnp.tanh(x / 3.0) ** 2) * g * (3.0 if bad else 1.0),))
    return soft_clip


def _dense_bias(bad):
    @jax.custom_vjp
    def dense_bias(x, b):
        return x + b

    def bwd(_, g):
        return g, (g[0] if bad else jnp.sum(g, axis=0))
    dense_bias.defvjp(lambda x, b: (x + b, None), bwd)
    return dense_bias


def _eqx_scale(bad):
    @eqx.filter_custom_vjp
    def eqx_scale(vjp_arg, scale):
        return vjp_arg * scale

    @eqx_scale.def_fwd
    def fwd(perturbed, vjp_arg, scale):
        return vjp_arg * scale, None

    @eqx_scale.def_bwd
    def bwd(residuals, g, perturbed, vjp_arg, scale):
        return -g * scale if bad else g * scale
    return eqx_scale


class BiasModule(nn.Module):
    """A Flax linen module holding a custom rule."""

    rule: object

    @nn.compact
    def __call__(self, x):
        b = self.param("b", nn.initializers.normal(1.0), (x.shape[-1],))
        return self.rule(x, b)  # site dense_bias


class ScaleModule(eqx.Module):
    """An Equinox module holding a filter_custom_vjp rule."""

    w: jax.Array
    rule: object = eqx.field(static=True)

    def __call__(self, x):
        return self.rule(x, self.w)  # site eqx_scale


def build(planted: frozenset = frozenset()):
    """``(fn, args, sites)``: a loss reaching every rule of :data:`PLANTED` (and a
    straight-through estimator), the mistaken version of those named in ``planted``."""
    bad = {name: name in planted for name in PLANTED}
    lse, ste = _lse(bad["stable_lse"]), _ste()
    power, tied = _power(bad["scaled_power"]), _tied(bad["tied_matmul"])
    gated, clip = _gated(bad["gated"]), _soft_clip(bad["soft_clip"])
    flax_bias = BiasModule(_dense_bias(bad["dense_bias"]), name="bias")
    xent = make_softmax_xent(0.01 if bad["softmax_xent"] else 0.0)
    k = jax.random.split(jax.random.key(0), 6)
    x = jax.random.normal(k[0], (4, 3))
    params = {"w": jax.random.normal(k[1], (3, 3)), "v": jax.random.normal(k[2], (3,)),
              "flax": flax_bias.init(k[3], x),
              "eqx": ScaleModule(jax.random.normal(k[4], (3,)), _eqx_scale(bad["eqx_scale"]))}
    y = jax.nn.one_hot(jnp.arange(8) % 3, 3)

    def loss(params, x, y):
        h = flax_bias.apply(params["flax"], x)
        h, _ = jax.lax.scan(lambda c, _: (tied(c, params["w"]), None), h, None,  # site tied_matmul
                            length=2)
        h = jax.checkpoint(lambda a: gated(a, params["v"] * a))(h)  # site gated
        h = jax.vmap(clip)(h)  # site soft_clip
        h = params["eqx"](h)
        s = jnp.sum(lse(h)) + jnp.sum(power(jnp.abs(h) + 1.0, 3))  # site stable_lse scaled_power
        z = jnp.concatenate([h, ste(h)])  # site straight_through
        return s + jnp.mean(xent(z, y))  # site softmax_xent

    return loss, (params, x, y), _sites()


def _sites() -> dict:
    """``{rule: "custom_rules_zoo.py:line"}`` from the ``# site`` comments of this file."""
    mark = "# " + "site "
    lines = inspect.getsourcelines(inspect.getmodule(_sites))[0]
    return {name: f"{__file__}:{i + 1}" for i, line in enumerate(lines) if mark in line
            for name in line.split(mark)[1].split()}


OPTIONS = {"expect_mismatch": ["straight_through"],
           "references": {"softmax_xent": softmax_xent_reference}}


def factory():
    """``--target custom_rules_zoo:factory --custom-rules``: a small program with a wrong sign
    planted in the stable log-sum-exp rule and a correct soft clip."""
    lse, clip = _lse(True), _soft_clip(False)
    return (lambda x: jnp.sum(lse(clip(x)))), (jnp.linspace(-2.0, 2.0, 6).reshape(2, 3),)
