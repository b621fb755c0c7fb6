"""fbackprop.check and check_grad: each classic mistake, planted in one layer of an otherwise
correct user-written network, is caught and located in that layer; the three-way comparison
tells a wrong rule from finite-difference noise; kinks are resampled or reported, never failed;
recurrent layers get per-time-step rows."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fbackprop as fb
from fbackprop.gradcheck import sample_point

B = 4  # batch > 1 so that a batch sum and a batch mean differ

ACTS = {  # g and g' written by hand
    "tanh": (jnp.tanh, lambda z: 1 - jnp.tanh(z) ** 2),
    "sigmoid": (jax.nn.sigmoid, lambda z: jax.nn.sigmoid(z) * (1 - jax.nn.sigmoid(z))),
    "identity": (lambda z: z, jnp.ones_like),
}


def user_dense(n_in, n_out, act, mistake=None):
    """A user's hand-written dense layer g(W a + b), with one optional planted mistake."""
    g, Dg = ACTS[act]

    def init(key):
        return {"W": jax.random.normal(key, (n_out, n_in)) / np.sqrt(n_in), "b": jnp.zeros(n_out)}

    def z_of(p, a):
        return a @ p["W"].T + p["b"]

    def apply(p, a):
        return g(z_of(p, a))

    def D_input(p, a, d):
        delta = d * Dg(z_of(p, a))
        if mistake == "missing σ' in the propagated delta":
            return d @ p["W"]
        if mistake == "wrong sign of the propagated delta":
            return -(delta @ p["W"])
        return delta @ p["W"]

    def D_param(p, a, d):
        delta = d * Dg(z_of(p, a))
        dW, db = delta.T @ a, jnp.sum(delta, axis=0)
        if mistake == "transposed weight gradient":
            dW = a.T @ delta
        elif mistake == "scaled weight gradient":
            dW = 2 * dW
        elif mistake == "wrong sign of the weight gradient":
            dW = -dW
        elif mistake == "bias gradient not summed over the batch":
            db = delta
        elif mistake == "batch mean taken again (d already carries 1/batch)":
            dW, db = dW / a.shape[0], db / a.shape[0]
        return {"W": dW, "b": db}

    return fb.Layer(init, apply, D_input, D_param, name=f"user_dense({n_in}→{n_out}, {act})")


def user_centering(n, mistake=None):
    """f p a = a − mean_batch(a) + b: its D_input contains a batch mean, d − mean_batch(d) (each
    output row depends on every input row through the mean). The planted mistake writes the sum
    where that mean was meant."""
    def apply(p, a):
        return a - jnp.mean(a, axis=0, keepdims=True) + p["b"]

    def D_input(p, a, d):
        if mistake == "batch sum where the batch mean was meant":
            return d - jnp.sum(d, axis=0, keepdims=True)
        return d - jnp.mean(d, axis=0, keepdims=True)

    def D_param(p, a, d):
        return {"b": jnp.sum(d, axis=0)}

    return fb.Layer(lambda key: {"b": jnp.zeros(n)}, apply, D_input, D_param,
                    name=f"centering({n})")


def user_net(plant=None, where=None):
    """Four hand-written layers (the second is square, so a transposed dW keeps its shape)."""
    makers = [lambda m: user_dense(4, 5, "tanh", m), lambda m: user_dense(5, 5, "sigmoid", m),
              lambda m: user_centering(5, m), lambda m: user_dense(5, 3, "identity", m)]
    return fb.serial(*(make(plant if i == where else None) for i, make in enumerate(makers)),
                     input_shape=(4,), name="user net")


