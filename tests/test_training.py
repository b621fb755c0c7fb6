"""The trainer: each learning mode, optimizer and gradient source against a plain Python loop
on jax.grad; no retracing between epochs; checked gradients naming the wrong layer; non-finite
stops; the default run; bad input that leaves saved runs alone."""
import json
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import plain_loop, saved_epochs

import fbackprop as fb
from fbackprop import cli, training
from fbackprop.data import Dataset
from fbackprop.training import checkpoints, epoch, metrics, registry, rundir


def _tiny(task, n_train=12, seed=0):
    """A small fixed data set of the given task (3 features)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + 6, 3)).astype(np.float32)
    if task == "classification":
        y, n_classes = rng.integers(0, 3, len(x)), 3
    elif task == "binary":
        y, n_classes = (x[:, 0] * x[:, 1] > 0).astype(int), 2
    else:
        y, n_classes = np.sin(x[:, :1]), None
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], task, n_classes,
                   f"tiny {task}", f"tiny-{task}")


def _reference(ds, net, opt, batch_size, epochs, seed):
    """Gordon's learning modes as a plain Python loop on jax.grad (tests/helpers.plain_loop)."""
    return plain_loop(net, training.COST_FOR_TASK[ds.task], ds.x_train,
                      training.targets(ds, ds.y_train), opt, batch_size, epochs, seed)


# (mode, optimizer, gradient source, task, batch size): every value of each axis at least once;
# batch 5 of 12 leaves a remainder subset of 2.
ROWS = [
    ("online", "gd", "manual", "binary", 1),
    ("offline", "sgd", "autodiff", "regression", 12),
    ("minibatch", "momentum", "checked", "classification", 5),
    ("minibatch", "adam", "manual", "classification", 4),
]


@pytest.mark.parametrize("mode, optimizer, grad, task, batch", ROWS,
                         ids=["-".join(map(str, r)) for r in ROWS])
