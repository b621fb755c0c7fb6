"""Every bad input an adversarial user tried: a TypeError/ValueError naming the argument, what was
expected, what was received and the fix; and the values wrongly refused before are accepted."""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fbackprop as fb
from fbackprop import data as datasets
from fbackprop.training import rundir

pytestmark = pytest.mark.float32

NET = fb.mlp([2, 4, 3], output_activation="identity")
PARAMS = NET.init(jax.random.PRNGKey(0))
X = np.linspace(-1, 1, 10, dtype=np.float32).reshape(5, 2)
Y = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1]]
NET1 = fb.mlp([2, 4, 1], output_activation="identity")
PARAMS1 = NET1.init(jax.random.PRNGKey(0))


def _grad(net=NET, cost="softmax_cross_entropy"):
    return fb.manual_grad(net, cost)


def _with(a, index, value):
    a = np.array(a)
    a[index] = value
    return a


def _leaf(params, value):
    return jax.tree.map(lambda a: a.at[(0,) * a.ndim].set(value), params)


def _wrong_cost():
    cost = fb.Cost("mine", lambda y, a: jnp.sum(y * a), lambda y, a: a - y)
    return _grad(cost=cost)(PARAMS, X, Y)


def _bad_data(split, value):
    ds = datasets.xor()
    key = f"x_{split}"
    return fb.train("mlp", ds._replace(**{key: _with(getattr(ds, key), (3, 1), value)}),
                    epochs=1)


