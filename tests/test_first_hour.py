"""What a new user meets in the first hour, each as it should be: predictions from a saved run
shaped as training shaped them, a short ``TrainResult`` repr, a missing run directory named as
such, hints that fit (the network given, the flags the command has), plurals, and a ``--help``
that does not import JAX."""
import ast
import pathlib
import re
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fbackprop as fb
from fbackprop import cli
from fbackprop.gradcheck import sample_point

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_disk_cache(monkeypatch):
    monkeypatch.setenv("FBACKPROP_CACHE_DIR", "")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """mlp on digits and cnn on mnist1d, one epoch each, saved."""
    out = tmp_path_factory.mktemp("runs")
    with jax.enable_x64(False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*near chance", RuntimeWarning)  # one epoch
        return {(m, d): fb.train(m, d, epochs=1, hidden=(8,), out=out / f"{m}-{d}")
                for m, d in (("mlp", "digits"), ("cnn", "mnist1d"))}


@pytest.mark.float32
@pytest.mark.parametrize("pair", [("mlp", "digits"), ("cnn", "mnist1d")])
def test_predict_shapes_the_data_sets_examples_as_training_did(runs, pair):
    result = runs[pair]
    net, params, _ = fb.load_run(result.out)
    x, y = result.data.x_test, result.data.y_test
    with pytest.raises(ValueError):  # the examples as the data set holds them do not fit apply
        net.apply(params, x)
    logits = fb.predict(net, params, x)
    assert logits.shape == (len(x), 10)
    # the accuracy the trainer measured on the same examples, from the network's predictions
    accuracy = float(np.mean(np.argmax(np.asarray(logits), -1) == y))
    assert accuracy == pytest.approx(result.history[-1]["test_accuracy"], abs=1e-6)
    np.testing.assert_array_equal(np.asarray(fb.predict(result.out, x)), np.asarray(logits))
    np.testing.assert_array_equal(np.asarray(fb.predict(str(result.out), x[:3])),
                                  np.asarray(logits[:3]))


def test_predict_refuses_mixed_up_arguments(runs):
    result = runs["mlp", "digits"]
    with pytest.raises(ValueError, match="no examples x"):
        fb.predict(result.net, result.params)
    with pytest.raises(ValueError, match="parameters come from its checkpoint"):
        fb.predict(result.out, result.params, result.data.x_test)
    with pytest.raises(TypeError, match="Network .*or a run directory"):
        fb.predict(result.params, result.data.x_test)


def test_a_train_result_reprs_in_a_few_words(runs):
    result = runs["mlp", "digits"]
    text = repr(result)
    assert len(text) < 300, text
    for part in ("model='mlp'", "data='digits'", "epochs=1 of 1", "test_accuracy=",
                 f"out={str(result.out)!r}"):
        assert part in text, text


def test_sample_names_a_missing_run_directory(tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "dir"
    assert cli.main(["sample", "--out", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"no run directory at {missing}" in err and "vocab.json" not in err, err


def test_sample_point_hints_at_the_shape_the_network_lacks():
    mine = fb.Layer(lambda key: (), lambda p, a: jnp.tanh(a),
                    lambda p, a, d: d * (1 - jnp.tanh(a) ** 2), lambda p, a, d: (), name="mine")
    net = fb.serial(fb.dense(4, 8, "tanh"), mine, fb.dense(8, 3, "identity"))
    with pytest.raises(ValueError) as err:
        sample_point(net, "mse", 2)
    assert "sequence" not in str(err.value) and "input_shape=(n_in,)" in str(err.value)
    rnn = fb.rnn(n_in=3, n_hidden=4, n_out=2, output="last")
    with pytest.raises(ValueError, match=re.escape("input_shape=(5, 3)")):
        sample_point(rnn, "mse", 2)


def _flags_named_in_strings():
    for path in (ROOT / "fbackprop").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", node.value):
                    yield flag, path.relative_to(ROOT)


def test_every_flag_a_message_names_is_an_option_of_the_command():
    parser = cli.build_parser()
    options = set(parser._option_string_actions)
    for sub in parser._subparsers._group_actions[0].choices.values():
        options |= set(sub._option_string_actions)
    unknown = {(flag, str(path)) for flag, path in _flags_named_in_strings() if flag not in options}
    assert not unknown, unknown


def test_the_cnn_refusal_names_no_option_the_command_lacks(tmp_path, capsys):
    assert cli.main(["train", "--model", "cnn", "--data", "xor", "--out", str(tmp_path / "r"),
                     "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "'cnn'" in err and "'xor'" in err and "kernel_size" not in err, err


def test_counts_read_in_the_singular_for_one():
    from fbackprop.commands import plural

    assert [plural(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
    # the run summary uses it: test_matrix.py checks "1 epoch," and "1 feature per step"


@pytest.mark.parametrize("args", [["--help"], ["--version"], []])
def test_help_and_version_do_not_import_jax(args):
    code = ("import sys\nfrom fbackprop import cli\n"
            f"try:\n    cli.main({args!r})\nexcept SystemExit:\n    pass\n"
            "print('jax' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stdout + proc.stderr


def test_the_help_lists_every_command_and_a_command_still_gets_its_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "--features-per-step" in capsys.readouterr().out


@pytest.fixture
def figures(monkeypatch):
    """The figures ``write_plot`` saves, captured as they are saved."""
    from matplotlib.figure import Figure

    saved, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (saved.append(fig),
                                                                   save(fig, *a, **k)))
    return saved


@pytest.mark.float32
@pytest.mark.filterwarnings("ignore:.*near chance:RuntimeWarning")  # two epochs learn little
def test_a_text_run_shows_the_loss_per_token_with_its_unit_and_no_machine_path(
        tmp_path, figures, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the rule beside its forward, checked against jax.grad.\n" * 60)
    result = fb.train("transformer", f"text:{corpus}", epochs=2, hidden=(8,),
                      out=tmp_path / "run", progress=True)
    row = result.history[-1]
    assert row["loss_per_token"] == pytest.approx(row["loss"] / 64, rel=1e-5)  # 64 positions
    assert "nats/token=" in capsys.readouterr().err  # the progress bar
    (fig,) = figures
    title, (ax_loss, _) = fig.get_suptitle(), fig.axes
    assert "text:corpus.txt" in title and str(tmp_path) not in title, title
    assert "nats per token" in ax_loss.get_ylabel()
    train_line = ax_loss.get_lines()[0]
    np.testing.assert_allclose(train_line.get_ydata(),
                               [r["loss_per_token"] for r in result.history])


def test_a_regression_plot_has_no_empty_panel(tmp_path, figures):
    from fbackprop.training.metrics import write_plot

    rows = [{"epoch": e, "loss": 1.0 / e, "test_loss": 1.2 / e, "train_accuracy": None,
             "test_accuracy": None} for e in (1, 2, 3)]
    write_plot(tmp_path, rows, "mlp on sine")
    (fig,) = figures
    assert len(fig.axes) == 1 and "½‖y − a‖²" in fig.axes[0].get_ylabel()
    assert (tmp_path / "plot.png").stat().st_size > 0


def test_every_public_name_imports_on_first_use():
    lazy = {*fb._HOME, *fb._SUBMODULES}
    assert lazy == set(fb.__all__), lazy ^ set(fb.__all__)
    for name in fb.__all__:
        assert getattr(fb, name) is not None
    assert "predict" in dir(fb)
    code = ("import fbackprop as fb\n"
            "print(fb.training.MODELS[0], fb.gradcheck.TOLERANCE['float64'], fb.suite.__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.split() == ["mlp", "1e-10", "fbackprop.suite"], proc.stderr
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        fb.nonesuch  # noqa: B018
