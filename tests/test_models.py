"""CNN, RNN, LSTM and GRU: manual_grad against jax.grad(loss_fn) over one table of models crossed
with shapes and costs; every layer's rules and per-time-step deltas against jax.vjp; the recurrent
rules run alone, outside their Layer; Jin's convolution convention; the chosen values at ReLU kinks
and max-pool ties; vanishing and exploding deltas. Adding a row to MODELS or LAYERS adds its
tests. Everything is jitted: one compile per row."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import both_grads, run_configs

import fbackprop as fb
from fbackprop import suite
from fbackprop.activations import get_activation
from fbackprop.gradcheck import (
    TOLERANCE,
    layer_reference,
    precision_for,
    relative_error,
    sample_point,
    time_deltas_reference,
    tree_relative_error,
)
from fbackprop.layers import gru, lstm, recurrent

COSTS = ("mse", "sse", "sigmoid_cross_entropy", "softmax_cross_entropy", "logistic")
LOGIT_COSTS = {"sigmoid_cross_entropy", "softmax_cross_entropy", "logistic"}

# ---------------------------------------------------------------------------------------------
# The model table: (family, constructor kwargs, one example's shape, cost, batch)

CNNS = [  # input_shape, conv_channels, kernel_size, pool_size, pool, hidden, activation
    ((2, 12), (3,), 3, 2, "mean", (), "sigmoid"),
    ((1, 14), (2, 3), 3, 2, "max", (4,), "tanh"),
    ((1, 6, 6), (2,), 3, 2, "mean", (5,), "relu"),
    ((2, 7, 8), (3,), (2, 3), (3, 2), "max", (), "identity"),
    ((1, 5, 5), (1,), 2, 2, "max", (3,), "relu"),
    ((3, 5, 6), (2,), (2, 3), (2, 2), "mean", (), "tanh"),
]
RNNS = [  # activation, output, T
    ("tanh", "last", 1), ("sigmoid", "all", 3), ("relu", "last", 6), ("identity", "all", 2),
    ("tanh", "all", 5),
]
LSTMS = [  # output, T, batch, cost: Jin's squared error and both cross-entropies
    ("last", 1, 2, "mse"), ("all", 5, 1, "softmax_cross_entropy"),
    ("last", 6, 3, "sigmoid_cross_entropy"), ("all", 1, 3, "logistic"),
]
GRUS = [  # output, T, batch, cost
    ("last", 1, 2, "softmax_cross_entropy"), ("all", 5, 3, "mse"), ("last", 6, 1, "logistic"),
]


def _cnn_row(i, spec):
    shape, chans, k, ps, pool, hidden, act = spec
    cost = COSTS[i % len(COSTS)]
    kw = dict(input_shape=shape, conv_channels=chans, kernel_size=k, pool_size=ps, pool=pool,
              hidden=hidden, n_out=3, activation=act,
              output_activation="identity" if cost in LOGIT_COSTS else act)
    return ("cnn", kw, shape, cost, 1 if i % 3 == 0 else 3)


MODELS = (
    [_cnn_row(i, spec) for i, spec in enumerate(CNNS)]
    + [("rnn", dict(n_in=3, n_hidden=5, n_out=2, activation=act, output=out), (T, 3),
        COSTS[(i + 1) % len(COSTS)], 1 if i % 3 == 1 else 4)
       for i, (act, out, T) in enumerate(RNNS)]
    + [("lstm", dict(n_in=3, n_hidden=4, n_out=2, output=out), (T, 3), cost, batch)
       for out, T, batch, cost in LSTMS]
    + [("gru", dict(n_in=3, n_hidden=4, n_out=2, output=out), (T, 3), cost, batch)
       for out, T, batch, cost in GRUS]
)


def _make(row):
    family, kw = row[0], dict(row[1])
    if family == "cnn":
        return fb.cnn(kw.pop("input_shape"), **kw)
    return getattr(fb, family)(kw.pop("n_in"), kw.pop("n_hidden"), kw.pop("n_out"), **kw)


def _ids(row):
    family, kw, shape, cost, batch = row
    detail = "-".join(str(kw[k]) for k in ("activation", "pool", "output") if k in kw)
    return f"{family}-{'x'.join(map(str, shape))}-{detail}-{cost}-b{batch}"


def _kink_distance(net, params, x):
    """Smallest distance of the point to a kink or tie, over every layer that reports one."""
    a, out = x, jnp.inf
    for layer, p in zip(net.layers, params):
        if layer.kink_distance is not None:
            out = jnp.minimum(out, layer.kink_distance(p, a))
        a = layer.apply(p, a)
    return out


def grads_away_from_kinks(row, seed, dtype="float64"):
    """(params, manual, jax.grad) at the first sample point (seeds seed, seed + 1, …) at least
    1e-4 away from any ReLU kink or max-pool tie; one compiled program for all three."""
    net, cost = _make(row), row[3]
    manual, reference = fb.manual_grad(net, cost), jax.grad(fb.loss_fn(net, cost))
    run = jax.jit(lambda p, x, y: (manual(p, x, y), reference(p, x, y), _kink_distance(net, p, x)))
    for s in range(seed, seed + 40):
        params, x, y = sample_point(net, cost, row[4], seed=s, dtype=dtype, input_shape=row[2])
        got, ref, dist = run(params, x, y)
        if float(dist) > 1e-4:
            return params, got, ref
    pytest.fail(f"no sample point away from kinks for {net!r}")


@pytest.mark.parametrize("row", MODELS, ids=_ids)
def test_manual_equals_jax_grad_float64(row):
    params, manual, ref = grads_away_from_kinks(row, seed=len(_ids(row)))
    assert jax.tree.structure(manual) == jax.tree.structure(params)
    assert tree_relative_error(manual, ref) <= TOLERANCE["float64"]


@pytest.mark.parametrize("row", MODELS[1::5], ids=_ids)
def test_manual_equals_jax_grad_float32(row):
    with precision_for("float32"):
        _, manual, ref = grads_away_from_kinks(row, seed=7, dtype="float32")
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(manual))
    assert tree_relative_error(manual, ref) <= TOLERANCE["float32"]


EAGER = [MODELS[1], MODELS[len(CNNS)], MODELS[-1]]  # a 1-D CNN; an RNN and an LSTM with T = 1


@pytest.mark.parametrize("row", EAGER, ids=_ids)
def test_eager_manual_path_uses_no_autodiff_and_equals_jit(row, monkeypatch):
    """Run manual_grad without jit while jax.grad, vjp, jvp, linearize and value_and_grad are
    forbidden; it equals the jitted manual gradient and jax.grad."""
    net, cost = _make(row), row[3]
    params, x, y = sample_point(net, cost, row[4], seed=3, input_shape=row[2])
    jitted, ref = both_grads(net, cost, jit=True)(params, x, y)

    def forbidden(*args, **kwargs):
        raise AssertionError("autodiff called on the manual path")

    for name in ("grad", "vjp", "jvp", "linearize", "value_and_grad"):
        monkeypatch.setattr(jax, name, forbidden)
    eager = fb.manual_grad(net, cost)(params, x, y)
    monkeypatch.undo()
    assert tree_relative_error(eager, ref) <= TOLERANCE["float64"]
    assert tree_relative_error(jitted, eager) <= TOLERANCE["float64"]


@pytest.mark.parametrize("family", ["rnn", "lstm", "gru"])
def test_program_size_does_not_grow_with_T(family):
    """BPTT is a reverse lax.scan: the traced program is the same size for T = 2 and T = 40."""
    net = getattr(fb, family)(3, 4, 2, output="all")

    def n_eqns(T):
        params, x, y = sample_point(net, "mse", 2, input_shape=(T, 3))
        jaxpr = jax.make_jaxpr(fb.manual_grad(net, "mse"))(params, x, y).jaxpr
        assert any(e.primitive.name == "scan" for e in jaxpr.eqns)
        return len(jaxpr.eqns)

    assert n_eqns(2) == n_eqns(40)


def test_check_covers_every_model_family():
    assert {c.model for c in suite.builtin_configs()} >= {"mlp", "cnn", "rnn", "lstm", "gru",
                                                          "residual", "transformer"}
    configs = suite.model_configs()
    assert {c.cost for c in configs if c.model == "lstm"} >= {"mse", "softmax_cross_entropy"}
    recurrent = next(c for c in configs if c.input_shape is not None)  # T given by the row
    rows = run_configs([recurrent], ("float32",))
    assert all(r["pass"] for r in rows), rows


# ---------------------------------------------------------------------------------------------
# Each layer's hand-written rules against jax.vjp of its apply: (layer, input shape incl. batch;
# a list of shapes for a layer reading several activations, Tokens(…) for token ids)

class Tokens(tuple):
    """The input shape of a layer reading integer token ids in [0, vocab)."""

    def __new__(cls, vocab, shape):
        self = super().__new__(cls, shape)
        self.vocab = vocab
        return self


LAYERS = (
    [(fb.dense(3, 4, act, bias=bias), (2, 3)) for act, bias in (("sigmoid", True), ("relu", False),
                                                                 ("softmax", True))]
    + [(fb.conv(2, 3, (3,), act), (3, 2, 7)) for act in ("sigmoid", "relu")]
    + [(fb.conv(2, 3, (2, 3), act), (2, 2, 5, 6)) for act in ("tanh", "identity")]
    + [(fb.conv(1, 2, (1, 1), "relu"), (1, 1, 2, 2)), (fb.conv(3, 1, (4,), "tanh"), (1, 3, 4))]
    + [(pool(ps), shape) for pool in (fb.mean_pool, fb.max_pool)
       for ps, shape in (((3,), (1, 2, 6)), ((2, 3), (2, 3, 4, 6)))]
    + [(fb.flatten(), (2, 3, 4, 5))]
    + [(fb.rnn_layer(3, 4, act, output=out), (b, T, 3)) for act, out, b, T in
       [("sigmoid", "last", 2, 4), ("tanh", "all", 1, 1), ("relu", "all", 3, 3),
        ("identity", "last", 1, 2)]]
    + [(fb.lstm_layer(3, 4, output=out), (b, T, 3))
       for out, b, T in [("last", 2, 5), ("all", 1, 1)]]
    + [(fb.gru_layer(3, 4, output=out), (b, T, 3)) for out, b, T in
       [("last", 2, 5), ("all", 1, 1), ("all", 3, 4), ("last", 1, 1)]]
    + [(fb.add(), [(2, 3, 4), (2, 3, 4)]), (fb.concat(), [(2, 3), (2, 1), (2, 4)]),
       (fb.concat(axis=1), [(2, 1, 3), (2, 2, 3)]), (fb.gelu(), (3, 5)), (fb.dropout(0.0), (2, 3)),
       (fb.dropout(0.4, key=jax.random.PRNGKey(3)), (2, 6)), (fb.layer_norm(5), (3, 5)),
       (fb.layer_norm(4), (2, 3, 4)), (fb.dense(3, 4, "gelu"), (2, 3)),
       (fb.embedding(7, 4), Tokens(7, (2, 9))),  # 9 ids from 7: some repeat (the scatter-add)
       (fb.positional(6, 4), (2, 5, 4)), (fb.positional(3, 2), (1, 3, 2))]
    + [(fb.causal_self_attention(D, H), (b, T, D)) for D, H, b, T in
       [(4, 1, 2, 3), (6, 2, 1, 5), (8, 4, 2, 4), (4, 2, 1, 1)]]
)


def _layer_point(layer, shape, rng):
    p = jax.tree.map(lambda t: jnp.asarray(rng.standard_normal(t.shape)),
                     layer.init(jax.random.PRNGKey(0)))
    if isinstance(shape, Tokens):
        a = jnp.asarray(rng.integers(0, shape.vocab, shape))
    elif isinstance(shape, list):  # a tuple of inputs
        a = tuple(jnp.asarray(rng.standard_normal(s)) for s in shape)
    else:
        a = jnp.asarray(rng.standard_normal(shape))
    d = jnp.asarray(rng.standard_normal(jax.eval_shape(layer.apply, p, a).shape))
    return p, a, d


def _rules_and_refs(layer):
    """One compiled program: the hand-written rules and jax.vjp of apply, the per-step deltas and
    their autodiff twin, and the kink distance."""
    def run(p, a, d):  # jax.vjp of apply (zeros for the float0 cotangent of token ids)
        out = {"rules": (layer.D_param(p, a, d), layer.D_input(p, a, d)),
               "refs": layer_reference(layer, p, a, d)}
        if layer.backward is not None:
            d_input, d_param = layer.backward(p, a, d)
            out["fused"] = (d_param, d_input)
        if layer.time_deltas is not None:
            out["time"] = (layer.time_deltas(p, a, d), time_deltas_reference(layer, p, a, d))
        if layer.kink_distance is not None:
            out["kink"] = layer.kink_distance(p, a)
        return out

    return jax.jit(run)


@pytest.mark.parametrize("layer,shape", LAYERS, ids=[f"{l.name}-{s}" for l, s in LAYERS])
def test_layer_rules_and_time_deltas_equal_jax_vjp(layer, shape, rng):
    p, a, d = _layer_point(layer, shape, rng)
    out = _rules_and_refs(layer)(p, a, d)
    if "kink" in out:  # a normal sample has no ties and no z = 0 …
        assert float(out["kink"]) > 1e-6  # … which is what this comparison relies on
    (got_p, got_a), (ref_p, ref_a) = out["rules"], out["refs"]
    assert tree_relative_error(got_a, ref_a) <= 1e-12
    assert jax.tree.structure(got_p) == jax.tree.structure(p)
    assert tree_relative_error(got_p, ref_p) <= 1e-12
    if "fused" in out:  # the fused rule against autodiff and against the two Euler derivatives
        assert tree_relative_error(out["fused"], out["refs"]) <= 1e-12
        assert tree_relative_error(out["fused"], out["rules"]) <= 1e-12
    if layer.time_deltas is not None:  # ∂J/∂h_τ (and ∂J/∂C_τ) at every step
        got, ref = out["time"]
        assert set(got) == ({"h", "C"} if "lstm" in layer.name else {"h"})
        for key in got:
            assert got[key].shape == shape[:2] + (4,)
            assert relative_error(got[key], ref[key]) <= 1e-12


def test_delta_norms_match_the_autodiff_twin():
    net = fb.lstm(3, 4, 2, output="all")
    params, x, y = sample_point(net, "mse", 3, seed=2, input_shape=(6, 3))

    def both(params, x, y):
        run = fb.backprop(net, "mse", input_grad=False)(params, x, y)
        ref = time_deltas_reference(net.layers[0], params[0], x, run.deltas[1])
        return fb.delta_norms(net, "mse", params, x, y), ref

    norms, ref = jax.jit(both)(params, x, y)
    for key in ("h", "C"):  # the batch sum of per-example norms of ∂J/∂h_τ (J the batch mean)
        expected = np.sum(np.linalg.norm(np.asarray(ref[key]), axis=-1), axis=0)
        np.testing.assert_allclose(norms[key], expected, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Jin's convolution convention, taken literally (eq. 12 and the kernel gradient of eq. 46)

def _jin_indices(n1, n2, m1, m2):
    """Jin's output positions i ∈ {m1, …, n1}, j ∈ {m2, …, n2} (from 0: m − 1 … n − 1)."""
    return itertools.product(range(m1 - 1, n1), range(m2 - 1, n2))


