"""The benchmark scripts under scripts/ run, at tiny sizes, and say what they claim.

Speed is never timed here. Memory is XLA's compiled memory analysis, exact for the compiler that
built the program, so the table's claim (hand-written ≤ jax.grad in temporary bytes) is checked.
"""
import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parent.parent / "scripts"


def load_script(name):
    """Import ``scripts/<name>.py`` as a module (scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.float32
def test_bench_memory_smoke_covers_every_family_and_hand_written_needs_no_more_scratch(capsys):
    bench = load_script("bench_memory")
    rows = bench.main(["--smoke"])
    assert {r["model"] for r in rows} == {"mlp", "cnn", "rnn", "lstm", "gru", "transformer"}
    for r in rows:
        for side in ("manual", "recompute", "autodiff"):
            for part in ("grad", "step"):
                assert all(r[side][part][k] > 0 for k in ("temp", "argument", "output")), r
        # the same parameters, optimizer state and batch go in and come out on both sides
        assert r["manual"]["step"]["argument"] == r["autodiff"]["step"]["argument"]
        assert r["grad_temp_ratio"] <= 1.0 and r["step_temp_ratio"] <= 1.0, r
    # the fused recurrent rules keep only the deltas that recur: strictly less than autodiff
    assert all(r["grad_temp_ratio"] < 0.8 for r in rows if r["model"] in ("rnn", "lstm", "gru"))
    assert all(r["recompute"]["step"]["argument"] == r["manual"]["step"]["argument"]
               for r in rows)
    table = capsys.readouterr().out
    assert table.count("\n| ") == len(rows) + 2 and "ratio, recompute" in table


@pytest.mark.float32
def test_recompute_gives_the_same_gradient():
    import fbackprop as fb

    net = fb.transformer(11, 8, 2, 2, 6)
    params = net.init(jax.random.PRNGKey(0))
    x = jax.random.randint(jax.random.PRNGKey(1), (3, 6), 0, 11)
    y = jax.random.randint(jax.random.PRNGKey(2), (3, 6), 0, 11)
    plain = jax.jit(fb.manual_grad(net, "softmax_cross_entropy"))(params, x, y)
    again = jax.jit(fb.manual_grad(net, "softmax_cross_entropy", recompute=True))(params, x, y)
    for u, v in zip(jax.tree.leaves(plain), jax.tree.leaves(again)):
        assert jnp.allclose(u, v, rtol=1e-5, atol=1e-7)
    with pytest.raises(TypeError, match="recompute"):
        fb.manual_grad(net, "softmax_cross_entropy", recompute="yes")


@pytest.mark.float32
def test_gpt2_step_smoke_takes_a_bf16_step_whose_slice_equals_jax_grad(capsys):
    script = load_script("gpt2_step")
    row = script.main(["--smoke"])
    net = script.build(script.SMOKE)
    assert row["params"] == sum(v.size for v in jax.tree.leaves(net.init(jax.random.PRNGKey(0))))
    assert row["manual"]["step_s"] > 0 and 0 < row["manual"]["mfu"]
    check = row["check"]
    assert check["float64_rel_error"] <= 1e-10, check  # the hand-written rules = jax.grad
    assert check["bf16_error_ratio"] <= 2.0, check     # bf16: within autodiff's own error budget
    assert "MFU" in capsys.readouterr().out


@pytest.mark.float32
def test_gpu_report_smoke_writes_every_row_with_a_verdict(tmp_path, capsys):
    # every section but gpt2, whose script test_gpt2_step_smoke runs
    report = load_script("gpu_report")
    sections = [s for s in report.SECTIONS if s != "gpt2"]
    rep = report.main(["--smoke", "--out", str(tmp_path), "--only", ",".join(sections)])
    saved = json.loads((tmp_path / "gpu_report.json").read_text())
    assert saved["rows"] == rep["rows"] and saved["platform"] == jax.devices()[0].platform
    names = " ".join(r["row"] for r in rep["rows"])
    for part in ("ceiling", "mlp", "lstm", "rnn", "gru", "digits epoch", "fbackprop check"):
        assert part in names, names
    for r in rep["rows"]:
        assert not r["note"].startswith("failed"), r      # no section crashed
        assert r["value"] is not None or r["note"].startswith("not measured"), r
    check = next(r for r in rep["rows"] if r["row"].startswith("fbackprop check"))
    assert check["met"], check                            # the command passed
    table = (tmp_path / "gpu_report.md").read_text()
    assert table.count("\n| ") == len(rep["rows"]) + 2 and table in capsys.readouterr().out


@pytest.mark.float32
@pytest.mark.filterwarnings("ignore:.*near chance")  # one epoch of xor learns little
def test_precision_runs_smoke_compares_every_seed_with_fp32(capsys):
    script = load_script("precision_runs")
    (row,) = script.main(["--smoke"])
    assert row["seeds"] == [0, 1] and set(row["runs"]) == {"fp32", "bf16"}
    assert all(0 <= a <= 100 for runs in row["runs"].values() for a in runs)
    mean, _ = script.differences(row, "bf16")
    assert mean == pytest.approx(sum(row["runs"]["bf16"]) / 2 - sum(row["runs"]["fp32"]) / 2)
    table = capsys.readouterr().out
    assert "bf16 − fp32, mean ± sd" in table and "`mlp` on `xor`" in table