def test_trainer_follows_the_plain_loop_and_compiles_each_epoch_once(
        monkeypatch, mode, optimizer, grad, task, batch):
    chex.clear_trace_counter()
    monkeypatch.setattr(epoch, "compile_epoch",
                        lambda fn: jax.jit(chex.assert_max_traces(fn, n=1)))
    ds = _tiny(task)
    result = fb.train("mlp", ds, mode=mode, optimizer=optimizer, lr=0.05, epochs=3,
                      batch_size=batch if mode == "minibatch" else None, grad=grad,
                      hidden=(5,), check_every=1, seed=3)
    assert result.config.batch_size == batch and result.devices == 1
    expected = _reference(ds, result.net, training.make_optimizer(optimizer, 0.05), batch, 3, 3)
    for got, want in zip(jax.tree.leaves(result.params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    # the history's accuracy is the final parameters' accuracy on the test set
    out = np.asarray(result.net.apply(result.params, jnp.asarray(ds.x_test)))
    acc = result.history[-1]["test_accuracy"]
    if task == "classification":
        assert acc == pytest.approx(np.mean(out.argmax(1) == ds.y_test))
    elif task == "binary":
        assert acc == pytest.approx(np.mean((out[:, 0] > 0) == (ds.y_test == 1)))
    else:
        assert acc is None
    assert [r["epoch"] for r in result.history] == [1, 2, 3]


def test_the_caches_are_hit_by_equal_settings_and_emptied_by_clear_caches(monkeypatch):
    compiled = []
    monkeypatch.setattr(epoch, "compile_epoch", lambda fn: compiled.append(fn) or jax.jit(fn))
    ds = _tiny("classification")
    first = fb.train("mlp", ds, epochs=1, batch_size=4, hidden=(5,))
    again = fb.train("mlp", ds, epochs=1, batch_size=4, hidden=(5,), lr=3e-3)  # equal settings
    assert again.net is first.net and len(compiled) == 1
    training.clear_caches()
    after = fb.train("mlp", ds, epochs=1, batch_size=4, hidden=(5,))
    assert after.net is not first.net and len(compiled) == 2
    np.testing.assert_array_equal(jax.tree.leaves(after.params)[0],
                                  jax.tree.leaves(first.params)[0])


def test_retracing_is_caught():
    # the guard the test above relies on does fire when an epoch's inputs change type
    chex.clear_trace_counter()
    f = jax.jit(chex.assert_max_traces(lambda a: a + 1, n=1))
    f(jnp.ones(2, jnp.float32))
    with pytest.raises(AssertionError, match="traced > 1"):
        f(jnp.ones(2, jnp.int32))


def test_gordon_gd_is_minus_eta_times_the_gradient():
    g = {"W": jnp.array([[1.0, -2.0]]), "b": jnp.array([0.5])}
    opt = training.gordon_gd(0.25)
    updates, _ = opt.update(g, opt.init(g))
    assert jax.tree.map(lambda u: u.tolist(), updates) == {"W": [[-0.25, 0.5]], "b": [-0.125]}


def _planted_net(rule):
    """dense(2→4) → planted(4→4) → dense(4→1); the planted layer doubles its weight gradient
    (``rule="D_param"``) or drops tanh' from the delta it propagates (``rule="D_input"``)."""
    good = fb.dense(4, 4, "tanh")

    def D_param(p, a, d):
        g = good.D_param(p, a, d)
        return {"W": 2 * g["W"], "b": g["b"]}

    def D_input(p, a, d):
        return d @ p["W"]

    planted = (fb.Layer(good.init, good.apply, good.D_input, D_param, name="planted")
               if rule == "D_param" else
               fb.Layer(good.init, good.apply, D_input, good.D_param, name="planted"))
    return fb.serial(fb.dense(2, 4, "tanh"), planted, fb.dense(4, 1, "identity"),
                     input_shape=(2,), name="planted net")


@pytest.mark.parametrize("rule", ["D_param", "D_input"])
def test_checked_gradients_stop_and_name_the_wrong_layer(rule):
    # A wrong D_input in layer 1 corrupts only layer 0's gradient; the checker still names layer 1.
    with pytest.raises(fb.TrainingStopped) as err:
        fb.train(_planted_net(rule), "xor", grad="checked", check_every=1, epochs=2)
    msg = str(err.value)
    assert "epoch 1, step 0" in msg and "differs from jax.grad" in msg
    assert f"layer 1: planted, {rule}" in msg and "layer 0" not in msg and "layer 2" not in msg
    assert err.value.epoch == 1 and err.value.step == 0 and err.value.history == []
    assert err.value.report.failing_layers == (1,)
    # (a correct network passes the same checks: the "checked" row of the table above)


def test_non_finite_loss_stops_and_the_last_checkpoint_loads(tmp_path):
    with pytest.raises(fb.TrainingStopped) as err:
        fb.train("mlp", "xor", optimizer="sgd", lr=1e20, epochs=5, out=tmp_path / "run",
                 checkpoint_every=1)
    msg, stop = str(err.value), err.value
    assert f"epoch {stop.epoch}, step {stop.step}" in msg and "non-finite values in" in msg
    assert "params[0]['W']" in msg or "loss" in msg
    assert stop.last_checkpoint == stop.epoch - 1 and "lower --lr" in msg
    assert f"fbackprop train --out {tmp_path / 'run'} --resume --lr 1e+19" in msg
    net = training.build_model("mlp", fb.data.xor())
    params = net.init(jax.random.PRNGKey(0))
    like = {"params": params, "opt_state": optax.sgd(1.0).init(params),
            "key": jax.random.PRNGKey(0), "epoch": jnp.zeros((), jnp.int32)}
    restored = checkpoints.restore_latest(tmp_path / "run", like)
    epoch, state = restored.epoch, restored.state
    assert epoch == stop.last_checkpoint and not restored.skipped
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state["params"]))


def test_a_stop_before_the_first_default_checkpoint_says_the_resume_starts_over(tmp_path):
    with pytest.raises(fb.TrainingStopped) as err:
        fb.train("mlp", "xor", optimizer="sgd", lr=1e20, epochs=3, out=tmp_path / "run")
    assert err.value.last_checkpoint is None
    assert "No checkpoint was saved before it" in str(err.value)
    assert "last good checkpoint" not in str(err.value)
    with pytest.warns(fb.training.CheckpointWarning, match="starts from scratch"):
        result = fb.train(out=tmp_path / "run", resume=True, lr=0.01)
    assert len(result.history) == 3 and saved_epochs(tmp_path / "run") == [3]


