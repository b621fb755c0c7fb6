"""`fbackprop check`: the table, --json, --model/--fd, exit status 1 when a rule is wrong and 2
when nothing matches; the persistent compilation cache."""
import json
import os
import subprocess
import sys

import pytest

import fbackprop as fb
from fbackprop import cli, suite


@pytest.fixture(autouse=True)
def no_persistent_cache(monkeypatch):
    """In-process runs must not turn on JAX's disk cache for the rest of the test session."""
    monkeypatch.setenv("FBACKPROP_CACHE_DIR", "")


def test_check_prints_a_table_and_passes(capsys):
    assert cli.main(["check", "--cost", "logistic", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "max rel err" in out and "logistic" in out
    assert "passed" in out and "FAILED" not in out


def test_check_json(capsys):
    assert cli.main(["check", "--cost", "sse", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert {r["dtype"] for r in report["rows"]} == {"float32", "float64"}
    assert all(r["max_rel_error"] <= r["tolerance"] for r in report["rows"])


def _planted():
    good = fb.dense(2, 2, "tanh")
    # a classic mistake: the propagated delta forgets g'(z)
    wrong = fb.Layer(good.init, good.apply, lambda p, a, d: d @ p["W"], good.D_param, name="wrong")
    # layer 1's propagated delta feeds layer 0's gradient (layer 0's D_input is never needed)
    return fb.serial(fb.dense(3, 2), wrong, input_shape=(3,), name="planted")


@pytest.fixture
def planted_config(monkeypatch):
    monkeypatch.setattr(suite, "builtin_configs",
                        lambda: [suite.Config("mlp", "planted", "tanh", "mse", _planted)])


def test_check_fails_with_exit_status_1_on_a_wrong_rule(capsys, planted_config):
    assert cli.main(["check", "--dtype", "float64"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "(layers [1])" in out
    # the failing configuration's per-layer report names the wrong rule
    assert "layer 1: wrong" in out and "D_input" in out and "failing layers [1]" in out


def test_check_json_of_a_failure_with_fd(capsys, planted_config):
    assert cli.main(["check", "--dtype", "float64", "--fd", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["rows"][0]["failing_layers"] == [1]
    (failure,) = out["failures"]
    assert failure["finite_differences"]["eps"] == fb.gradcheck.FD_EPS
    bad = [r for r in failure["rows"] if r["status"] == "fail"]
    assert {r["layer"] for r in bad} == {1, None}
    assert any("hand-written gradient is wrong" in r["note"] for r in bad)


def test_model_without_configurations_exits_2(capsys, planted_config):
    assert cli.main(["check", "--model", "lstm"]) == 2
    err = capsys.readouterr().err
    assert "no built-in configurations for model 'lstm'" in err and "mlp" in err
    assert cli.main(["check", "--model", "mlp", "--cost", "logistic"]) == 2
    assert "no mlp configuration uses cost 'logistic'" in capsys.readouterr().err


def test_fd_in_float32_exits_2(capsys):
    assert cli.main(["check", "--fd", "--dtype", "float32"]) == 2
    assert "--fd needs float64" in capsys.readouterr().err


def test_persistent_compilation_cache_is_written(tmp_path):
    script = ("import fbackprop as fb\n"
              "from fbackprop import cli, suite\n"
              "suite.builtin_configs = lambda: [suite.Config('mlp', 'tiny', 'tanh', 'mse', "
              "lambda: fb.mlp((2, 2), 'tanh'))]\n"
              "raise SystemExit(cli.main(['check', '--model', 'mlp', '--dtype', 'float64']))\n")
    env = {**os.environ, "FBACKPROP_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "1/1 passed" in proc.stdout
    assert any((tmp_path / "cache").iterdir())


def test_module_entry_point_help(capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "check" in capsys.readouterr().out


TARGETS = '''
import jax
import jax.numpy as jnp
import numpy as np
import fbackprop as fb


def layer():
    l = fb.dense(3, 2, "tanh")
    return l, (l.init(jax.random.PRNGKey(0)), np.ones((4, 3)))


def wrong_layer():
    l = fb.dense(3, 2, "tanh")
    l = l._replace(D_input=lambda p, a, d: d @ p["W"])  # forgets g'(z)
    return l, (l.init(jax.random.PRNGKey(0)), np.linspace(-1, 1, 12).reshape(4, 3))


def network():
    net = fb.mlp((3, 4, 2), "tanh")
    params, x, y = fb.gradcheck.sample_point(net, "mse", 3)
    return net, ("mse", params, x, y), {"tolerance": 1e-9}


@jax.custom_vjp
def cube(x):
    return x ** 3


cube.defvjp(lambda x: (x ** 3, x), lambda x, d: (3 * x ** 2 * d,))


def custom():
    return cube, (np.arange(1.0, 4.0),)


def not_a_tuple():
    return fb.dense(3, 2)
'''


@pytest.fixture
def targets(tmp_path, monkeypatch):
    (tmp_path / "mytargets.py").write_text(TARGETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "mytargets"
    sys.modules.pop("mytargets", None)


@pytest.mark.parametrize("factory", ["layer", "network", "custom"])
def test_check_target_passes(capsys, targets, factory):
    assert cli.main(["check", "--target", f"{targets}:{factory}"]) == 0
    assert "ok: every comparison passed" in capsys.readouterr().out


def test_check_target_failure_json_and_fd(capsys, targets):
    assert cli.main(["check", "--target", f"{targets}:wrong_layer", "--fd", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["report"]["failing_layers"] == [0]
    assert out["report"]["finite_differences"]["eps"] == fb.gradcheck.FD_EPS
    assert any(r["rule"] == "D_input" and r["status"] == "fail" for r in out["report"]["rows"])


@pytest.mark.parametrize("spec,message", [
    ("nocolon", "MODULE:FACTORY"),
    ("no_such_module_xyz:f", "cannot import module"),
    ("{m}:missing", "expected a function 'missing'"),
    ("{m}:not_a_tuple", "must return (obj, args)"),
])
def test_check_target_bad_usage_exits_2(capsys, targets, spec, message):
    assert cli.main(["check", "--target", spec.format(m=targets)]) == 2
    assert message in capsys.readouterr().err


def test_check_fd_table_has_an_fd_tolerance_column(capsys, planted_config):
    assert cli.main(["check", "--dtype", "FLOAT64", "--fd", "--model", "MLP"]) == 1
    out = capsys.readouterr().out
    assert "FD rel err" in out and "FD tol" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"fbackprop {fb.__version__}"


def test_output_into_a_closed_pipe_is_quiet(monkeypatch):
    """`fbackprop errata --markdown | head`: a reader that has gone away gives no traceback,
    and exit status 141 as a shell tool's."""
    from fbackprop.commands import errata

    def flood(args):
        for _ in range(20000):
            print("| an equation | holds |")
        return 0

    monkeypatch.setattr(errata, "run", flood)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    monkeypatch.setattr(sys, "stdout", os.fdopen(write_end, "w"))
    assert cli.main(["errata", "--text", "gordon", "--markdown"]) == 141
