"""A fast start: the default ``fbackprop train`` imports only what it uses (no scikit-learn for
the digits, no notebook or other frameworks' packages); timings are measured by
scripts/bench_start.py, not tested."""
import json
import os
import subprocess
import sys

import numpy as np

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


def test_digits_read_without_scikit_learn_equal_scikit_learns():
    from sklearn.datasets import load_digits

    pixels, labels = data._digits_arrays()
    want_pixels, want_labels = load_digits(return_X_y=True)
    np.testing.assert_array_equal(pixels, want_pixels)
    np.testing.assert_array_equal(labels, want_labels)