# (mistake, layer it is planted in, the rule that must fail there). On the batch mean: the
# recurrence applies the loss's 1/batch once, to d_L, so a layer's D_param must *sum* over the
# batch. The mean-vs-sum slip therefore shows up in a per-layer rule in two honest ways: a rule
# whose forward really contains a batch mean (the centering layer) written with the sum, and a
# D_param that averages over the batch again, as if d did not already carry the 1/batch.
PLANTED = [
    ("missing σ' in the propagated delta", 1, "D_input"),
    ("transposed weight gradient", 1, "D_param"),      # square W: same shape, wrong values
    ("transposed weight gradient", 0, "D_param"),      # (4, 5) for (5, 4): a shape failure
    ("scaled weight gradient", 3, "D_param"),
    ("batch sum where the batch mean was meant", 2, "D_input"),
    ("batch mean taken again (d already carries 1/batch)", 0, "D_param"),
    ("bias gradient not summed over the batch", 3, "D_param"),
    ("wrong sign of the weight gradient", 1, "D_param"),
    ("wrong sign of the propagated delta", 3, "D_input"),
]


def _point(net, cost="mse", seed=0):
    return sample_point(net, cost, B, seed=seed)


def test_the_correct_user_network_passes():
    net = user_net()
    report = fb.check(net, "mse", *_point(net), jit=False)
    assert report.ok and report.failing_layers == ()
    rules = {(r.layer, r.rule) for r in report.rows}
    assert {(l, rule) for l in range(4) for rule in ("D_param", "D_input")} <= rules


@pytest.mark.parametrize("mistake, layer, rule", PLANTED,
                         ids=[f"{m[:30]}@{l}" for m, l, _ in PLANTED])
def test_planted_mistake_is_located_in_its_layer(mistake, layer, rule):
    net = user_net(mistake, layer)
    report = fb.check(net, "mse", *_point(net), jit=False)
    assert not report.ok
    assert report.failing_layers == (layer,)
    in_layer = [r for r in report.failures if r.layer is not None]
    assert {r.rule for r in in_layer} == {rule}
    # the cost's derivative and every other layer's rules pass at the autodiff deltas
    assert all(r.status == "pass" for r in report.rows if r.layer not in (layer, None))
    with pytest.raises(fb.GradientCheckError, match=f"layer {layer}: user_dense|layer {layer}: "
                                                    f"centering") as err:
        report.raise_if_failed()
    first = report.first_failure()
    assert first.layer == layer and f"{first.rule} {first.leaf}" in str(err.value)
    assert (f"worst element {first.index}" if first.index else first.note) in str(err.value)


def test_wrong_shapes_are_reported_with_a_hint():
    report = fb.check(user_net("transposed weight gradient", 0), "mse",
                      *_point(user_net()), jit=False)
    (row,) = [r for r in report.failures if r.layer == 0]
    assert row.leaf == "['W']"
    assert "returned shape (4, 5), expected (5, 4) (transposed?)" in row.note
    report = fb.check(user_net("bias gradient not summed over the batch", 3), "mse",
                      *_point(user_net()), jit=False)
    (row,) = [r for r in report.failures if r.layer == 3]
    assert row.leaf == "['b']" and "not summed over the batch" in row.note
    # the whole hand-written recurrence cannot run; its rows say so instead of crashing
    assert all("not computed" in r.note for r in report.failures if r.layer is None)


def test_layer_0_input_rule_only_affects_the_input_gradient():
    net = user_net("wrong sign of the propagated delta", 0)
    report = fb.check(net, "mse", *_point(net), jit=False)
    assert report.failing_layers == (0,)
    (row,) = report.failures
    assert row.rule == "D_input" and "only affects ∂J/∂x" in row.note
    # every parameter gradient of the whole recurrence is still right
    assert all(r.status == "pass" for r in report.rows if r.layer is None)


def test_raise_on_failure_names_layer_leaf_and_index():
    net = user_net("scaled weight gradient", 3)
    with pytest.raises(fb.GradientCheckError) as err:
        fb.check(net, "mse", *_point(net), raise_on_failure=True)
    assert isinstance(err.value, ValueError)
    message = str(err.value)
    assert "layer 3: user_dense(5→3, identity), D_param ['W']" in message
    assert "worst element (" in message and "> tolerance 1e-10" in message
    assert err.value.report.failing_layers == (3,)


def test_a_wrong_cost_derivative_is_named_as_the_cost():
    half = fb.Cost("half_mse", fb.costs.mse.C, lambda y, a: 0.5 * (a - y))
    net = user_net()
    report = fb.check(net, half, *_point(net), jit=False)
    assert report.failing_layers == ()
    assert {r.where for r in report.failures} == {"cost half_mse", "∂J/∂p (whole recurrence)"}


