"""Checks beyond float64/float32 autodiff of the primal: a custom rule whose primal autodiff
cannot differentiate is checked against a reference implementation (or reported skipped, not
crashed), and a low-precision rule is judged by its own error budget: its error and autodiff's
error in the same precision, both against float64 autodiff, pass when the first is at most twice
the second plus a small floor."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fbackprop as fb
from fbackprop.gradcheck import sample_point


def swish(scale=1.0):
    """x·σ(x) with a hand-written backward; ``scale`` ≠ 1 plants a relative error in it."""
    @jax.custom_vjp
    def f(x):
        return x * jax.nn.sigmoid(x)

    def fwd(x):
        s = jax.nn.sigmoid(x)
        return x * s, (x, s)

    def bwd(res, d):
        x, s = res
        return (scale * d * (s + x * s * (1 - s)),)

    f.defvjp(fwd, bwd)
    return f


X = np.random.default_rng(0).standard_normal((16, 8))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_right_low_precision_rule_passes_its_error_budget(dtype):
    report = fb.check_vjp(swish(), X, dtype=dtype)
    assert report.ok, str(report)
    assert report.budget["budget"] == 2.0 and report.dtype == dtype
    for row in report.rows:
        b = row.budget
        assert b["rule_error"] == row.max_rel and b["autodiff_error"] > 0
        assert row.tolerance == pytest.approx(2.0 * b["autodiff_error"] + 1e-4)
        assert b["ratio"] == pytest.approx(b["rule_error"] / b["autodiff_error"])
    assert "error budget" in str(report) and "ratio" in str(report)
    assert report.to_dict()["rows"][0]["budget"]["budget"] == 2.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_planted_one_percent_error_in_a_bfloat16_backward_fails(seed):
    right = fb.check_vjp(swish(), X, dtype="bfloat16", seed=seed)
    wrong = fb.check_vjp(swish(1.01), X, dtype="bfloat16", seed=seed)
    assert right.ok, str(right)
    assert not wrong.ok and wrong.failures[0].leaf == "[0]", str(wrong)
    # a fixed float32 tolerance would pass neither honestly: the rule's own error is ~3e-3
    assert max(r.max_rel for r in right.rows) > fb.gradcheck.TOLERANCE["float32"]


def test_the_budget_serves_layers_networks_and_lower_float32_matmuls():
    layer = fb.dense(6, 4, "tanh")
    params = layer.init(jax.random.PRNGKey(0))
    a = np.random.default_rng(1).standard_normal((5, 6))
    assert fb.check_layer(layer, params, a, dtype="bfloat16").ok
    doubled = layer._replace(D_param=lambda p, a, d: jax.tree.map(lambda g: 2 * g,
                                                                  layer.D_param(p, a, d)))
    bad = fb.check_layer(doubled, params, a, dtype="bfloat16")
    assert {r.rule for r in bad.failures} == {"D_param"}, str(bad)
    net = fb.mlp((4, 6, 3), "tanh")
    report = fb.check(net, "mse", *sample_point(net, "mse", 4), dtype="bfloat16")
    assert report.ok and report.budget and not any(r.pair == "fused–Euler" for r in report.rows)
    w = np.random.default_rng(2).standard_normal((6, 2))
    by_grad = fb.check_grad(lambda w, a: jnp.mean(jnp.tanh(a @ w) ** 2),
                            lambda w, a: a.T @ (jnp.tanh(a @ w) * (1 - jnp.tanh(a @ w) ** 2))
                            / (a.shape[0] * w.shape[1]) * 2, w, a, dtype="bfloat16")
    assert by_grad.ok and by_grad.rows[0].budget["ratio"] < 2, str(by_grad)
    lowered = fb.check_layer(layer, params, a, dtype="float32", matmul_precision="bfloat16")
    assert lowered.ok and lowered.budget["matmul_precision"] == "bfloat16"
    with pytest.raises(ValueError, match="applies to float32 checks"):
        fb.CheckOptions(matmul_precision="bfloat16")
    with pytest.raises(ValueError, match=r"dtype must be one of .*received 'int32'"):
        fb.CheckOptions(dtype="int32")
    with pytest.raises(ValueError, match="finite differences need float64"):
        fb.check_vjp(swish(), X, dtype="bfloat16", finite_differences=True)


def softplus_kernel(backward_sign=1.0, forward_scale=1.0):
    """softplus computed on the host (``pure_callback``, which autodiff cannot differentiate,
    like a Pallas or FFI kernel), with a hand-written backward σ(±x)."""
    def host(x):
        return (forward_scale * np.logaddexp(0.0, x)).astype(x.dtype)

    def primal(x):
        return jax.pure_callback(host, jax.ShapeDtypeStruct(x.shape, x.dtype), x)

    f = jax.custom_vjp(primal)
    f.defvjp(lambda x: (primal(x), x), lambda x, d: (d * jax.nn.sigmoid(backward_sign * x),))
    return f


def test_an_undifferentiable_primal_without_a_reference_is_skipped_not_crashed():
    report = fb.check_vjp(softplus_kernel(), X)
    assert report.status == "skipped" and not report.ok and not report.failures
    assert "primal not differentiable — pass a reference" in str(report)
    assert report.to_dict()["status"] == "skipped"
    assert fb.check_vjp(softplus_kernel(), X, raise_on_failure=True).status == "skipped"


def test_a_kernel_is_checked_against_its_reference_backward_and_forward():
    ok = fb.check_vjp(softplus_kernel(), X, reference=jax.nn.softplus)
    assert ok.ok, str(ok)
    assert {r.pair for r in ok.rows} >= {"kernel–reference", "hand–autodiff", "hand–JVP"}
    wrong_rule = fb.check_vjp(softplus_kernel(backward_sign=-1.0), X, reference=jax.nn.softplus)
    assert {(r.rule, r.leaf) for r in wrong_rule.failures} == {("∂J/∂p", "[0]"),
                                                                ("JVP consistency",
                                                                 "all arguments")}
    wrong_forward = fb.check_vjp(softplus_kernel(forward_scale=1.001), X,
                                 reference=jax.nn.softplus)
    assert {r.rule for r in wrong_forward.failures} == {"forward"}, str(wrong_forward)
    low = fb.check_vjp(softplus_kernel(), X, reference=jax.nn.softplus, dtype="bfloat16")
    assert low.ok and low.budget, str(low)
    with pytest.raises(TypeError, match="reference must return what f returns"):
        fb.check_vjp(softplus_kernel(), X, reference=lambda x: jnp.sum(x))
    with pytest.raises(TypeError, match="reference must be a function"):
        fb.check_vjp(softplus_kernel(), X, reference=3.0)
    with pytest.raises(TypeError, match="autodiff cannot differentiate the reference"):
        fb.check_vjp(softplus_kernel(), X, reference=softplus_kernel().fun)


def test_recurrent_time_rows_are_judged_step_by_step_against_the_budget():
    layer = fb.rnn_layer(3, 4, "tanh")
    params = layer.init(jax.random.PRNGKey(0))
    a = np.random.default_rng(0).standard_normal((2, 5, 3))
    (row,) = [r for r in fb.check_layer(layer, params, a, dtype="bfloat16").rows
              if r.rule == "time_deltas"]
    assert row.status == "pass" and "over budget" not in row.note and len(row.steps) == 5
    doubled = layer._replace(probes=layer.probes._replace(
        time_deltas=lambda p, a, d: {k: 2 * v for k, v in
                                     layer.probes.time_deltas(p, a, d).items()}))
    (row,) = [r for r in fb.check_layer(doubled, params, a, dtype="bfloat16").rows
              if r.rule == "time_deltas"]
    assert row.status == "fail" and "5 step(s) over budget" in row.note, row.note
