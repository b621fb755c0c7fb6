"""check_custom_rules: every custom rule a run reaches, checked where it runs (issue 19).

The planted-mistake table: tests/custom_rules_zoo.py holds rules written the way projects write
them, reached through scan, checkpoint, vmap, Flax linen, Equinox and a Pallas kernel; each
planted mistake must be reported at exactly its call site and nothing else may fail.
"""
import json
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import fbackprop as fb
from fbackprop.gradcheck import jaxpr_reader
from fbackprop.kernels.softmax_xent import make_softmax_xent, softmax_xent, softmax_xent_reference

sys.path.insert(0, str(Path(__file__).parent))
import custom_rules_zoo as zoo  # noqa: E402


def _by_name(report):
    return {c.name: c for c in report.checks}


def test_planted_mistakes_are_reported_at_their_call_sites_and_nothing_else_fails():
    fn, args, sites = zoo.build()
    clean = fb.check_custom_rules(fn, *args, **zoo.OPTIONS)
    got = _by_name(clean)
    assert set(got) == set(zoo.PLANTED) | {"straight_through"}
    assert clean.ok and {c.status for c in clean.checks} == {"ok", "expected mismatch"}
    assert got["straight_through"].status == "expected mismatch"
    assert {name: c.called_at for name, c in got.items()} == sites
    assert got["tied_matmul"].calls == 2  # two steps of the scan, the first one checked
    assert "bias" in got["dense_bias"].scope and "vmap" in got["soft_clip"].scope
    assert got["softmax_xent"].mode == "reference" and got["gated"].mode == "reverse"
    assert "held fixed" in got["eqx_scale"].reason  # equinox's non-differentiable *args

    fn, args, sites = zoo.build(frozenset(zoo.PLANTED))
    planted = fb.check_custom_rules(fn, *args, **zoo.OPTIONS)
    failing = {c.name: c.called_at for c in planted.failing}
    assert failing == {name: sites[name] for name in zoo.PLANTED}
    assert _by_name(planted)["straight_through"].status == "expected mismatch"
    table = str(planted)
    assert "FAILED: 8 check(s)" in table and "custom_rules_zoo.py:184" in table


def test_odeint_adjoint_is_reached_and_checked_in_forward_mode():
    from jax.experimental.ode import odeint

    def loss(y0, theta):
        ys = odeint(lambda y, t, th: -th * y, y0, jnp.array([0.0, 0.5]), theta,
                    rtol=1e-6, atol=1e-6)
        return jnp.sum(ys ** 2)

    report = fb.check_custom_rules(loss, jnp.array([1.0, 2.0]), jnp.asarray(0.7),
                                   directions=2, tolerance={"_odeint": 1e-3})
    (c,) = report.checks
    assert c.name == "_odeint" and c.mode == "forward" and c.status == "ok", str(report)
    assert all(r.pair == "hand–JVP" and r.tolerance == 1e-3 for r in c.report.rows)


def test_bf16_kernel_passes_its_error_budget_and_a_planted_1_percent_error_fails():
    z = jax.random.normal(jax.random.key(1), (8, 5)).astype(jnp.bfloat16)
    y = jax.nn.one_hot(jnp.arange(8) % 5, 5, dtype=jnp.bfloat16)
    refs = {"softmax_xent": softmax_xent_reference}
    good = fb.check_custom_rules(lambda z, y: jnp.mean(softmax_xent(z, y)), z, y,
                                 references=refs)
    assert good.ok and good.checks[0].mode == "budget", str(good)
    bad_kernel = make_softmax_xent(0.01)
    bad = fb.check_custom_rules(lambda z, y: jnp.mean(bad_kernel(z, y)), z, y, references=refs)
    (c,) = bad.failing
    assert c.mode == "budget" and "ratio" in c.reason


def _tanh_scale(factor=1.0):
    @jax.custom_vjp
    def tanh_scale(x, w):
        return jnp.tanh(x) * w

    def bwd(r, g):
        x, w = r
        return g * (1 - jnp.tanh(x) ** 2) * w * factor, jnp.sum(g * jnp.tanh(x), 0)

    tanh_scale.defvjp(lambda x, w: (tanh_scale(x, w), (x, w)), bwd)
    return tanh_scale


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_without_a_reference_uses_check_vjps_budget(dtype):
    # the same budget as fb.check_vjp: both errors against float64 autodiff of the primal
    x = jax.random.normal(jax.random.key(0), (6, 5)).astype(dtype)
    good = fb.check_custom_rules(lambda x, w: jnp.sum(_tanh_scale()(x, w) ** 2), x, x[0])
    (c,) = good.checks
    assert c.status == "ok" and c.mode == "budget" and c.report.budget["budget"] == 2.0, str(good)
    assert all(r.budget["ratio"] <= 2 for r in c.report.rows if r.budget)
    bad = fb.check_custom_rules(lambda x, w: jnp.sum(_tanh_scale(1.05)(x, w) ** 2), x, x[0])
    assert [c.name for c in bad.failing] == ["tanh_scale"] and "ratio" in bad.failing[0].reason
    # a primal traced with typed constants has no float64 version: skipped, asking a reference
    @jax.custom_vjp
    def swish(x):
        return x * jax.nn.sigmoid(1.5 * x)  # 1.5 is a {dtype} literal in the captured primal

    swish.defvjp(lambda x: (swish(x), x), lambda x, g: (jax.grad(
        lambda x: jnp.sum(x * jax.nn.sigmoid(1.5 * x)))(x) * g,))
    (c,) = fb.check_custom_rules(lambda x: jnp.sum(swish(x)), x).checks
    assert c.status == "skipped" and "pass a reference" in c.reason, c.reason