def test_three_way_says_the_hand_written_rule_is_wrong():
    net = user_net("scaled weight gradient", 3)
    report = fb.check(net, "mse", *_point(net), finite_differences=True)
    w = {r.pair: r for r in report.rows if r.layer is None and r.leaf == "[3]['W']"}
    assert w["hand–autodiff"].status == "fail"
    assert "hand-written gradient is wrong" in w["hand–autodiff"].note
    assert w["hand–FD"].status == "fail" and w["autodiff–FD"].status == "pass"
    # every other leaf: all three agree, to the FD tolerance
    others = [r for r in report.rows
              if r.layer is None and r.leaf not in ("[3]['W']", "all leaves")]
    assert others and all(r.status == "pass" for r in others)


def test_one_wrong_element_cannot_hide_from_element_wise_differences():
    good = fb.dense(6, 5, "tanh")

    def D_param(p, a, d):  # right everywhere except one element of W
        g = good.D_param(p, a, d)
        return {**g, "W": g["W"].at[3, 2].add(1e-4 * jnp.max(jnp.abs(g["W"])))}

    net = fb.serial(fb.dense(3, 6, "tanh"), good._replace(D_param=D_param, name="one-off"),
                    input_shape=(3,))
    report = fb.check(net, "mse", *_point(net), finite_differences=True, fd_elements=4)
    assert report.failing_layers == (1,)
    hand_fd = next(r for r in report.rows if r.leaf == "[1]['W']" and r.pair == "hand–FD")
    auto_fd = next(r for r in report.rows if r.leaf == "[1]['W']" and r.pair == "autodiff–FD")
    assert hand_fd.status == "fail" and hand_fd.index == (3, 2)  # 4 of 30 elements checked
    assert auto_fd.status == "pass"


def test_fd_noise_is_not_a_rule_failure():
    # a huge step makes central differences inaccurate; hand-written and autodiff still agree
    net = fb.mlp((3, 4, 2), "tanh")
    report = fb.check(net, "mse", *_point(net), finite_differences=True, eps=0.3)
    assert report.ok
    noisy = [r for r in report.rows if r.status == "fd-noise"]
    assert noisy and {r.pair for r in noisy} == {"hand–FD", "autodiff–FD"}
    assert any("FD noise" in r.note for r in report.rows)


def test_fd_is_refused_in_float32():
    net = fb.mlp((3, 2), "tanh")
    with pytest.raises(ValueError, match=r"finite differences need float64.*dtype='float32'.*"
                                         r"pass dtype='float64'"):
        fb.check(net, "mse", *_point(net), dtype="float32", finite_differences=True)


@pytest.mark.parametrize("act, cost, dtype", [
    ("relu", "softmax_cross_entropy", "float64"), ("sigmoid", "mse", "float32"),
])
def test_builtin_network_passes_with_dtype_tolerance(act, cost, dtype):
    net = fb.mlp((4, 6, 3), act, "identity" if cost != "mse" else act)
    params, x, y = _point(net, cost, seed=3)
    report = fb.check(net, cost, params, x, y, dtype=dtype)
    assert report.ok and report.tolerance == fb.gradcheck.TOLERANCE[dtype]
    assert all(r.tolerance == report.tolerance for r in report.rows)
    assert f"tolerance {report.tolerance:.0e}" in str(report)


def test_report_json_and_table():
    net = user_net("scaled weight gradient", 3)
    report = fb.check(net, "mse", *_point(net), jit=False)
    data = json.loads(report.to_json())
    assert data["ok"] is False and data["failing_layers"] == [3]
    assert data["tolerance"] == 1e-10 and data["dtype"] == "float64"
    row = next(r for r in data["rows"] if r["layer"] == 3 and r["leaf"] == "['W']")
    assert row["status"] == "fail" and len(row["index"]) == 2 and row["max_rel"] > 1e-10
    text = str(report)
    assert "layer 3: user_dense(5→3, identity)" in text and "FAIL" in text
    assert "failing layers [3]" in text


