"""Every model family trains on every data set it fits, and refuses every other one clearly.

The matrix of ``FAMILIES`` × data sets is stated here, independently of the code: the feature
families (mlp, rnn, lstm, gru) read every feature data set, the cnn reads signals and images
(digits, mnist1d), the transformer reads token sequences (modadd, text:PATH). Each fitting pair
trains for one epoch with small settings through ``fb.train`` and through the command line (in
process, ``fbackprop.cli.main``; one pair also in a real subprocess); each other pair must be
refused before training with a message that names the model and the data: a ``ValueError`` from
``fb.train``, exit status 2 from the command. A new family in ``FAMILIES`` fails
``test_the_matrix_covers_every_family`` until it is placed in the matrix.
"""
import json
import math
import os
import subprocess
import sys

import pytest

import fbackprop as fb
from fbackprop import cli
from fbackprop.training.registry import FAMILIES

FEATURES = ("digits", "mnist1d", "xor", "sine", "logistic2d")
SEQUENCES = ("modadd", "text")
FITS = {"mlp": FEATURES, "rnn": FEATURES, "lstm": FEATURES, "gru": FEATURES,
        "cnn": ("digits", "mnist1d"), "transformer": SEQUENCES}
PAIRS = [(m, d) for m in FITS for d in (*FEATURES, *SEQUENCES)]
FITTING = [p for p in PAIRS if p[1] in FITS[p[0]]]
MISMATCHED = [p for p in PAIRS if p[1] not in FITS[p[0]]]
HIDDEN = {"transformer": "8"}  # one block of width 8; the others: 8 hidden units / state size


@pytest.fixture(autouse=True)
def _no_disk_cache(monkeypatch):
    monkeypatch.setenv("FBACKPROP_CACHE_DIR", "")  # the command's compilation cache stays off


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("the hand-written rule beside its forward, checked against jax.grad.\n" * 48,
                    encoding="utf-8")
    return path


def _data(name, corpus):
    return f"text:{corpus}" if name == "text" else name


def test_the_matrix_covers_every_family():
    assert set(FITS) == set(FAMILIES), "place each model family of FAMILIES in FITS"


@pytest.mark.float32
@pytest.mark.filterwarnings("ignore:.*near chance:RuntimeWarning")  # one epoch learns little
@pytest.mark.parametrize("model,data", FITTING, ids=[f"{m}-{d}" for m, d in FITTING])
def test_each_family_trains_one_epoch_on_each_data_set_it_fits(model, data, corpus, tmp_path,
                                                                capsys):
    data = _data(data, corpus)
    hidden = HIDDEN.get(model, "8")
    result = fb.train(model, data, epochs=1, hidden=(int(hidden),))
    assert len(result.history) == 1 and math.isfinite(result.history[0]["loss"])
    # the same run from the command line (the compiled epoch is found again in this process)
    status = cli.main(["train", "--model", model, "--data", data, "--epochs", "1",
                       "--hidden", hidden, "--out", str(tmp_path / "run"), "--no-progress"])
    assert status == 0
    summary = capsys.readouterr().out
    assert f"{model} on {data}" in summary and "1 epoch," in summary, summary  # singular
    if model in ("rnn", "lstm", "gru") and data == "xor":
        assert "1 feature per step" in summary, summary
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1 and math.isfinite(json.loads(rows[0])["loss"])


@pytest.mark.parametrize("model,data", MISMATCHED, ids=[f"{m}-{d}" for m, d in MISMATCHED])
def test_each_mismatched_pair_is_refused_naming_the_model_and_the_data(model, data, corpus,
                                                                       tmp_path, capsys):
    data = _data(data, corpus)
    with pytest.raises(ValueError) as err:
        fb.train(model, data, epochs=1)
    assert repr(model) in str(err.value) and repr(data) in str(err.value), str(err.value)
    status = cli.main(["train", "--model", model, "--data", data, "--epochs", "1",
                       "--out", str(tmp_path / "run"), "--no-progress"])
    assert status == 2
    stderr = capsys.readouterr().err
    assert repr(model) in stderr and repr(data) in stderr, stderr


@pytest.mark.filterwarnings("ignore:.*near chance:RuntimeWarning")
def test_the_installed_command_trains_a_gru_on_mnist1d(tmp_path):
    env = {**os.environ, "FBACKPROP_CACHE_DIR": ""}
    proc = subprocess.run([sys.executable, "-m", "fbackprop", "train", "--model", "gru",
                           "--data", "mnist1d", "--epochs", "1", "--hidden", "8",
                           "--out", str(tmp_path / "run"), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "gru on mnist1d" in proc.stdout
