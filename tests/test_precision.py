"""Mixed precision: the policy's dtypes, the rules that widen to float32, the hand-written
gradient in bfloat16 within the error budget of jax.grad in bfloat16 (and a planted error
outside it), float16's dynamic loss scaling, and training, checking, checkpoints and resume in
every precision. Tiny shapes; float64 off (what a training run computes in)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fbackprop as fb
from fbackprop import cli
from fbackprop.costs import softmax_cross_entropy
from fbackprop.data import Dataset
from fbackprop.gradcheck import max_budget_ratio
from fbackprop.loss import batch_mean_cost
from fbackprop.training import optim

# float64 off; the tiny runs are not meant to learn (a few steps of a 24-example set)
pytestmark = [pytest.mark.float32,
              pytest.mark.filterwarnings("ignore::fbackprop.training.NearChanceWarning")]


def _tiny(n_train=24, seed=0):
    """A small fixed 3-class data set of 4 features."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + 8, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], "classification", 3,
                   "tiny classes", "tiny-classes")


def test_the_policies_keep_float32_master_weights():
    for name, compute in (("fp32", jnp.float32), ("bf16", jnp.bfloat16),
                          ("fp16", jnp.float16)):
        p = fb.training.get_policy(name)
        assert p.param_dtype == jnp.float32 and p.output_dtype == jnp.float32
        assert p.compute_dtype == compute and p.low == (name != "fp32")
        assert p.loss_scaling == (name == "fp16")
        tree = {"w": jnp.ones(2, jnp.float32), "ids": jnp.ones(2, jnp.int32)}
        cast = p.cast_to_compute(tree)
        assert cast["w"].dtype == compute and cast["ids"].dtype == jnp.int32
    with pytest.raises(ValueError, match=r"precision.*'bf8'.*'bf16'"):
        fb.training.get_policy("bf8")
    with pytest.raises(ValueError, match=r"precision.*'float16'"):
        fb.train("mlp", _tiny(), precision="float16", epochs=1)


def _models():
    """(network, x, y): an MLP, a CNN, and a transformer block (layer norm, attention, GELU)."""
    rng = np.random.default_rng(1)
    mlp = fb.mlp([4, 16, 3], "tanh", "identity")
    cnn = fb.serial(fb.conv(1, 4, (3,), "relu"), fb.flatten(), fb.dense(4 * 6, 3, "identity"),
                    input_shape=(1, 8), name="cnn")
    tr = fb.transformer(11, 16, 2, 1, 6)
    return [
        (mlp, rng.standard_normal((8, 4)), np.eye(3)[rng.integers(0, 3, 8)]),
        (cnn, rng.standard_normal((8, 1, 8)), np.eye(3)[rng.integers(0, 3, 8)]),
        (tr, rng.integers(0, 11, (4, 6)), np.eye(11)[rng.integers(0, 11, (4, 6))]),
    ]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["mlp", "cnn", "transformer"])
def test_bf16_hand_written_gradient_is_within_the_error_budget(index):
    net, x, y = _models()[index]
    cost = "softmax_cross_entropy"
    params = net.init(jax.random.PRNGKey(0))
    x = jnp.asarray(x, jnp.float32) if np.issubdtype(x.dtype, np.floating) else jnp.asarray(x)
    y = jnp.asarray(y, jnp.float32)
    low = fb.training.get_policy("bf16")
    p16, x16 = low.cast_to_compute((params, x))
    with jax.default_matmul_precision("highest"):
        hand = fb.manual_grad(net, cost)(p16, x16, y)
        auto = jax.grad(fb.loss_fn(net, cost))(p16, x16, y)
        ref = jax.grad(fb.loss_fn(net, cost))(*low.cast_to_param((p16, x16)), y)
    assert all(g.dtype == jnp.bfloat16 for g in jax.tree.leaves(hand))
    assert float(max_budget_ratio(hand, auto, ref)) <= 1.0
    # a planted 5% error in one leaf is outside the budget
    leaves, tree = jax.tree.flatten(hand)
    leaves[0] = leaves[0] * 1.05
    assert float(max_budget_ratio(jax.tree.unflatten(tree, leaves), auto, ref)) > 1.0


def test_softmax_layer_norm_and_the_loss_widen_to_float32():
    rng = np.random.default_rng(2)
    z = jnp.asarray(rng.standard_normal((4, 50)) * 8, jnp.bfloat16)
    y = jax.nn.one_hot(jnp.arange(4), 50, dtype=jnp.bfloat16)
    loss = batch_mean_cost(softmax_cross_entropy, y, z)
    assert loss.dtype == jnp.float32
    exact = batch_mean_cost(softmax_cross_entropy, y.astype(jnp.float32),
                               z.astype(jnp.float32))
    assert abs(float(loss) - float(exact)) <= 1e-6 * abs(float(exact))  # not rounded to bf16
    ln = fb.layer_norm(50)
    p = jax.tree.map(lambda t: t.astype(jnp.bfloat16), ln.init(None))
    a = jnp.asarray(rng.standard_normal((4, 50)) + 300.0, jnp.bfloat16)  # a large mean
    out = ln.apply(p, a)
    wide = ln.apply(p, a.astype(jnp.float32))
    assert out.dtype == jnp.bfloat16
    # float32 statistics: only the output's own rounding (8 bits) is left
    assert float(jnp.max(jnp.abs(out.astype(jnp.float32) - wide))) <= 2 ** -7 * 4
    d = ln.D_input(p, a, jnp.ones_like(a))
    assert d.dtype == jnp.bfloat16