BAD = [
    # (id, call, error, message)
    ("empty batch", lambda: _grad()(PARAMS, X[:0], Y[:0]), ValueError,
     r"x must hold at least one example, received an empty batch of shape \(0, 2\)"),
    ("x None", lambda: _grad()(PARAMS, None, Y), TypeError,
     r"x must be an array of floats.*received None"),
    ("widths do not chain", lambda: fb.serial(*NET.layers[:1], *NET1.layers[:1]).apply(
        fb.serial(*NET.layers[:1], *NET1.layers[:1]).init(jax.random.PRNGKey(0)), X),
     ValueError, r"layer 1 \(dense\(2→4.*cannot take the output of layer 0.*shape \(5, 4\).*"
                 r"widths must chain"),
    ("NaN input, fb.check", lambda: fb.check(NET, "softmax_cross_entropy", PARAMS,
                                             _with(X, (1, 1), np.nan), Y),
     ValueError, r"x must be finite, received nan at index \(1, 1\).*Clean the batch"),
    ("inf input, manual_grad", lambda: _grad()(PARAMS, _with(X, (2, 0), np.inf), Y),
     ValueError, r"x must be finite, received inf at index \(2, 0\)"),
    ("NaN target", lambda: _grad()(PARAMS, X, _with(Y, (4, 2), np.nan)), ValueError,
     r"y must be finite, received nan at index \(4, 2\)"),
    ("NaN parameter", lambda: _grad()(_leaf(PARAMS, np.nan), X, Y), ValueError,
     r"params\[0\]\['W'\] must be finite, received nan at index \(0, 0\)"),
    ("inf parameter, fb.check", lambda: fb.check(NET, "softmax_cross_entropy",
                                                 _leaf(PARAMS, np.inf), X, Y),
     ValueError, r"params\[0\]\['W'\] must be finite, received inf"),
    ("int params, fb.check", lambda: fb.check(NET, "softmax_cross_entropy",
                                              jax.tree.map(lambda a: a.astype(jnp.int32), PARAMS),
                                              X, Y),
     TypeError, r"params\[0\]\['W'\] must be floating point, received dtype int32.*astype"),
    ("int params, manual_grad", lambda: _grad()(
        jax.tree.map(lambda a: a.astype(jnp.int32), PARAMS), X, Y), TypeError,
     r"must be floating point, received dtype int32"),
    ("softmax CE, y = 2·one_hot", lambda: _grad()(PARAMS, X, 2 * Y), ValueError,
     r"'softmax_cross_entropy' must hold rows of probabilities.*received 2 at index \(0, 0\)"
     r".*jax.nn.one_hot"),
    ("softmax CE, negative entries", lambda: _grad()(PARAMS, X, Y - 0.25), ValueError,
     r"rows of probabilities.*received -0.25 at index \(0, 1\)"),
    ("softmax CE, rows not summing to 1", lambda: _grad()(PARAMS, X, Y * 0.5), ValueError,
     r"rows of probabilities.*sum 0.5"),
    ("sigmoid CE, y = 3", lambda: _grad(cost="sigmoid_cross_entropy")(PARAMS, X, 3 * Y),
     ValueError, r"'sigmoid_cross_entropy' must hold entries in \[0, 1\].*received 3"),
    ("logistic, labels {0, 1}", lambda: _grad(NET1, "logistic")(
        PARAMS1, X, np.array([[0], [1], [1], [0], [1]], np.float32)), ValueError,
     r"'logistic' must hold labels −1 or \+1, received 0 at index \(0, 0\).*2 \* labels - 1"),
    ("custom Cost of the wrong shape", _wrong_cost, ValueError,
     r"cost 'mine': C\(y, a\) must return one cost per output vector, shape \(5,\).*"
     r"received shape \(\).*axis=-1"),
    ("bias='no'", lambda: fb.mlp([2, 3], bias="no"), TypeError,
     r"mlp: bias must be True or False, received 'no'"),
    ("seed -1", lambda: fb.train("mlp", "xor", seed=-1), ValueError,
     r"seed must be an int ≥ 0.*received -1. E.g. --seed 0"),
    ("checkpoint_every 0", lambda: fb.train("mlp", "xor", checkpoint_every=0), ValueError,
     r"checkpoint_every must be a positive int, received 0"),
    ("NaN in training data", lambda: _bad_data("train", np.nan), ValueError,
     r"x_train must be finite, received nan at index \(3, 1\).*Dataset.x_train"),
    ("inf in test data", lambda: _bad_data("test", np.inf), ValueError,
     r"x_test must be finite, received inf at index \(3, 1\)"),
    ("out ''", lambda: fb.train("mlp", "xor", out=""), ValueError,
     r"out must name a directory, received an empty path"),
    ("out not a path", lambda: fb.train("mlp", "xor", out=3), TypeError,
     r"out must be a directory path.*received int"),
    ("resume and force", lambda: fb.train("mlp", "xor", out="x", resume=True, force=True),
     ValueError, r"contradict each other"),
    # --- issue 21 item 7: inputs that passed silently before ---
    ("mask of zeros", lambda: _grad()(PARAMS, X, Y, np.zeros(5, np.float32)), ValueError,
     r"mask must keep at least one example, received 5 zeros.*mask=None"),
    ("mask with NaN", lambda: fb.backprop(NET, "softmax_cross_entropy")(
        PARAMS, X, Y, _with(np.ones(5, np.float32), 2, np.nan)), ValueError,
     r"mask must be finite, received nan at index \(2,\)"),
    ("negative mask", lambda: _grad()(PARAMS, X, Y, -np.ones(5, np.float32)), ValueError,
     r"mask must hold weights ≥ 0.*received -1 at index 0"),
    ("mask (batch, 1), loss_fn", lambda: fb.loss_fn(NET, "softmax_cross_entropy")(
        PARAMS, X, Y, np.ones((5, 1), np.float32)), ValueError,
     r"mask must have shape \(5,\).*received shape \(5, 1\).*mask.reshape\(5\)"),
    ("mask too short, jit", lambda: jax.jit(_grad())(PARAMS, X, Y, np.ones(4, np.float32)),
     ValueError, r"mask must have shape \(5,\).*received shape \(4,\)"),
    ("check_layer on an empty batch", lambda: fb.check_layer(
        NET.layers[0], PARAMS[0], np.zeros((0, 2))), ValueError,
     r"check_layer: a must hold at least one example, received an empty batch"),
    ("check_layer on NaN input", lambda: fb.check_layer(
        NET.layers[0], PARAMS[0], _with(X, (1, 0), np.nan)), ValueError,
     r"check_layer: a must be finite, received nan at index \(1, 0\)"),
    ("check_vjp on an inf argument", lambda: fb.check_vjp(
        fb.as_custom_vjp(NET.layers[0]), PARAMS[0], _with(X, (0, 1), np.inf)), ValueError,
     r"check_vjp: args\[1\] must be finite, received inf"),
    ("force='no'", lambda: fb.train("mlp", "xor", out="x", force="no"), TypeError,
     r"force must be True or False, received 'no'.*would delete the run"),
    ("resume=1", lambda: fb.train("mlp", "xor", out="x", resume=1), TypeError,
     r"resume must be True or False, received 1"),
    ("hidden for a ready-made network", lambda: fb.train(NET, "xor", hidden=(3,)), ValueError,
     r"hidden applies to a model family.*received hidden=\(3,\) with a ready-made network"),
    ("lr 0 in float32", lambda: fb.train("mlp", "xor", lr=1e-320), ValueError,
     r"learning rate must be a number > 0 that float32 can hold.*received 1e-320, which is 0"),
    ("lr inf in float32", lambda: fb.train("mlp", "xor", lr=1e39), ValueError,
     r"received 1e\+39, which is inf in float32"),
    ("regression widths differ", lambda: datasets.load(datasets.sine()._replace(
        y_test=np.zeros((200, 2), np.float32))), ValueError,
     r"targets of one width in both splits.*y_train of shape \(256, 1\) and y_test of shape "
     r"\(200, 2\)"),
    ("dense bias=None", lambda: fb.dense(2, 3, bias=None), TypeError,
     r"dense: bias must be True or False, received None"),
    ("digits test_fraction -0.1", lambda: datasets.digits(test_fraction=-0.1), ValueError,
     r"digits: test_fraction must be a number strictly between 0 and 1, received -0.1"),
    ("one_hot of a negative id", lambda: datasets.one_hot(np.array([[-1, 2]]), 3), ValueError,
     r"one_hot: tokens must lie in \[0, 3\), received ids in \[-1, 2\]"),
    ("decode of a negative id", lambda: datasets.decode([1, -1], ("a", "b")), ValueError,
     r"decode: tokens must lie in \[0, 2\), received ids in \[-1, 1\]"),
    ("xor noise -1", lambda: datasets.xor(noise=-1), ValueError,
     r"xor: noise must be a finite number ≥ 0, received -1"),
    ("rnn too large to allocate", lambda: fb.rnn(3, 10**6, 2).init(jax.random.PRNGKey(0)),
     ValueError, r"rnn\(3→1000000→2.*parameters need 3.73e\+03 GiB \(4,000,024,000,008 bytes\), "
                 r"more than the .* free on"),
    # --- raw JAX/NumPy errors found by scripts/probe_inputs.py, now naming the argument ---
    ("check seed -1", lambda: fb.check(NET, "mse", PARAMS, X, Y, seed=-1), ValueError,
     r"seed must be an int ≥ 0, received -1"),
    ("modadd seed -1", lambda: datasets.modadd(p=5, seed=-1), ValueError,
     r"modadd: seed must be an int ≥ 0"),
    ("y of strings", lambda: _grad()(PARAMS, X, "abc"), TypeError,
     r"y must be a numeric array shaped like the network output \(5, 3\), received dtype <U3"),
    ("forward, x of the wrong width", lambda: fb.forward(NET, PARAMS, X[:, :1]), ValueError,
     r"layer 0 \(dense\(2→4.*cannot take x of shape \(5, 1\)"),
    ("forward, params None", lambda: fb.forward(NET, None, X), TypeError,
     r"params must be the 2 per-node parameters that net.init\(key\) returns"),
    ("backward, d_L of the wrong shape", lambda: fb.backward(
        NET, PARAMS, fb.forward(NET, PARAMS, X), Y[:, :2]), ValueError,
     r"d_L must have the shape of the output a_L, \(5, 3\), received shape \(5, 2\)"),
    ("astype 'nope'", lambda: fb.astype(PARAMS, "nope"), TypeError,
     r"astype: dtype must be a floating-point dtype.*received 'nope'"),
    ("check_layer params of another structure", lambda: fb.check_layer(
        NET.layers[0], {"W": 1.0}, X), TypeError, r"check_layer: params has the wrong pytree"),
    ("check_layer a of the wrong width", lambda: fb.check_layer(NET.layers[0], PARAMS[0],
                                                                X[:, :1]),
     ValueError, r"check_layer: a of shape \(5, 1\) does not fit dense\(2→4"),
    ("x_test width differs", lambda: datasets.load(datasets.xor()._replace(
        x_test=np.zeros((200, 3), np.float32))), ValueError,
     r"x_train and x_test must hold examples of one shape.*\(400, 2\).*\(200, 3\)"),
    ("devices 'cpu'", lambda: fb.train("mlp", "xor", devices="cpu"), TypeError,
     r"devices must be a non-empty list of jax devices.*received 'cpu'"),
    ("load_run 3", lambda: fb.load_run(3), TypeError, r"load_run: path must be a run directory"),
    ("load_run of no run", lambda: fb.load_run("/proc/no-such-run"), ValueError,
     r"load_run: path '/proc/no-such-run' holds no run \(no config.json there\)"),
    ("dense dtype 'float65'", lambda: fb.dense(2, 3, dtype="float65"), TypeError,
     r"dense: dtype must be a floating-point dtype.*received 'float65'"),
    ("rnn_layer dtype int32", lambda: fb.rnn_layer(2, 3, dtype=jnp.int32), TypeError,
     r"rnn_layer: dtype must be a floating-point dtype"),
    ("with_dropout_key key 3", lambda: fb.with_dropout_key(NET, 3), TypeError,
     r"with_dropout_key: key must be a jax.random key"),
    ("serial input_shape 'x'", lambda: fb.serial(NET.layers[0], input_shape="x"), ValueError,
     r"serial: input_shape must be one example's shape.*received 'x'"),
    ("residual name ''", lambda: fb.residual("", NET.layers[0]), ValueError,
     r"residual: name must be a non-empty string"),
    ("Cost whose C is not callable", lambda: fb.get_cost(fb.Cost("c", 1, lambda y, a: a)),
     TypeError, r"cost 'c': Cost.C must be a function \(y, a\)"),
    ("backprop input_grad 'yes'", lambda: fb.backprop(NET, "mse", input_grad="yes"), TypeError,
     r"backprop: input_grad must be True or False, received 'yes'"),
    ("loss_fn of a Layer", lambda: fb.loss_fn(NET.layers[0], "mse"), TypeError,
     r"loss_fn: net must be an fbackprop.Network, received Layer.*fb.serial\(layer\)"),
]


