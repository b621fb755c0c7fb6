"""Fault injection: SIGKILL at seeded random moments, damaged checkpoints and metrics, a second
process on the same run. Each fault ends in the outcome docs/TRAINING.md documents: a resume
bit-identical to an uninterrupted run, a fallback that says what it skipped, or an error naming
the file — never silence."""
import gc
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import saved_epochs

import fbackprop as fb
from fbackprop import training
from fbackprop.data import xor
from fbackprop.training import checkpoints, metrics, rundir

pytestmark = pytest.mark.float32  # the trainer's float32, as in the CLI processes compared

EPOCHS = 4
SETTINGS = dict(data="xor", epochs=EPOCHS, checkpoint_every=1)


def _like():
    """A state shaped like the xor run's: what checkpoints are restored into."""
    params = training.build_model("mlp", xor()).init(jax.random.PRNGKey(0))
    return {"params": params, "opt_state": optax.adam(1.0).init(params),
            "key": jax.random.PRNGKey(0), "epoch": jnp.zeros((), jnp.int32)}


def _equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished xor run (checkpoints of epochs 2, 3, 4 kept) and its final state."""
    out = tmp_path_factory.mktemp("faults") / "run"
    fb.train("mlp", out=out, **SETTINGS)
    restored = checkpoints.restore_latest(out, _like())
    assert restored.epoch == EPOCHS and not restored.skipped
    return out, restored.state


@pytest.fixture
def run(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    return out


def _data_file(out, epoch):
    """The largest array-data file of a step (what orbax reads the arrays from)."""
    return max((out / "checkpoints" / str(epoch) / "default" / "d").iterdir(),
               key=lambda p: p.stat().st_size)


def _truncate(out):
    f = _data_file(out, EPOCHS)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _empty(out):
    _data_file(out, EPOCHS).write_bytes(b"")


def _random_bytes(out):
    f = _data_file(out, EPOCHS)
    b = bytearray(f.read_bytes())
    b[len(b) // 3: len(b) // 3 + 256] = np.random.default_rng(0).bytes(256)
    f.write_bytes(bytes(b))


def _bit_flip(out):
    f = _data_file(out, EPOCHS)
    b = bytearray(f.read_bytes())
    b[len(b) // 2] ^= 0x10
    f.write_bytes(bytes(b))


def _swapped_arrays(out):  # a complete, readable step holding another step's arrays
    step = out / "checkpoints" / str(EPOCHS) / "default"
    shutil.rmtree(step)
    shutil.copytree(out / "checkpoints" / str(EPOCHS - 1) / "default", step)


def _deleted_metadata(out):
    (out / "checkpoints" / str(EPOCHS) / "default" / "_METADATA").unlink()


def _deleted_checksum(out):  # also what a kill between orbax's rename and the checksum leaves
    (out / "checkpoints" / str(EPOCHS) / rundir.CHECKSUM).unlink()


def _damaged_checksum(out):
    (out / "checkpoints" / str(EPOCHS) / rundir.CHECKSUM).write_text('{"sha256": ')


def _edit_checksum(out, change):
    path = out / "checkpoints" / str(EPOCHS) / rundir.CHECKSUM
    saved = json.loads(path.read_text())
    change(saved)
    path.write_text(json.dumps(saved))


def _checksum_leaves_a_number(out):  # main: "object of type 'int' has no len()"
    _edit_checksum(out, lambda saved: saved.update(leaves=5))


def _checksum_leaf_without_sha256(out):  # main: KeyError 'sha256'
    _edit_checksum(out, lambda saved: saved["leaves"][0].pop("sha256"))


def _checksum_leaf_of_unknown_dtype(out):
    _edit_checksum(out, lambda saved: saved["leaves"][0].update(dtype="float99"))


def _checksum_not_utf8(out):
    (out / "checkpoints" / str(EPOCHS) / rundir.CHECKSUM).write_bytes(b"\xff\xfe{")


CHECKPOINT_DAMAGE = [_truncate, _empty, _random_bytes, _bit_flip, _swapped_arrays,
                     _deleted_metadata, _deleted_checksum, _damaged_checksum,
                     _checksum_leaves_a_number, _checksum_leaf_without_sha256,
                     _checksum_leaf_of_unknown_dtype, _checksum_not_utf8]


@pytest.mark.parametrize("damage", CHECKPOINT_DAMAGE, ids=lambda f: f.__name__[1:])
def test_a_damaged_step_is_skipped_with_its_reason(run, finished, damage):
    damage(run)
    restored = checkpoints.restore_latest(run, _like())
    assert restored.epoch == EPOCHS - 1
    assert [e for e, _ in restored.skipped] == [EPOCHS]
    assert f"skipped epoch {EPOCHS}: " in restored.message()


@pytest.mark.parametrize("seed", range(6))
def test_random_damage_anywhere_in_a_step_is_never_silent(run, finished, seed):
    """Random bytes at a random place of a random file of the newest step: the restored state is
    either the saved one, bit for bit, or the step is skipped."""
    rng = np.random.default_rng(seed)
    files = sorted(p for p in (run / "checkpoints" / str(EPOCHS)).rglob("*") if p.is_file())
    f = files[rng.integers(len(files))]
    b = bytearray(f.read_bytes())
    at = int(rng.integers(max(1, len(b))))
    b[at: at + 8] = rng.bytes(8)
    f.write_bytes(bytes(b))
    restored = checkpoints.restore_latest(run, _like())
    if restored.epoch == EPOCHS:
        assert _equal(restored.state, finished[1]), f"{f} damaged silently"
    else:
        assert restored.epoch == EPOCHS - 1 and restored.skipped[0][0] == EPOCHS


def test_a_deleted_step_falls_back_to_the_one_before(run):
    shutil.rmtree(run / "checkpoints" / str(EPOCHS))
    restored = checkpoints.restore_latest(run, _like())
    assert restored.epoch == EPOCHS - 1 and not restored.skipped


def test_resume_after_damage_moves_the_step_aside_and_ends_bit_identical(run, finished):
    _random_bytes(run)
    with pytest.warns(training.CheckpointWarning, match=rf"from the checkpoint of epoch "
                                                        rf"{EPOCHS - 1}; skipped epoch {EPOCHS}"):
        result = fb.train(out=run, resume=True)
    assert result.restored.epoch == EPOCHS - 1
    assert [p.name.split("-")[1] for p in (run / rundir.QUARANTINE).iterdir()] == [str(EPOCHS)]
    again = checkpoints.restore_latest(run, _like())  # epoch 4 saved again, and verified
    assert again.epoch == EPOCHS and not again.skipped and _equal(again.state, finished[1])
    rows = metrics.read_metrics(run)
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))


def test_a_resume_from_the_checkpoint_of_epoch_0_ends_bit_identical(tmp_path):
    # a run killed after epoch 0's checkpoint was verified and before epoch 1's: the resume
    # starts from the saved epoch 0 (it must not try to save epoch 0 again)
    out = tmp_path / "run"
    whole = fb.train("mlp", out=out, data="xor", epochs=2, checkpoint_every=1)
    for epoch in ("1", "2"):
        shutil.rmtree(out / "checkpoints" / epoch)
    (out / rundir.METRICS).write_text("")
    resumed = fb.train(out=out, resume=True)
    assert resumed.restored.epoch == 0 and not resumed.restored.skipped
    assert _equal(resumed.params, whole.params)


def test_resume_may_change_lr_and_epochs_and_records_them(run, monkeypatch):
    read = []
    real = pathlib.Path.read_text
    monkeypatch.setattr(pathlib.Path, "read_text",
                        lambda self, *a, **k: read.append(self.name) or real(self, *a, **k))
    result = fb.train(out=run, resume=True, lr=0.01, epochs=EPOCHS + 1)
    assert read.count(rundir.CONFIG) == 1  # a resume reads its config once
    monkeypatch.undo()
    assert result.restored.epoch == EPOCHS and len(result.history) == EPOCHS + 1
    config = rundir.read_config(run)
    assert config["lr"] == 0.01 and config["epochs"] == EPOCHS + 1
    assert config["history"][-1]["at_epoch"] == EPOCHS
    assert config["history"][-1]["changed"] == {"lr": [0.003, 0.01],
                                                "epochs": [EPOCHS, EPOCHS + 1]}


def test_a_deleted_config_is_refused_then_replaced_with_force(run):
    (run / rundir.CONFIG).unlink()
    with pytest.raises(ValueError, match=r"config.json is missing.*--force"):
        fb.train(out=run, resume=True)
    with pytest.raises(ValueError, match=r"already holds a training run.*--force"):
        fb.train("mlp", "xor", epochs=1, out=run)
    result = fb.train("mlp", "xor", epochs=1, out=run, force=True)
    assert saved_epochs(run) == [1] and len(metrics.read_metrics(run)) == 1
    assert result.out == run


@pytest.mark.parametrize("text", ["[1, 2]", "{not json"])
def test_a_config_that_is_not_a_json_object_is_refused(run, text):
    (run / rundir.CONFIG).write_text(text)
    with pytest.raises(ValueError, match=r"config.json must hold a JSON object.*--force"):
        rundir.read_config(run)


def test_metrics_are_read_strictly(run):
    path = run / rundir.METRICS
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][:10] + "\n" + "\n".join(lines[2:]) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: not a JSON line"):
        metrics.read_metrics(run)
    path.write_text("\n".join(lines) + "\n" + lines[0][:10])  # torn last line: a killed write
    assert [r["epoch"] for r in metrics.read_metrics(run)] == list(range(1, EPOCHS + 1))
    path.unlink()
    with pytest.raises(ValueError, match=r"metrics.jsonl is missing.*epoch 4"):
        fb.train(out=run, resume=True)


def test_non_finite_metrics_are_written_as_null(tmp_path):
    metrics.append_metrics(tmp_path, {"epoch": 1, "loss": float("nan"), "test_loss": float("inf")})
    assert (tmp_path / rundir.METRICS).read_text() == \
        '{"epoch": 1, "loss": null, "test_loss": null}\n'


def test_a_second_process_is_locked_out(run):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from fbackprop.training import rundir; "
                               "rundir.lock(sys.argv[1]); print('locked', flush=True); "
                               "time.sleep(60)", str(run)],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(rundir.RunLocked, match=rf"in use by another training process "
                                                   rf"\(pid {holder.pid}\)"):
            fb.train(out=run, resume=True)
    finally:
        holder.kill()
        holder.wait()
    with rundir.lock(run):  # released by the kernel when the holder died
        pass


def test_output_files_the_run_did_not_create_are_kept(tmp_path):
    (tmp_path / "plot.png").write_bytes(b"mine")
    with pytest.raises(ValueError, match=r"already holds .*plot.png"):
        fb.train("mlp", "xor", epochs=1, out=tmp_path)
    assert (tmp_path / "plot.png").read_bytes() == b"mine"


# --- SIGKILL at seeded random moments -------------------------------------------------------

CLI = [sys.executable, "-m", "fbackprop", "train", "--data", "xor", "--epochs", str(EPOCHS),
       "--checkpoint-every", "1", "--no-progress"]


def test_kills_at_random_moments_resume_bit_identically(tmp_path, finished):
    """The CLI run of the ``finished`` fixture's settings, killed twice and resumed."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax-cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    out = tmp_path / "killed"
    rng = np.random.default_rng(1)
    # the first kill lands as config.json appears: before the first checkpoint
    delays = [0.0] + list(rng.uniform(0.0, 1.5, size=1))
    for delay in delays:
        proc = subprocess.Popen(CLI + ["--out", str(out)] + (["--resume"] if (out / rundir.CONFIG)
                                                               .exists() else []),
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not (out / rundir.CONFIG).exists() and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    resumed = subprocess.run(CLI + ["--out", str(out), "--resume"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout or "from scratch" in resumed.stdout
    final = checkpoints.restore_latest(out, _like())
    assert final.epoch == EPOCHS and not final.skipped
    assert _equal(final.state, finished[1])  # bit-identical: params, optimizer state, key
    rows = [json.loads(line) for line in (out / rundir.METRICS).read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    assert [r["loss"] for r in rows] == [r["loss"] for r in metrics.read_metrics(finished[0])]


def test_a_network_failing_at_trace_time_writes_nothing(tmp_path):
    net = fb.mlp([2, 4, 1], output_activation="identity")

    def broken(*args):
        raise ValueError("my D_param is unfinished")

    net = fb.serial(net.layers[0]._replace(D_param=broken), net.layers[1], input_shape=(2,))
    with pytest.raises(ValueError, match="my D_param is unfinished"):
        fb.train(net, "xor", epochs=1, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_default_run_names_are_unique_within_a_second(tmp_path, monkeypatch):
    from fbackprop.commands import train as command

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(command.time, "strftime", lambda fmt: "20260101-000000")
    names = {command._default_out() for _ in range(3)}
    assert names == {pathlib.Path("runs/20260101-000000"), pathlib.Path("runs/20260101-000000-2"),
                     pathlib.Path("runs/20260101-000000-3")}


# --- issue 21: damage named, edits refused, load_run's fallbacks, divergence ------------------

@pytest.mark.parametrize("damage", [_checksum_leaves_a_number, _checksum_leaf_without_sha256],
                         ids=["leaves-a-number", "leaf-without-sha256"])
def test_load_run_falls_back_from_a_malformed_checksum_with_a_warning(run, finished, damage):
    damage(run)
    with pytest.warns(training.CheckpointWarning, match=rf"loaded the checkpoint of epoch "
                                                        rf"{EPOCHS - 1}; skipped epoch {EPOCHS}: "
                                                        rf"fbackprop_checksum.json is damaged"):
        _, params, _ = fb.load_run(run)
    assert _equal(params, checkpoints.restore_latest(run, _like()).state["params"])


def test_load_run_passes_over_a_step_rotated_out_while_it_reads(run, finished,
                                                                monkeypatch):
    """A running training deletes its oldest step (orbax's max_to_keep) while load_run reads it:
    load_run takes the next verified step, with no warning (nothing is damaged)."""
    real = checkpoints.restore

    def rotating(manager, epoch, like):
        if epoch == EPOCHS:  # the newest step is rotated out under the reader
            shutil.rmtree(run / "checkpoints" / str(epoch))
            raise FileNotFoundError(f"{run}/checkpoints/{epoch}/default/_METADATA")
        return real(manager, epoch, like)

    monkeypatch.setattr(checkpoints, "restore", rotating)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", training.CheckpointWarning)
        _, params, _ = fb.load_run(run)
    shutil.copytree(finished[0] / "checkpoints" / str(EPOCHS), run / "checkpoints" / str(EPOCHS))
    restored = checkpoints.restore_latest(run, _like())  # main: skipped as damaged, then a
    assert restored.epoch == EPOCHS - 1 and restored.skipped == []  # resume failed to move it
    monkeypatch.undo()
    assert _equal(params, restored.state["params"])


def _replace_by_file(path):
    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    path.write_text("not a directory")


def _replace_by_directory(path):
    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    path.mkdir()


@pytest.mark.parametrize("name, replace", [
    (rundir.CHECKPOINTS, _replace_by_file), (rundir.QUARANTINE, _replace_by_file),
    (rundir.METRICS, _replace_by_directory), (rundir.PLOT, _replace_by_directory),
    (rundir.LOCK, _replace_by_directory), (rundir.CONFIG, _replace_by_directory)])
def test_a_run_file_of_the_wrong_kind_is_refused_naming_it(run, name, replace):
    """main: tracebacks (IsADirectoryError, FileExistsError, orbax's mkdir), the plot one after
    training had finished."""
    replace(run / name)
    with pytest.raises(ValueError, match=re.escape(str(run / name)) + " must be a"):
        fb.train(out=run, resume=True, epochs=EPOCHS + 1)
    assert not (run / rundir.QUARANTINE).is_dir()  # nothing moved


def test_a_plot_that_cannot_be_written_never_loses_the_run(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "run" / rundir.PLOT))

    monkeypatch.setattr(metrics, "write_plot", full_disk)
    with pytest.warns(training.PlotWarning, match=r"plot.png could not be written.*metrics and "
                                                  r"checkpoints are saved"):
        result = fb.train("mlp", out=tmp_path / "run", data="xor", epochs=1)
    assert len(result.history) == 1 and saved_epochs(tmp_path / "run") == [1]


@pytest.mark.parametrize("field, value", [("hidden", [16]), ("optimizer", "sgd"),
                                          ("batch_size", 32)])
def test_an_edited_config_is_refused_and_no_checkpoint_is_quarantined(run, field, value):
    """main: hidden/optimizer edits quarantined every good step and retrained from scratch with
    exit 0; a batch_size edit continued silently."""
    config = json.loads((run / rundir.CONFIG).read_text())
    config[field] = value
    (run / rundir.CONFIG).write_text(json.dumps(config))
    steps = sorted(p.name for p in (run / rundir.CHECKPOINTS).iterdir())
    with pytest.raises(checkpoints.RunChanged, match=rf"checkpoints/{EPOCHS}: its checksum file "
                                                     rf"is intact, but .*{field}"):
        fb.train(out=run, resume=True, epochs=EPOCHS + 1)
    assert sorted(p.name for p in (run / rundir.CHECKPOINTS).iterdir()) == steps
    assert not (run / rundir.QUARANTINE).exists()
    if field != "batch_size":  # load_run builds the network from config.json and refuses too
        with pytest.raises(checkpoints.RunChanged, match=field):
            fb.load_run(run)


def test_a_step_saved_before_stamps_is_refused_on_a_structure_edit(run):
    """A step whose checksum file records no settings (saved by an older fbackprop): an edit that
    changes the arrays' shapes is still told from damage, by the shapes the checksum lists."""
    for path in (run / rundir.CHECKPOINTS).glob(f"*/{rundir.CHECKSUM}"):
        saved = json.loads(path.read_text())
        saved.pop("run")
        path.write_text(json.dumps(saved))
    config = json.loads((run / rundir.CONFIG).read_text())
    (run / rundir.CONFIG).write_text(json.dumps(dict(config, hidden=[16])))
    with pytest.raises(checkpoints.RunChanged, match=r"mu\[0\]\['W'\]: the checkpoint has "
                                                     r"float32\(8, 2\), the settings build "
                                                     r"float32\(16, 2\)"):
        fb.train(out=run, resume=True, epochs=EPOCHS + 1)


def test_a_failed_checkpoint_save_raises_checkpoint_error_naming_the_path(tmp_path, monkeypatch):
    saving = checkpoints.Checkpoints(tmp_path, asynchronous=False)
    target = tmp_path / rundir.CHECKPOINTS / "1.orbax-checkpoint-tmp"

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(saving.manager, "save", read_only)
    with pytest.raises(checkpoints.CheckpointError, match=rf"epoch 1 could not be written to "
                                                          rf"{target} \(Permission denied\)"):
        saving.save(1, {"w": jnp.zeros(3)})
    with pytest.raises(checkpoints.CheckpointError):  # every later save: the same error, at once
        saving.save(2, {"w": jnp.zeros(3)})
    saving.close()  # does not raise again, does not wait


def test_divergence_is_said_plainly(tmp_path):
    """main: Adam at lr 10 on digits ended with exit 0, a loss above ln 10, and no word."""
    with pytest.warns(training.DivergenceWarning, match=r"diverged: the final training loss "
                                                        r".* is above .*lr=1e\+06"):
        fb.train("mlp", "xor", optimizer="adam", lr=1e6, epochs=2)


def test_a_learning_run_does_not_warn_of_divergence():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", training.DivergenceWarning)
        fb.train("mlp", "xor", epochs=2)


def test_resume_after_divergence_in_epoch_1_continues_with_the_printed_lr(tmp_path):
    """Issue 21 item 1: a run stopped in epoch 1 leaves only epoch 0; the resume command its error
    prints must continue it."""
    out = tmp_path / "run"
    with pytest.raises(training.TrainingStopped, match=r"--resume --lr 1e\+29") as stopped:
        fb.train("mlp", "xor", out=out, epochs=3, checkpoint_every=1, lr=1e30)
    assert stopped.value.last_checkpoint == 0
    with pytest.raises(training.TrainingStopped,
                       match=r"last good checkpoint \(epoch 0\)") as again:
        fb.train(out=out, resume=True)  # the same lr: resumed from epoch 0, stopped again
    assert again.value.last_checkpoint == 0
    result = fb.train(out=out, resume=True, lr=0.003)
    assert result.restored.epoch == 0 and len(result.history) == 3
    assert saved_epochs(out) == [1, 2, 3]


def test_resume_when_only_epoch_0_verifies_continues(tmp_path):
    """Issue 21 item 1's second reproduction: epoch 2 deleted, epoch 1 unverified."""
    out = tmp_path / "run"
    fb.train("mlp", "xor", out=out, epochs=2, checkpoint_every=1)
    shutil.rmtree(out / "checkpoints" / "2")
    (out / "checkpoints" / "1" / rundir.CHECKSUM).unlink()
    with pytest.warns(training.CheckpointWarning, match="from the checkpoint of epoch 0; "
                                                        "skipped epoch 1"):
        result = fb.train(out=out, resume=True)
    assert result.restored.epoch == 0 and saved_epochs(out) == [0, 1, 2]


# --- a read-only checkpoints/ (issue 21 item 2): one line, in bounded time, never a hang ------

# Without CAP_DAC_OVERRIDE file permissions bind root too, as they bind any other user.
NO_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
               "--inh-caps=-dac_override,-dac_read_search"]
needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None,
                                   reason="setpriv (util-linux) drops the root override")


def _cli_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax-cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return env


@needs_setpriv
def test_a_resume_into_a_read_only_checkpoints_directory_is_refused_at_once(run, tmp_path):
    """main: every asynchronous save failed in orbax's threads, training finished, then a
    PermissionError traceback and a process that never exited."""
    (run / rundir.CHECKPOINTS).chmod(0o555)
    try:
        done = subprocess.run(NO_OVERRIDE + CLI + ["--out", str(run), "--resume", "--epochs",
                                                   str(EPOCHS + 2)],
                              env=_cli_env(tmp_path), capture_output=True, text=True, timeout=120)
    finally:
        (run / rundir.CHECKPOINTS).chmod(0o755)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"fbackprop train: error: {run / rundir.CHECKPOINTS} is not writable by this user, and "
        f"the run needs it. Fix its permissions (chmod), then resume. Nothing was changed."]


@needs_setpriv
def test_checkpoints_made_read_only_during_a_run_end_it_with_one_line(tmp_path):
    """The same failure in the middle of a run (the directory's mode changed under it): the
    save's error ends the process at once, exit 2, one line naming the path."""
    out = tmp_path / "run"
    proc = subprocess.Popen(NO_OVERRIDE + CLI[:CLI.index("--epochs") + 1] + ["400"]
                            + CLI[CLI.index("--epochs") + 2:] + ["--out", str(out)],
                            env=_cli_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / rundir.CHECKPOINTS / "1" / rundir.CHECKSUM).exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        (out / rundir.CHECKPOINTS).chmod(0o555)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
        (out / rundir.CHECKPOINTS).chmod(0o755)
    assert proc.returncode == 2 and "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("fbackprop train:")]
    assert len(lines) == 1 and "could not be written to" in lines[0], stderr
    assert "Permission denied" in lines[0] and "--resume" in lines[0]


def test_reading_a_damaged_step_leaves_no_event_loop_errors_behind(finished, tmp_path,
                                                                   monkeypatch):
    """orbax closes its event loop when one read of a step fails; tensorstore's reads still in
    flight then call into the closed loop from their own threads ('Event loop is closed', an
    unraisable exception each). Restoring must leave nothing of the kind behind."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    for i in range(6):
        run = tmp_path / f"run{i}"
        shutil.copytree(finished[0], run)
        _truncate(run)
        assert checkpoints.restore_latest(run, _like()).epoch == EPOCHS - 1
    time.sleep(0.5)  # the reads left in flight finish
    gc.collect()
    assert not [str(u.exc_value) for u in seen], [str(u.exc_value) for u in seen]