# --- kinks -------------------------------------------------------------------------------------

def _relu_point():
    """A ReLU net with example 0 exactly on the kink: x₀ = 0 and b = 0 give z = 0, where
    ReLU'(0) = 0 (hand-written and jax.nn.relu alike) but finite differences see the slope ½."""
    net = fb.mlp((3, 5, 2), "relu", "identity")
    params, x, y = _point(net, "softmax_cross_entropy", seed=2)
    params = ({**params[0], "b": jnp.zeros(5)}, params[1])
    return net, params, x.at[0].set(0.0), y


def test_a_point_on_a_relu_kink_is_resampled():
    net, params, x, y = _relu_point()
    report = fb.check(net, "softmax_cross_entropy", params, x, y, finite_differences=True)
    assert report.ok and all(r.status == "pass" for r in report.rows)
    assert report.kinks["resampled"] >= 1 and report.kinks["perturbed_examples"] == [0]
    assert report.kinks["distance"][0] > report.kinks["kink_tol"]


def test_a_point_left_on_a_kink_is_reported_not_failed():
    net, params, x, y = _relu_point()
    report = fb.check(net, "softmax_cross_entropy", params, x, y, finite_differences=True,
                      resample=0)
    assert report.ok and report.at_kink == (0,)
    at_kink = [r for r in report.rows if r.status == "kink"]
    assert at_kink and all(r.layer in (0, None) for r in at_kink)
    assert all(r.max_rel > r.tolerance for r in at_kink)  # the kink did change the FD slope
    # hand-written and autodiff agree at the kink: ReLU'(0) = 0 on both sides
    assert all(r.status == "pass" for r in report.rows if r.pair == "hand–autodiff")
    assert "AT A KINK" in str(report)


def test_a_kink_in_the_parameters_cannot_be_resampled_away():
    net, params, x, y = _relu_point()
    W = params[0]["W"].at[1].set(0.0)  # unit 1 has z = 0 for every input
    report = fb.check(net, "softmax_cross_entropy", ({**params[0], "W": W}, params[1]), x, y,
                      finite_differences=True, resample=2)
    assert report.kinks["resampled"] == 2 and report.at_kink == (0,)
    assert report.ok and any(r.status == "kink" for r in report.rows)


# --- recurrent layers: per-time-step rows ------------------------------------------------------

def user_rnn(n_in, n_h, mistake=False):
    """A tanh RNN h_τ = tanh(W_x x_τ + W_h h_{τ−1} + b), h_{−1} = 0, on (batch, T, n_in), with
    hand-written backpropagation through time. ``mistake`` drops tanh' from the delta carried
    to h_{τ−1}, so every step but the last gets a wrong delta."""
    def init(key):
        kx, kh = jax.random.split(key)
        return {"Wx": jax.random.normal(kx, (n_h, n_in)) / np.sqrt(n_in),
                "Wh": jax.random.normal(kh, (n_h, n_h)) / np.sqrt(n_h), "b": jnp.zeros(n_h)}

    def run(p, a, offsets=None):
        h, hs = jnp.zeros((a.shape[0], n_h), a.dtype), []
        for t in range(a.shape[1]):
            h = jnp.tanh(a[:, t] @ p["Wx"].T + h @ p["Wh"].T + p["b"])
            h = h if offsets is None else h + offsets[:, t]  # instrumented: ∂J/∂offset = ∂J/∂h_τ
            hs.append(h)
        return jnp.stack(hs, axis=1)

    def bptt(p, a, d):
        hs = run(p, a)
        carry, dh, dz = jnp.zeros_like(hs[:, 0]), [], []
        for t in reversed(range(a.shape[1])):
            dh_t = d[:, t] + carry                     # ∂J/∂h_τ: direct + through h_{τ+1}
            dz_t = dh_t * (1 - hs[:, t] ** 2)
            carry = (dh_t if mistake else dz_t) @ p["Wh"]
            dh.insert(0, dh_t)
            dz.insert(0, dz_t)
        dh, dz = jnp.stack(dh, axis=1), jnp.stack(dz, axis=1)
        h_prev = jnp.concatenate([jnp.zeros_like(hs[:, :1]), hs[:, :-1]], axis=1)
        rows = dz.reshape(-1, n_h)
        grads = {"Wx": rows.T @ a.reshape(-1, n_in), "Wh": rows.T @ h_prev.reshape(-1, n_h),
                 "b": rows.sum(axis=0)}
        return dh, grads, dz @ p["Wx"]

    probes = fb.Probes(time_deltas=lambda p, a, d: {"h": bptt(p, a, d)[0]},
                       offset_apply=lambda p, a, offsets: run(p, a, offsets["h"]))
    return fb.Layer(init, run, lambda p, a, d: bptt(p, a, d)[2], lambda p, a, d: bptt(p, a, d)[1],
                    name=f"rnn({n_in}→{n_h})", probes=probes)