@pytest.mark.parametrize("call, error, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_named_with_the_fix(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_token_ids_beyond_the_vocabulary_are_clamped_under_jit():
    """Outside jit an id ≥ vocab is refused; under jit (no value can raise) the embedding clamps
    it, in the forward and in its rule alike: finite gradients equal to jax.grad's, and equal to
    those of the clamped ids (jnp.take's default fill made every gradient NaN)."""
    net = fb.serial(fb.embedding(5, 3), fb.dense(3, 5, "identity"))
    params = net.init(jax.random.PRNGKey(0))
    ids, clamped = np.array([[0, 1, 2, 7]]), np.array([[0, 1, 2, 4]])
    y = np.array([[1, 2, 3, 4]])
    with pytest.raises(ValueError, match=r"token ids in \[0, 7\]; expected ids in \[0, 5\)"):
        fb.manual_grad(net, "softmax_cross_entropy")(params, ids, y)
    manual = jax.jit(fb.manual_grad(net, "softmax_cross_entropy"))
    reference = jax.jit(jax.grad(fb.loss_fn(net, "softmax_cross_entropy")))
    got, want = manual(params, ids, y), reference(params, ids, y)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(got))
    for g, w, c in zip(jax.tree.leaves(got), jax.tree.leaves(want),
                       jax.tree.leaves(manual(params, clamped, y))):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(g, c, rtol=1e-6, atol=1e-7)


