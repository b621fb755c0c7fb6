"""`fbackprop check`: the table, --json, and exit status 1 when a rule is wrong."""
import json

import fbackprop as fb
from fbackprop import cli, verify


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


def test_check_fails_with_exit_status_1_on_a_wrong_rule(capsys, monkeypatch):
    good = fb.dense(2, 2, "tanh")
    # a classic mistake: the propagated delta forgets g'(z)
    wrong = fb.Layer(good.init, good.apply, lambda p, a, d: d @ p["W"], good.D_param, name="wrong")

    def make():
        # layer 1's propagated delta feeds layer 0's gradient (layer 0's D_input is never needed)
        return fb.serial(fb.dense(3, 2), wrong, input_shape=(3,), name="planted")

    monkeypatch.setattr(verify, "builtin_configs",
                        lambda: [verify.Config("mlp", "planted", "tanh", "mse", make)])
    assert cli.main(["check", "--dtype", "float64"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_module_entry_point_help(capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "check" in capsys.readouterr().out