@jax.custom_vjp
def _wrong_shape(x, w):
    return x * w


_wrong_shape.defvjp(lambda x, w: (x * w, (x, w)), lambda r, g: (g * r[1], jnp.sum(g * r[0])))


@jax.custom_vjp
def _raises(x):
    return 2 * x


def _raising_bwd(res, g):
    raise ValueError("boom in bwd")


_raises.defvjp(lambda x: (2 * x, None), _raising_bwd)


@jax.custom_vjp
def _times_int(x, n):
    return x * n


_times_int.defvjp(lambda x, n: (x * n, n), lambda n, g: (g * n, None))


@jax.custom_vjp
def _noisy(x, key):
    return x + 0.1 * jax.random.normal(key, x.shape)


_noisy.defvjp(lambda x, k: (_noisy(x, k), None), lambda r, g: (g, None))


@jax.custom_vjp
def _host_square(x):
    return jax.pure_callback(lambda v: v ** 2, jax.ShapeDtypeStruct(x.shape, x.dtype), x)


_host_square.defvjp(lambda x: (_host_square(x), x), lambda x, g: (2 * x * g,))


def _bad_input_program(x, w, opts):
    return (jnp.sum(_wrong_shape(x, w)) + jnp.sum(_raises(x)) * opts["scale"]
            + jnp.sum(_times_int(x, jnp.arange(3))) + jnp.sum(_noisy(x, jax.random.key(1)))
            + jnp.sum(_host_square(x)))


def test_bad_rules_fail_by_name_and_the_other_rules_are_still_checked():
    report = fb.check_custom_rules(_bad_input_program, jnp.ones(3), jnp.full(3, 2.0),
                                   {"scale": 2.0, "name": "not an array"})
    got = _by_name(report)
    assert got["_wrong_shape"].status == "FAIL" and "output[1]" in got["_wrong_shape"].reason
    assert got["_raises"].status == "FAIL" and "boom in bwd" in got["_raises"].reason
    assert got["_times_int"].status == "ok" and "no derivative" in got["_times_int"].reason
    assert got["_noisy"].status == "ok" and "key" in got["_noisy"].reason
    assert got["_host_square"].status == "skipped"
    assert "primal not differentiable — pass a reference" in got["_host_square"].reason
    data = json.loads(report.to_json())
    assert data["ok"] is False and set(data["failing"]) == {"_wrong_shape", "_raises"}
    with pytest.raises(fb.GradientCheckError, match="_wrong_shape"):
        report.raise_if_failed()
    with pytest.raises(fb.GradientCheckError, match="_raises"):
        fb.check_custom_rules(_bad_input_program, jnp.ones(3), jnp.full(3, 2.0), {"scale": 2.0},
                              raise_on_failure=True)
    with pytest.raises(AssertionError, match="_raises"):
        fb.testing.assert_custom_rules(_bad_input_program, jnp.ones(3), jnp.full(3, 2.0),
                                       {"scale": 2.0})


def test_no_rules_fn_that_raises_and_bad_options():
    none = fb.check_custom_rules(lambda x: jnp.sum(x ** 2), jnp.ones(3))
    assert none.ok and not none.checks and "no jax.custom_vjp" in str(none)
    with pytest.raises(TypeError) as err:
        fb.check_custom_rules(lambda x: x["a"], jnp.ones(3))
    assert any("while check_custom_rules" in n for n in err.value.__notes__)
    with pytest.raises(ValueError, match="calls must be"):
        fb.check_custom_rules(jnp.sum, jnp.ones(3), calls=0)
    with pytest.raises(ValueError, match="tolerance"):
        fb.check_custom_rules(jnp.sum, jnp.ones(3), tolerance=-1.0)
    with pytest.raises(TypeError, match="reference function"):
        fb.check_custom_rules(jnp.sum, jnp.ones(3), references={"f": 3})
    with pytest.raises(TypeError, match="callable"):
        fb.check_custom_rules("loss", jnp.ones(3))
    with pytest.raises(TypeError, match="unexpected keyword"):  # dtype is each call's own
        fb.check_custom_rules(jnp.sum, jnp.ones(3), dtype="float32")
    with pytest.raises(TypeError, match="fb.CheckOptions"):
        fb.check_custom_rules(jnp.sum, jnp.ones(3), options={"seed": 1})
    with pytest.raises(ValueError, match="budget"):  # the shared options check it
        fb.check_custom_rules(jnp.sum, jnp.ones(3), budget=0)
    with pytest.raises(RuntimeError, match="JAX 0.99.0"):
        jaxpr_reader.require_known_jax("0.99.0")
    jaxpr_reader.require_known_jax("0.11.0")  # the GPU machine's series is accepted