def test_dynamic_loss_scale_skips_an_overflow_and_halves_the_scale():
    opt = optim.dynamic_loss_scale(optax.sgd(0.5), initial=8.0, period=2)
    params = {"w": jnp.ones(2)}
    state = opt.init(params)
    assert float(optim.loss_scale(state)) == 8.0
    up, state = opt.update({"w": jnp.array([jnp.inf, 1.0])}, state, params)
    assert up["w"].tolist() == [0.0, 0.0] and float(state.scale) == 4.0
    assert int(state.inner.total_notfinite) == 1
    for _ in range(2):  # two finite steps in a row double it
        up, state = opt.update({"w": jnp.array([1.0, 2.0])}, state, params)
    assert up["w"].tolist() == [-0.5, -1.0] and float(state.scale) == 8.0
    assert optim.loss_scale(optax.sgd(0.1).init(params)) is None


def test_fp16_backward_starts_from_the_scaled_delta():
    net = fb.mlp([4, 8, 3], "tanh", "identity")
    p = jax.tree.map(lambda t: t.astype(jnp.float16), net.init(jax.random.PRNGKey(0)))
    x = jnp.ones((2, 4), jnp.float16)
    y = jnp.eye(3, dtype=jnp.float32)[:2]
    run = fb.backprop(net, "softmax_cross_entropy", input_grad=False)
    plain, scaled = run(p, x, y), run(p, x, y, None, jnp.float32(1024.0))
    assert float(scaled.loss) == float(plain.loss)
    for g, s in zip(jax.tree.leaves(plain.grads), jax.tree.leaves(scaled.grads)):
        np.testing.assert_allclose(np.asarray(s, np.float32) / 1024.0, np.asarray(g, np.float32),
                                   rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_training_in_low_precision_keeps_float32_state_and_checks_by_the_budget(precision):
    r = fb.train("mlp", _tiny(), precision=precision, epochs=2, batch_size=8, grad="checked",
                 check_every=1, hidden=(8,))
    assert r.config.precision == precision
    assert all(t.dtype == jnp.float32 for t in jax.tree.leaves(r.params))
    last = r.history[-1]
    assert 0 < last["check_max_budget_ratio"] <= 1.0 and "check_max_rel_error" not in last
    assert ("loss_scale" in last) == (precision == "fp16")


def test_a_wrong_rule_stops_a_bf16_checked_run_by_the_budget():
    good = fb.dense(4, 6, "tanh")

    def D_param(p, a, d):
        g = good.D_param(p, a, d)
        return {"W": 1.5 * g["W"], "b": g["b"]}

    planted = fb.Layer(good.init, good.apply, good.D_input, D_param, name="planted")
    net = fb.serial(planted, fb.dense(6, 3, "identity"), input_shape=(4,), name="planted net")
    with pytest.raises(fb.TrainingStopped, match=r"error budget, 2 × jax.grad's error in bf16"):
        fb.train(net, _tiny(), precision="bf16", grad="checked", check_every=1, epochs=1,
                 batch_size=8)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_checkpoints_and_resume_in_every_precision(tmp_path, precision):
    settings = dict(precision=precision, batch_size=8, hidden=(8,), checkpoint_every=1)
    whole = fb.train("mlp", _tiny(), epochs=3, **settings)
    fb.train("mlp", _tiny(), epochs=2, out=tmp_path, **settings)
    assert json.loads((tmp_path / "config.json").read_text())["precision"] == precision
    resumed = fb.train("mlp", _tiny(), epochs=3, out=tmp_path, resume=True)
    assert resumed.config.precision == precision  # read back from config.json
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)  # bit-identical on CPU, resumed or not
    other = "bf16" if precision != "bf16" else "fp32"
    with pytest.raises(ValueError, match=rf"precision: saved '{precision}', now '{other}'"):
        fb.train("mlp", _tiny(), epochs=4, out=tmp_path, resume=True, precision=other)


def test_load_run_restores_an_fp16_run(tmp_path):
    # its optimizer state holds the loss scale: restoring needs the saved precision
    r = fb.train("mlp", "xor", precision="fp16", epochs=1, hidden=(4,), out=tmp_path)
    _, params, config = fb.load_run(tmp_path)
    assert config.precision == "fp16"
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(r.params)):
        np.testing.assert_array_equal(a, b)


def test_a_run_saved_before_mixed_precision_resumes_as_fp32(tmp_path):
    fb.train("mlp", _tiny(), epochs=1, batch_size=8, hidden=(8,), out=tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    del config["precision"]
    path.write_text(json.dumps(config))
    r = fb.train("mlp", _tiny(), epochs=2, out=tmp_path, resume=True)
    assert r.config.precision == "fp32" and len(r.history) == 2


def test_the_command_line_takes_precision():
    args = cli.build_parser().parse_args(["train", "--precision", "BF16"])
    assert args.precision == "bf16"
    from fbackprop.commands import train as command
    assert command._options(args, None)["precision"] == "bf16"


def test_recompute_trains_to_the_same_numbers_and_may_change_on_resume(tmp_path):
    settings = dict(epochs=1, hidden=(16,), batch_size=64)
    plain = fb.train("transformer", "modadd", **settings)
    again = fb.train("transformer", "modadd", recompute=True, out=tmp_path / "run", **settings)
    assert again.config.recompute and not plain.config.recompute
    for key in ("loss", "test_loss", "test_accuracy"):
        assert again.history[-1][key] == pytest.approx(plain.history[-1][key], rel=1e-5)
    resumed = fb.train(out=tmp_path / "run", resume=True, epochs=2, recompute=False)
    assert len(resumed.history) == 2 and not resumed.config.recompute
    assert cli.build_parser().parse_args(["train", "--recompute"]).recompute is True
    with pytest.raises(TypeError, match="recompute must be True or False"):
        fb.train("transformer", "modadd", recompute="yes", **settings)