def test_a_truthy_string_for_force_leaves_the_run_alone(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")  # force=True would replace these
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    with pytest.raises(TypeError, match="force must be True or False"):
        fb.train("mlp", "xor", epochs=1, out=run, force="no")
    assert (run / "config.json").read_text() == "{}"
    assert (run / "metrics.jsonl").read_text() == '{"epoch": 1}\n'


def test_out_under_a_file_or_unwritable(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"lies under the file .*file. Choose a path"):
        fb.train("mlp", "xor", epochs=1, out=tmp_path / "file" / "run")
    with pytest.raises(ValueError, match=r"out must be a directory, received .*which is a file"):
        fb.train("mlp", "xor", epochs=1, out=tmp_path / "file")
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not __import__("os").access(locked, __import__("os").W_OK):  # not as root
            with pytest.raises(ValueError, match=r"out must be a writable directory"):
                fb.train("mlp", "xor", epochs=1, out=locked / "run")
        with pytest.raises(ValueError, match=r"this process can create and write"):
            rundir.lock(pathlib.Path("/proc/no-such-run"))
    finally:
        locked.chmod(0o700)


def test_cli_refuses_an_empty_out(capsys):
    from fbackprop import cli

    assert cli.main(["train", "--data", "xor", "--out", ""]) == 2
    assert "out must name a directory, received an empty path" in capsys.readouterr().err


def test_a_rule_raising_anything_becomes_a_failing_row():
    layer = NET.layers[0]

    def broken(*args):
        raise RuntimeError("boom")

    net = fb.serial(layer._replace(D_param=broken), NET.layers[1])
    report = fb.check(net, "softmax_cross_entropy", PARAMS, X, Y)
    assert not report.ok and report.failing_layers == (0,)
    assert "raised RuntimeError: boom" in report.failure_message() or \
        "RuntimeError" in str(report)


# --- values that were wrongly refused --------------------------------------------------------

def test_numpy_and_jax_scalars_are_accepted():
    from fbackprop.training.config import resolve

    given = dict(mode=None, optimizer=None, lr=np.float32(3e-3), epochs=np.int64(1),
                 batch_size=np.int32(16), grad=None, seed=jnp.asarray(2), hidden=None,
                 check_every=None, checkpoint_every=np.int16(1))
    config = resolve(given, None, datasets.xor(), "mlp", False)
    assert config.lr == pytest.approx(3e-3) and config.epochs == 1 and config.seed == 2
    assert type(config.lr) is float and type(config.epochs) is int
    assert fb.mlp(np.array([4, 8, 3])).input_shape == (4,)
    assert fb.mlp([2, 3], bias=np.bool_(False)).name.endswith("no bias)")


def test_valid_targets_pass():
    probs = np.full((5, 3), 1 / 3, np.float32)
    assert _grad()(PARAMS, X, probs) is not None
    assert _grad(NET1, "logistic")(PARAMS1, X, np.array([[1], [-1], [1], [1], [-1]],
                                                         np.float32)) is not None
    # under jit the values are tracers: nothing is checked there, nothing is refused
    jax.jit(_grad())(PARAMS, X, Y)


def test_cli_refuses_resume_with_force(tmp_path, capsys):
    from fbackprop import cli

    assert cli.main(["train", "--out", str(tmp_path), "--resume", "--force"]) == 2
    assert "Pass one of them" in capsys.readouterr().err


def test_a_custom_rule_reached_at_an_inf_operand_is_skipped_not_blamed():
    """check_vjp refuses NaN/inf arguments; the sweep over a program's rules names the operand
    and skips that call instead of failing the rule (or stopping the sweep)."""
    @jax.custom_vjp
    def f(x):
        return jnp.sin(x)

    f.defvjp(lambda x: (jnp.sin(x), x), lambda x, u: (jnp.cos(x) * u,))
    report = fb.check_custom_rules(lambda x: f(x).sum(), jnp.array([1.0, jnp.inf]))
    assert "operand(s) [0] hold NaN or inf" in str(report) and "skipped" in str(report)