def test_default_run_reaches_95_percent_and_writes_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    accuracy = float(text.split("final test accuracy: ")[1].split("%")[0])
    assert accuracy >= 95.0
    config = json.loads((out / "config.json").read_text())
    assert (config["model"], config["data"], config["grad"]) == ("mlp", "digits", "manual")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, config["epochs"] + 1))
    assert set(rows[-1]) == {"epoch", "loss", "train_accuracy", "test_accuracy", "test_loss",
                             "seconds", "device"}
    platform = jax.local_devices()[0].platform
    assert config["device"]["platform"] == platform and config["device"]["count"] >= 1
    assert rows[-1]["device"].startswith(f"{platform}:")
    assert f"device: {platform} (" in text
    for name in ("config.json", "metrics.jsonl", "plot.png"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name
    assert rows[-1]["test_accuracy"] == pytest.approx(accuracy / 100, abs=1e-4)
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert saved_epochs(out)[-1] == config["epochs"]


# --- bad input: clear errors, and nothing saved is touched -----------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "xor"
    fb.train("mlp", "xor", epochs=2, out=out)
    return out


def _snapshot(path: pathlib.Path):
    return {p: p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != rundir.LOCK}


BAD = [
    ({"model": "resnet"}, ValueError, r"unknown model 'resnet'.*'mlp'"),
    ({"data": "cifar"}, ValueError, r"unknown data 'cifar'.*'digits'"),
    ({"optimizer": "rmsprop"}, ValueError, r"unknown optimizer 'rmsprop'.*'adam'"),
    ({"mode": "batch"}, ValueError, r"unknown mode 'batch'.*'online'"),
    ({"grad": "numeric"}, ValueError, r"unknown grad 'numeric'.*'checked'"),
    ({"batch_size": 0}, ValueError, r"batch_size must be a positive int, received 0"),
    ({"batch_size": 401}, ValueError, r"batch_size 401 is larger than the training set \(400"),
    ({"lr": 0.0}, ValueError, r"learning rate must be a finite number > 0, received 0.0"),
    ({"lr": -1.0}, ValueError, r"> 0, received -1.0"),
    ({"epochs": 0}, ValueError, r"epochs must be a positive int"),
    ({"seed": -1}, ValueError, r"seed must be an int ≥ 0 and ≤ 4294967295, received -1"),
    ({"hidden": (8, 0)}, ValueError, r"each hidden width must be a positive int, received 0"),
    ({"mode": "online", "batch_size": 8}, ValueError, r"mode 'online' uses a batch of 1"),
    ({"model": "rnn", "hidden": (4, 4)}, ValueError, r"one hidden size"),
    ({"model": 3}, TypeError, r"model must be a name such as 'mlp' or an fbackprop.Network"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, kwargs, error, message,
                                                             monkeypatch):
    monkeypatch.setattr(registry, "rnn", lambda *a, **k: pytest.fail("must not be built"))
    kwargs = {"data": "xor", **kwargs}
    with pytest.raises(error, match=message):
        fb.train(out=tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


def test_labels_out_of_range():
    ds = _tiny("classification")._replace(y_test=np.array([0, 1, 2, 3, 0, 1]))
    with pytest.raises(ValueError, match=r"y_test has label 3 at index 3.*\[0, 3\)"):
        fb.train("mlp", ds)


def test_a_run_directory_is_never_clobbered(finished_run):
    before = _snapshot(finished_run)
    with pytest.raises(ValueError, match="already holds a training run.*--resume"):
        fb.train("mlp", "xor", epochs=2, out=finished_run)
    with pytest.raises(ValueError,
                       match=r"(?s)configuration differs.*batch_size: saved 16, now 8.*may change"):
        fb.train("mlp", "xor", batch_size=8, epochs=2, out=finished_run, resume=True)
    with pytest.raises(ValueError, match=r"last checkpoint is at epoch 2, past epochs=1"):
        fb.train("mlp", "xor", epochs=1, out=finished_run, resume=True)
    assert _snapshot(finished_run) == before


def test_resume_without_a_checkpoint(tmp_path, finished_run):
    with pytest.raises(ValueError, match="holds no run"):
        fb.train(out=tmp_path, resume=True)
    with pytest.raises(ValueError, match="needs out"):
        fb.train(resume=True)
    (tmp_path / "run").mkdir()  # a run killed before its first checkpoint starts from scratch
    (tmp_path / "run" / "config.json").write_text((finished_run / "config.json").read_text())
    with pytest.warns(fb.training.CheckpointWarning, match="starts from scratch"):
        result = fb.train(out=tmp_path / "run", resume=True)
    assert result.restored.epoch is None and len(result.history) == 2
    # the default checkpoints: a run of seconds saves its last epoch only
    assert saved_epochs(tmp_path / "run") == [2]


def test_cli_reports_errors_with_status_2(tmp_path, capsys):
    assert cli.main(["train", "--data", "xor", "--lr", "-1", "--out", str(tmp_path / "r")]) == 2
    assert "error: the learning rate must be" in capsys.readouterr().err
    assert cli.main(["train", "--resume"]) == 2
    assert "needs out (--out DIR)" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--lr", "-1"], ["--data", "text:missing.txt"],
                                  ["--data", "text:DIR"], ["--data", "text:"]],
                         ids=["bad lr", "missing file", "directory", "empty path"])
def test_cli_errors_come_first_on_one_line_and_leave_nothing(tmp_path, capsys, monkeypatch,
                                                             args):
    # issue 17 rows 2 and 7: the error before "run directory" and "device", no traceback, exit
    # 2, and no runs/<date> left behind when --out is not given
    monkeypatch.chdir(tmp_path)
    (tmp_path / "DIR").mkdir()
    assert cli.main(["train", "--data", "xor", *args, "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    if args[0] == "--data":
        assert repr(args[1][len("text:"):]) in captured.err  # names the path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DIR"]


def test_resuming_a_finished_run_says_how_to_continue(finished_run, capsys):
    # issue 17 row 5: a finished run is not re-reported as if it had trained
    before = _snapshot(finished_run)
    with pytest.raises(ValueError, match=r"already at epoch 2 of 2: pass --epochs M > 2"):
        fb.train(out=finished_run, resume=True)
    assert cli.main(["train", "--out", str(finished_run), "--resume", "--no-progress"]) == 2
    assert "already at epoch 2 of 2: pass --epochs M > 2 (epochs=M) to continue" in \
        capsys.readouterr().err
    assert _snapshot(finished_run) == before


def test_cli_prints_the_near_chance_warning_as_a_plain_line(tmp_path, capsys):
    # issue 17 row 8: a message on the command line, not Python's warning with a source line
    assert cli.main(["train", "--data", "xor", "--epochs", "1", "--optimizer", "sgd", "--lr",
                     "1e-9", "--seed", "1", "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "fbackprop train: warning: mlp on xor ended at test accuracy 46.0%, near chance" in err
    assert "Warning:" not in err and "warnings.warn" not in err


# --- the model registry: cnn/rnn/lstm are issue 3's constructors, looked up at call time -----

def _time_mean():
    """A stand-in for a sequence layer, free of convolution and recurrence: the mean over the
    time axis, (batch, T, n) → (batch, n), with its hand-written derivative."""
    def apply(p, a):
        return jnp.mean(a, axis=1)

    def D_input(p, a, d):
        return jnp.broadcast_to(d[:, None, :] / a.shape[1], a.shape)  # each step gets d / T

    return fb.Layer(lambda key: {}, apply, D_input, lambda p, a, d: {}, name="time-mean")


def _recording(calls, name):
    def ctor(*args, **kwargs):
        calls.append((name, args, kwargs))
        if name == "cnn":
            return fb.mlp((int(np.prod(args[0])), kwargs["n_out"]))
        n_in, _, n_out = args
        return fb.serial(_time_mean(), fb.dense(n_in, n_out, "identity"),
                         input_shape=(None, n_in), name=f"fake {name}")
    return ctor


def test_registry_builds_the_models_and_shapes_the_data(monkeypatch):
    calls = []
    for name in ("cnn", "rnn", "lstm"):
        monkeypatch.setattr(registry, name, _recording(calls, name))
    images = _tiny("classification")._replace(
        x_train=np.zeros((12, 8, 8), np.float32), x_test=np.zeros((6, 8, 8), np.float32))
    signals = images._replace(x_train=np.zeros((12, 40), np.float32),
                              x_test=np.zeros((6, 40), np.float32))
    training.build_model("cnn", images)
    training.build_model("cnn", signals, hidden=(32,))
    training.build_model("rnn", images)
    training.build_model("lstm", signals, hidden=16)
    assert calls == [
        ("cnn", ((1, 8, 8),), dict(conv_channels=(16,), kernel_size=3, pool_size=2, pool="mean",
                                   hidden=(64,), n_out=3, activation="relu",
                                   output_activation="identity")),
        ("cnn", ((1, 40),), dict(conv_channels=(32, 32), kernel_size=5, pool_size=2,
                                 pool="mean", hidden=(32,), n_out=3, activation="relu",
                                 output_activation="identity")),
        ("rnn", (8, 64, 3), {"output": "last"}),   # digits: 8 steps of 8 features
        ("lstm", (1, 16, 3), {"output": "last"}),  # MNIST-1D: 40 steps of 1 feature
    ]
    # a sequence network (input shape (None, n_in)) trains on images read row by row
    result = fb.train("rnn", images, epochs=1, batch_size=4)
    assert result.net.name == "fake rnn" and len(result.history) == 1


def test_an_unreadable_checkpoint_falls_back_to_the_one_before(tmp_path):
    saving = checkpoints.Checkpoints(tmp_path, asynchronous=False)
    for n in (1, 2):
        saving.save(n, {"w": jnp.full((3,), float(n)), "epoch": n})
    saving.close()
    (tmp_path / "checkpoints" / "2" / "default" / "_METADATA").write_text("{")  # torn file
    restored = checkpoints.restore_latest(tmp_path, {"w": jnp.zeros(3), "epoch": 0})
    assert restored.epoch == 1 and restored.state["w"].tolist() == [1.0, 1.0, 1.0]
    assert restored.skipped[0][0] == 2 and "orbax cannot read it" in restored.skipped[0][1]


# --- device, defaults per data set, warnings, load_run, the command's manners -----------------

def test_load_run_gives_the_network_the_last_parameters_and_the_config(finished_run):
    net, params, config = fb.load_run(finished_run)
    assert config.model == "mlp" and config.data == "xor" and config.epochs == 2
    ds = fb.data.xor()
    x, y = np.asarray(ds.x_test, np.float32), training.targets(ds, ds.y_test)
    accuracy = float(np.mean((np.asarray(net.apply(params, x))[:, 0] > 0) == (y[:, 0] > 0)))
    last = metrics.read_metrics(finished_run)[-1]
    assert accuracy == pytest.approx(last["test_accuracy"], abs=1e-6)
    with pytest.raises(ValueError, match="holds no run"):
        fb.load_run(finished_run.parent / "nothing here")


def test_checked_gradients_record_their_largest_relative_error():
    # right rules: the recorded error is within tolerance (it may be exactly 0: the hand-written
    # dense rules are the same matrix products jax.grad emits)
    result = fb.train("mlp", _tiny("classification"), epochs=2, batch_size=4, grad="checked",
                      check_every=1)
    errors = [row["check_max_rel_error"] for row in result.history]
    assert all(0 <= e <= fb.gradcheck.TOLERANCE["float32"] for e in errors), errors
    # a weight gradient 1e-5 too large (under the tolerance, so training goes on): the recorded
    # error is that relative error, so the metric measures the rules rather than printing a constant
    net = fb.mlp((3, 8, 3), "relu", "identity")
    first = net.layers[0]
    scaled = first._replace(
        D_param=lambda p, a, d: jax.tree.map(lambda g: g * (1 + 1e-5), first.D_param(p, a, d)))
    off = fb.train(fb.serial(scaled, *net.layers[1:]), _tiny("classification"), epochs=2,
                   batch_size=4, grad="checked", check_every=1)
    errors = [row["check_max_rel_error"] for row in off.history]
    assert all(5e-6 < e < 2e-5 for e in errors), errors


def test_recurrent_models_read_signals_features_per_step():
    signals = _tiny("classification")._replace(
        x_train=np.zeros((12, 40), np.float32), x_test=np.zeros((6, 40), np.float32),
        name="mnist1d")
    result = fb.train("rnn", signals, epochs=1, batch_size=4)
    assert result.config.features_per_step == 8              # MNIST-1D's default: 5 steps of 8
    assert result.net.layers[0].name.startswith("rnn(8→")
    assert fb.train("lstm", signals, epochs=1, batch_size=4,
                    features_per_step=4).net.layers[0].name.startswith("lstm(4→")
    with pytest.raises(ValueError, match="must divide the signal length 40"):
        fb.train("rnn", signals, epochs=1, batch_size=4, features_per_step=3)
    with pytest.raises(ValueError, match="features_per_step applies to the recurrent models"):
        fb.train("mlp", signals, epochs=1, batch_size=4, features_per_step=8)


def test_a_run_near_chance_warns():
    ds = _tiny("classification")
    with pytest.warns(RuntimeWarning, match="near chance"):
        fb.train("mlp", ds._replace(y_test=(ds.y_test + 1) % 3), epochs=1, batch_size=4,
                 optimizer="sgd", lr=1e-9)


def test_ctrl_c_prints_the_resume_command_and_logs_are_quiet(tmp_path, capsys, monkeypatch):
    import logging

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train_prepared", interrupted)
    logging.getLogger("absl").setLevel(logging.INFO)
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert f"fbackprop train --out {out} --resume" in err and "Traceback" not in err
    assert logging.getLogger("absl").level == logging.CRITICAL  # failed saves: said once