def test_conv_forward_is_jins_convolution(rng):
    layer = fb.conv(2, 3, (2, 3), "identity")
    p, x, _ = _layer_point(layer, (2, 2, 5, 6), rng)
    W, X = np.asarray(p["W"]), np.asarray(x)
    out = np.zeros((2, 3, 4, 4))
    for i, j in _jin_indices(5, 6, 2, 3):
        for k1, k2 in itertools.product(range(2), range(3)):  # Σ X(i − k1, j − k2) W(k1, k2)
            out[:, :, i - 1, j - 2] += X[:, :, i - k1, j - k2] @ W[:, :, k1, k2].T
    np.testing.assert_allclose(layer.apply(p, x), out + np.asarray(p["b"])[:, None, None],
                               rtol=1e-12, atol=1e-12)


def test_conv_kernel_gradient_is_jins_rot180_sum(rng):
    # eq. 46, third line: ∂J/∂W(k1, k2) = Σ_{i,j} δ(i, j) X(i − k1, j − k2), δ = ∂J/∂Z
    layer = fb.conv(2, 3, (2, 3), "identity")
    p, x, d = _layer_point(layer, (2, 2, 5, 6), rng)
    X, delta = np.asarray(x), np.asarray(d)
    dW = np.zeros((3, 2, 2, 3))
    for k1, k2 in itertools.product(range(2), range(3)):
        for i, j in _jin_indices(5, 6, 2, 3):
            dW[:, :, k1, k2] += delta[:, :, i - 1, j - 2].T @ X[:, :, i - k1, j - k2]
    np.testing.assert_allclose(jax.jit(layer.D_param)(p, x, d)["W"], dW, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# The chosen values at kinks and ties, tested separately

def test_conv_relu_at_a_kink_uses_relu_prime_zero(rng):
    layer = fb.conv(1, 2, (2, 2), "relu")
    # small integers: every sum of products is exact in any order, on any device (a GPU's
    # convolution sums in another order than the CPU's), so Z_0(1, 2) = 0 exactly below
    p = {"W": jnp.asarray(rng.integers(-3, 4, (2, 1, 2, 2)), jnp.float64), "b": jnp.zeros(2)}
    x = jnp.asarray(rng.integers(-3, 4, (1, 1, 4, 4)), jnp.float64)
    conv_only = fb.conv(1, 2, (2, 2), "identity").apply(p, x)
    p = {"W": p["W"], "b": p["b"].at[0].set(-conv_only[0, 0, 1, 2])}  # Z_0(1, 2) = 0 exactly
    d = jnp.zeros((1, 2, 3, 3)).at[0, 0, 1, 2].set(1.0)  # a delta only at the kink
    out = _rules_and_refs(layer)(p, x, d)
    assert float(out["kink"]) == 0.0
    (grads, dx), (ref_p, ref_x) = out["rules"], out["refs"]
    for t in (grads["W"], grads["b"], dx):  # ReLU'(0) = 0: nothing passes the kink …
        assert float(jnp.max(jnp.abs(t))) == 0.0
    assert tree_relative_error(grads, ref_p) == 0.0  # … and the forward's autodiff agrees
    assert relative_error(dx, ref_x) == 0.0


@pytest.mark.parametrize("window,d", [
    ([3.0, 3.0, 1.0, -2.0], 1.0),       # two tied maxima
    ([0.5, 0.5, 0.5, 0.5], -2.0),       # all tied
    ([-1.0, 2.0, 2.0, 2.0], 3.0),       # three tied
])
def test_max_pool_tie_shares_the_delta_like_autodiff(window, d):
    layer = fb.max_pool((4,))
    a = jnp.asarray([[window, [0.0, 1.0, 5.0, 2.0]]])  # (batch 1, 2 channels, L = 4)
    delta = jnp.asarray([[[d], [1.0]]])
    out = _rules_and_refs(layer)({}, a, delta)
    assert float(out["kink"]) == 0.0
    got = np.asarray(out["rules"][1])[0, 0]
    w = np.asarray(window)
    ties = w == w.max()
    np.testing.assert_array_equal(got[~ties], 0.0)
    np.testing.assert_allclose(got[ties], d / ties.sum(), rtol=1e-13)  # shared equally
    np.testing.assert_allclose(out["rules"][1], out["refs"][1], rtol=1e-13)


# ---------------------------------------------------------------------------------------------
# Exploding and vanishing deltas (Jin §3.2) and the LSTM's open forget gate

def _orthogonal(n, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("radius", [0.5, 1.5])
def test_rnn_deltas_shrink_or_grow_geometrically_back_in_time(radius):
    net = fb.rnn(3, 6, 2, activation="identity", output="last")
    params, x, y = sample_point(net, "mse", 4, seed=5, input_shape=(12, 3))
    params = ({**params[0], "W_hh": jnp.asarray(radius * _orthogonal(6, 0))}, params[1])
    norms = np.asarray(jax.jit(lambda *a: fb.delta_norms(net, "mse", *a))(params, x, y)["h"])
    ratios = norms[:-1] / norms[1:]  # ‖∂J/∂h_{τ−1}‖ / ‖∂J/∂h_τ‖ = ρ for W_hh = ρ · orthogonal
    np.testing.assert_allclose(ratios, radius, rtol=1e-10)
    if radius < 1:
        assert norms[0] < 1e-3 * norms[-1]  # vanishing: 0.5¹¹ ≈ 5e-4
    else:
        assert norms[0] > 50 * norms[-1]    # exploding: 1.5¹¹ ≈ 86


def test_lstm_with_open_forget_gate_keeps_cell_deltas_near_constant():
    H, T = 5, 12
    net = fb.lstm(3, H, 2, output="last")
    params, x, y = sample_point(net, "mse", 4, seed=6, input_shape=(T, 3))
    norms = jax.jit(lambda *a: fb.delta_norms(net, "mse", *a))

    def cell_norms(forget_bias):
        # weak recurrent weights, so that the cell path C_{τ−1} → C_τ carries the delta back
        b = params[0]["b"].at[H:2 * H].set(forget_bias)  # b_f, the second block of (i, f, o, a)
        p = {**params[0], "W_h": 0.1 * params[0]["W_h"], "b": b}
        assert float(jnp.min(fb.gate_params(p)["b_f"])) == forget_bias
        return np.asarray(norms((p, params[1]), x, y)["C"])

    open_, neutral = cell_norms(8.0), cell_norms(0.0)
    assert open_.min() > 0.85 * open_.max()  # f ≈ 1: ∂J/∂C_{τ−1} ≈ f_τ ∂J/∂C_τ stays put
    assert neutral[0] < 1e-2 * neutral[-1]   # f ≈ ½: it halves at every step back


def test_every_parametrised_layer_family_has_a_fused_rule_where_it_shares_work():
    fused = {layer.name.split("(")[0] for layer, _ in LAYERS if layer.backward is not None}
    assert fused == {"dense", "conv1d", "conv2d", "rnn", "lstm", "gru", "layer_norm",
                     "causal_self_attention"}


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_a_recurrent_layers_rules_run_alone_outside_the_layer(kind):
    """The rules are module-level functions: the forward scan, the reverse scan (a NamedTuple
    carrying delta = ∂J/∂pre-activation and dh = ∂J/∂h_τ) and the weight gradients, composed by
    hand without the Layer, give ∂J/∂p and ∂J/∂x as jax.vjp of the layer's apply does."""
    layer = {"rnn": fb.rnn_layer(3, 4, "tanh", output="all"),
             "lstm": fb.lstm_layer(3, 4, output="all"),
             "gru": fb.gru_layer(3, 4, output="all")}[kind]
    p = jax.tree.map(lambda t: t.astype(jnp.float64), layer.init(jax.random.PRNGKey(0)))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 3), jnp.float64)
    d = jax.random.normal(jax.random.PRNGKey(2), (2, 5, 4), jnp.float64)
    def alone(p, x, d):
        if kind == "rnn":
            g = get_activation("tanh")
            z = recurrent.rnn_forward(p["W_hh"], recurrent.project_inputs(p["W_xh"], p["b"], x), g)
            rev = recurrent.rnn_reverse(p["W_hh"], z, d, g, last=False)
            return rev, recurrent.rnn_param_grads(x, g, rev), p["W_xh"]
        module = lstm if kind == "lstm" else gru
        xz = recurrent.project_inputs(p["W_x"], p["b"], x)
        rev = getattr(module, f"{kind}_reverse")(p["W_h"], getattr(module, f"{kind}_states")(
            p["W_h"], xz), d, False)
        return rev, getattr(module, f"{kind}_param_grads")(x, rev), p["W_x"]

    rev, grads, W_x = jax.jit(alone)(p, x, d)
    assert {"delta", "dh"} <= set(rev._fields)
    ref_p, ref_x = jax.jit(lambda p, x, d: jax.vjp(layer.apply, p, x)[1](d))(p, x, d)
    assert tree_relative_error(grads, ref_p) < TOLERANCE["float64"]
    assert relative_error(recurrent.sequence_input_delta(W_x, rev.delta), ref_x) < \
        TOLERANCE["float64"]