@jax.custom_jvp
def _inner(x):
    return 3.0 * x


_inner.defjvp(lambda p, t: (3.0 * p[0], -3.0 * t[0]))  # planted: wrong sign


@jax.custom_jvp
def _outer(x):
    return jnp.sum(jnp.tanh(_inner(x)))


@_outer.defjvp
def _outer_jvp(p, t):
    (x,), (tx,) = p, t
    y = _inner(x)
    return jnp.sum(jnp.tanh(y)), jnp.sum((1 - jnp.tanh(y) ** 2) * 3.0 * tx)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _scaled(x, k):
    return x * k


_scaled.defvjp(lambda x, k: (x * k, None), lambda k, r, g: (g * k,))


def test_nested_rules_loops_branches_and_the_calls_option():
    def prog(x, n):
        a = jax.lax.fori_loop(0, n, lambda i, c: c + _outer(x), 0.0)  # a while loop: n traced
        b = jax.lax.switch(1, [lambda: 0.0, lambda: jnp.sum(_scaled(x, 2.0))])
        c = jax.jit(lambda x: jax.lax.scan(lambda c, xi: (c + _scaled(xi, 3.0), None), 0.0,
                                           x)[0])(x)
        return a + b + c

    x = jnp.array([0.1, -0.2, 0.3])
    report = fb.check_custom_rules(prog, x, jnp.asarray(2), calls="all")
    by_site = {}
    for c in report.checks:
        by_site.setdefault((c.name, c.called_at), []).append(c)
    counts = sorted((name, len(cs), cs[0].calls) for (name, _), cs in by_site.items())
    assert counts == [("_inner", 2, 2), ("_outer", 2, 2), ("_scaled", 1, 1), ("_scaled", 3, 3)]
    # the wrong inner rule fails at its own call site; the outer rule, whose primal holds it,
    # is compared with autodiff of its primal with the inner rule set aside, and passes
    assert {c.name for c in report.failing} == {"_inner"}
    assert all(c.status == "ok" for c in report.checks if c.name == "_outer")
    two = fb.check_custom_rules(prog, x, jnp.asarray(2), calls=2)
    assert len(two.checks) == 2 + 2 + 1 + 2
    # seeded and deterministic: the same run gives the same report
    again = fb.check_custom_rules(prog, x, jnp.asarray(2), calls=2)
    assert again.to_json() == two.to_json()


def test_flax_nnx_module_rule_is_found():
    from flax import nnx

    rule = zoo._gated(bad=True)

    class Gate(nnx.Module):
        def __init__(self):
            self.v = nnx.Param(jnp.array([0.5, -1.0, 2.0]))

        def __call__(self, x):
            return jnp.sum(rule(x, self.v[...]))

    report = fb.check_custom_rules(lambda m, x: m(x), Gate(), jnp.array([1.0, 2.0, 3.0]))
    (c,) = report.checks
    assert c.name == "gated" and c.status == "FAIL" and "[1]" in c.reason


def test_cli_custom_rules_exit_status_and_json(capsys, monkeypatch):
    from fbackprop import cli

    monkeypatch.chdir(Path(__file__).parent)  # the target module imports from the cwd
    code = cli.main(["check", "--target", "custom_rules_zoo:factory", "--custom-rules", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["report"]["failing"] == ["stable_lse"]
    assert {c["name"]: c["status"] for c in data["report"]["checks"]} == {
        "soft_clip": "ok", "stable_lse": "FAIL"}
    assert cli.main(["check", "--custom-rules"]) == 2
    assert "--target" in capsys.readouterr().err


@pytest.mark.parametrize("example", ["flax", "equinox"])
def test_checking_md_examples_run(example):
    text = (Path(__file__).parent.parent / "docs" / "CHECKING.md").read_text()
    block = text.split(f"<!-- executed: {example} -->\n```python\n")[1].split("```")[0]
    exec(compile(block, f"CHECKING.md:{example}", "exec"), {"__name__": f"doc_{example}"})