T = 5


def rnn_net(mistake=False):
    return fb.serial(fb.dense(3, 3, "tanh"), user_rnn(3, 4, mistake), fb.dense(4, 2, "identity"),
                     input_shape=(T, 3), name="rnn net")


def test_correct_rnn_has_passing_time_rows():
    net = rnn_net()
    report = fb.check(net, "mse", *_point(net))
    assert report.ok
    (row,) = [r for r in report.rows if r.rule == "time_deltas"]
    assert row.layer == 1 and row.leaf == "h" and len(row.steps) == T
    assert max(row.steps) <= row.tolerance and "worst τ" in row.note


def test_rnn_mistake_is_located_in_its_layer_and_steps():
    net = rnn_net(mistake=True)
    report = fb.check(net, "mse", *_point(net))
    assert report.failing_layers == (1,)
    (row,) = [r for r in report.rows if r.rule == "time_deltas"]
    assert row.status == "fail"
    assert row.steps[T - 1] <= row.tolerance  # the last step has no carried delta: right
    assert all(s > row.tolerance for s in row.steps[:T - 1])
    assert row.index[1] == int(np.argmax(row.steps)) and f"τ ∈ {list(range(T - 1))}" in row.note


# --- check_grad: a loss and a gradient of the user's own ---------------------------------------

def logistic_loss(p, x, y):  # Fleuret: mean_n softplus(−y_n (w·x_n + b))
    return jnp.mean(jax.nn.softplus(-y * (x @ p["w"] + p["b"])))


def logistic_grad(p, x, y):  # ∂/∂w = mean_n −y_n σ(−y_n s_n) x_n
    u = -y * jax.nn.sigmoid(-y * (x @ p["w"] + p["b"])) / x.shape[0]
    return {"w": x.T @ u, "b": jnp.sum(u)}


def _logistic_point(rng):
    x = rng.standard_normal((8, 3))
    return {"w": rng.standard_normal(3), "b": np.array(0.3)}, x, np.sign(rng.standard_normal(8))


def test_check_grad_passes_a_right_gradient_three_ways(rng):
    report = fb.check_grad(logistic_loss, logistic_grad, *_logistic_point(rng),
                           finite_differences=True)
    assert report.ok and {r.leaf for r in report.rows} == {"['b']", "['w']", "all leaves"}
    assert {r.pair for r in report.rows} == {"hand–autodiff", "hand–FD", "autodiff–FD"}


def test_check_grad_names_the_wrong_leaf(rng):
    def grad_without_mean(p, x, y):  # forgets the 1/N of the mean on w
        g = logistic_grad(p, x, y)
        return {**g, "w": g["w"] * x.shape[0]}

    report = fb.check_grad(logistic_loss, grad_without_mean, *_logistic_point(rng))
    assert [r.leaf for r in report.failures] == ["['w']"]
    with pytest.raises(fb.GradientCheckError, match=r"\['w'\].*worst element \(\d,\)"):
        report.raise_if_failed()


