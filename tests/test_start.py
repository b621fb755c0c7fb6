"""A fast start: the default ``fbackprop train`` imports only what it uses (no scikit-learn for
the digits, no notebook or other frameworks' packages); timings are measured by
scripts/bench_start.py, not tested."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fbackprop import data

NOT_IMPORTED = ("sklearn", "scipy.optimize", "pandas", "nbclient", "nbformat", "flax", "equinox",
                "torch", "mnist1d", "tensorflow")


def test_the_default_train_imports_no_package_it_does_not_use(tmp_path):
    code = ("import json, sys\n"
            "from fbackprop.cli import main\n"
            f"status = main(['train', '--out', {str(tmp_path / 'run')!r}, '--epochs', '1',\n"
            "               '--no-progress'])\n"
            "print(json.dumps({'status': status, 'modules': sorted(sys.modules)}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path,
                          env={**os.environ, "FBACKPROP_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 0
    loaded = {m for m in result["modules"]
              for name in NOT_IMPORTED if m == name or m.startswith(name + ".")}
    assert not loaded, sorted(loaded)
    assert "orbax.checkpoint" in result["modules"]  # the run directory's checkpoints: used
    # the plot is drawn by the plot process, which imported matplotlib on another core
    assert "matplotlib" not in result["modules"]
    assert (tmp_path / "run" / "plot.png").stat().st_size > 10_000


def test_digits_read_without_scikit_learn_equal_scikit_learns():
    from sklearn.datasets import load_digits

    pixels, labels = data._digits_arrays()
    want_pixels, want_labels = load_digits(return_X_y=True)
    np.testing.assert_array_equal(pixels, want_pixels)
    np.testing.assert_array_equal(labels, want_labels)


def test_default_checkpoints_are_at_most_one_per_ten_seconds_and_always_the_last_epoch():
    from fbackprop.training.config import CHECKPOINT_SECONDS, checkpoint_due

    due = [e for e in range(1, 41) if checkpoint_due(None, 40, e, since_save=0.5)]
    assert due == [40]  # a fast run: its end alone
    slow = [e for e in range(1, 41) if checkpoint_due(None, 40, e, CHECKPOINT_SECONDS)]
    assert slow == list(range(2, 41, 2))  # slow epochs: every epochs // 20
    assert [e for e in range(1, 6) if checkpoint_due(1, 5, e, 0.0)] == [1, 2, 3, 4, 5]
    assert [e for e in range(1, 8) if checkpoint_due(3, 7, e, 1e9)] == [3, 6, 7]
    # several processes decide alike without a clock: the epoch rule alone
    assert [e for e in range(1, 5) if checkpoint_due(None, 4, e, 0.0, processes=2)] == [
        1, 2, 3, 4]


def _rows():
    return [{"epoch": e, "loss": 1.0 / e, "test_loss": 1.1 / e, "train_accuracy": 0.5 + e / 10,
             "test_accuracy": 0.5 + e / 20} for e in (1, 2, 3)]


def test_the_plot_process_draws_the_plot_and_reports_what_stops_it(tmp_path):
    from fbackprop.plotting import PlotProcess

    PlotProcess().draw(tmp_path, _rows(), "mlp on digits")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = tmp_path / "no" / "such"
    with pytest.raises(OSError, match="No such file"):
        PlotProcess().draw(missing, _rows(), "")  # the process's error, raised here
    idle = PlotProcess()
    idle.close()  # an unused process ends
    assert idle._proc is None


def test_a_plot_process_that_died_leaves_the_drawing_to_the_run(tmp_path):
    from fbackprop.plotting import PlotProcess

    dead = PlotProcess()
    dead._proc.kill()
    dead._proc.wait()
    dead.draw(tmp_path, _rows(), "drawn here")
    assert (tmp_path / "plot.png").stat().st_size > 10_000