def test_check_grad_tells_a_wrong_autodiff_rule_apart(rng):
    @jax.custom_jvp
    def softplus(s):
        return jax.nn.softplus(s)

    softplus.defjvp(lambda primals, tangents: (softplus(primals[0]), 2.0 * tangents[0]))

    def loss(p, x, y):  # same value, wrong custom derivative: autodiff is the odd one out
        return jnp.mean(softplus(-y * (x @ p["w"] + p["b"])))

    report = fb.check_grad(loss, logistic_grad, *_logistic_point(rng), finite_differences=True)
    assert not report.ok
    assert any("autodiff is the odd one out" in r.note for r in report.rows)


def test_check_grad_rejects_bad_input(rng):
    p, x, y = _logistic_point(rng)
    with pytest.raises(TypeError, match=r"(?s)wrong pytree structure.*expected.*received"):
        fb.check_grad(logistic_loss, lambda p, x, y: [logistic_grad(p, x, y)["w"]], p, x, y)
    with pytest.raises(ValueError, match=r"loss must return a scalar, received shape \(8,\)"):
        fb.check_grad(lambda p, x, y: x @ p["w"], logistic_grad, p, x, y)
    with pytest.raises(TypeError, match="grad_fn must be a function"):
        fb.check_grad(logistic_loss, None, p, x, y)
    with pytest.raises(ValueError, match="finite differences need float64"):
        fb.check_grad(logistic_loss, logistic_grad, p, x, y, dtype="float32",
                      finite_differences=True)


def test_check_rejects_bad_input():
    net = fb.mlp((3, 2), "tanh")
    params, x, y = _point(net)
    with pytest.raises(TypeError, match=r"net must be an fbackprop.Network.*check_grad"):
        fb.check(net.apply, "mse", params, x, y)
    with pytest.raises(ValueError, match=r"dtype must be one of"):
        fb.check(net, "mse", params, x, y, dtype="int8")
    with pytest.raises(ValueError, match=r"directions must be a positive int, received 0"):
        fb.check(net, "mse", params, x, y, finite_differences=True, directions=0)
    with pytest.raises(ValueError, match=r"tolerance must be a finite number ≥ 0.*received -1"):
        fb.check(net, "mse", params, x, y, tolerance=-1)
    with pytest.raises(ValueError, match=r"width 5, but the network expects 3"):
        fb.check(net, "mse", params, jnp.ones((2, 5)), y)


def test_one_options_object_or_its_keywords_give_the_same_report():
    net = fb.mlp((3, 4, 2), "tanh")
    point = _point(net)
    options = fb.CheckOptions(dtype="float32", seed=2, tolerance=1e-3)
    by_object = fb.check(net, "mse", *point, options=options).to_dict()
    by_keywords = fb.check(net, "mse", *point, dtype="float32", seed=2, tolerance=1e-3).to_dict()
    assert by_object == by_keywords and by_object["tolerance"] == 1e-3
    # a keyword beside the object overrides its field
    assert fb.check(net, "mse", *point, options=options, tolerance=1e-2).tolerance == 1e-2
    f = fb.as_custom_vjp(fb.dense(3, 2, "tanh"))
    p, x = point[0][0], point[1]
    assert fb.check_vjp(f, p, x, options=fb.CheckOptions(jvp=False)).to_dict() == \
        fb.check_vjp(f, p, x, jvp=False).to_dict()


def test_check_options_are_checked_when_built_and_named_when_unknown():
    net = fb.mlp((3, 2), "tanh")
    params, x, y = _point(net)
    with pytest.raises(ValueError, match=r"resample must be .*received -1"):
        fb.CheckOptions(resample=-1)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['tol'\]"):
        fb.check(net, "mse", params, x, y, tol=1e-3)
    with pytest.raises(TypeError, match=r"check_grad: unexpected .*\['resample'\]"):
        fb.check_grad(lambda p: jnp.sum(p ** 2), lambda p: 2 * p, jnp.ones(2), resample=1)
    with pytest.raises(TypeError, match="options must be an fb.CheckOptions, received dict"):
        fb.check(net, "mse", params, x, y, options={"dtype": "float32"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        fb.CheckOptions().dtype = "float32"


def test_the_old_module_aliases_are_gone():
    for name in ("checker", "verify", "validate", "rundir"):
        assert not hasattr(fb, name)
