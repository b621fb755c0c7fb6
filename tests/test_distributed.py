"""Training across processes on 127.0.0.1 with CPU gloo collectives: 4 processes end at the
parameters of a single-process run with the same global batch and seed, each process holding
only its rows of each batch; of 2 processes, a SIGKILLed one stops the other with an error (no
hang), and ``--resume`` of the killed run, past a damaged checkpoint, ends at the parameters of
one process too. Each launch of a process costs seconds of CPU (JAX writes the compilation
cache from process 0 only, so the others compile): the tests launch 8 in all."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from helpers import saved_epochs

import fbackprop as fb
from fbackprop import cli
from fbackprop.training import checkpoints, distributed, rundir

pytestmark = pytest.mark.float32  # the in-process reference runs as the workers do: x64 off

EPOCHS, BATCH = 3, 24  # 400 training examples: 16 batches of 24 and a last one, padded, of 16
WORKER = textwrap.dedent("""
    import sys, numpy as np, jax
    import fbackprop as fb
    from fbackprop.training import batches, distributed, shape_inputs, targets
    coordinator, n, i, out, grad = sys.argv[1:6]
    result = fb.train("mlp", "xor", epochs=%d, batch_size=%d, grad=grad,
                      distributed=dict(coordinator=coordinator, num_processes=int(n),
                                       process_id=int(i)))
    np.savez(f"{out}-{i}.npz", *[np.asarray(leaf) for leaf in jax.tree.leaves(result.params)])
    ds = result.data  # what one epoch's data is on this process
    _, rows, _, put = distributed.placement(%d)
    host = {"x_train": shape_inputs(ds.x_train, result.net.input_shape),
            "y_train": targets(ds, ds.y_train),
            "x_test": ds.x_test, "y_test": targets(ds, ds.y_test)}
    epoch = batches.Feed(host, %d, put, rows)(jax.random.PRNGKey(1))
    local = [s.data.shape for s in epoch["x_batches"].addressable_shards]
    print("devices", result.devices, "processes", jax.process_count(), "local", local,
          "keys", sorted(epoch), "checked", result.history[-1].get("check_max_rel_error"))
""" % (EPOCHS, BATCH, BATCH, BATCH))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The workers' environment: one CPU device each, and one compilation cache for the module
    (process 0 of the kill and resume test reads what the 2-process run compiled; JAX writes
    the cache from process 0 only, so the others compile)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
               JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax-cache")),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return env


@pytest.fixture
def spawn():
    """Start processes in their own session; whatever is still running at the end of the test
    is killed with its children (by process group id)."""
    started = []

    def start(args, env):
        proc = subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            stream.close()


def _finish(procs, timeout=120):
    """Wait for every process; fail with their output if one failed."""
    outputs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"process failed ({proc.returncode}):\n{stdout}\n{stderr}"
        outputs.append(stdout)
    return outputs


def _max_difference(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def single():
    """The single-process, single-device reference run of the workers' settings."""
    return fb.train("mlp", "xor", epochs=EPOCHS, batch_size=BATCH, devices=jax.devices()[:1])


def test_four_processes_equal_one_process(tmp_path, env, spawn, single):
    n, coordinator = 4, f"127.0.0.1:{_free_port()}"
    procs = [spawn([sys.executable, "-c", WORKER, coordinator, str(n), str(i),
                    str(tmp_path / "params"), "manual"], env) for i in range(n)]
    outputs = _finish(procs)
    steps = -(-len(single.data.x_train) // BATCH)
    for i, output in enumerate(outputs):
        assert f"devices {n} processes {n}" in output
        # each process holds its BATCH / n rows of every batch, and no training set
        assert f"local [({steps}, {BATCH // n}, 2)]" in output, output
        assert "'x_train'" not in output, output
        with np.load(tmp_path / f"params-{i}.npz") as z:
            leaves = [z[f"arr_{k}"] for k in range(len(z.files))]
        diff = _max_difference(leaves, jax.tree.leaves(single.params))
        print(f"{n} processes, process {i}: max |Δparam| = {diff:.2e}")
        assert diff <= 1e-6, diff


# --grad checked: each step's hand-written gradient compared with jax.grad on the global batch
RUN = [sys.executable, "-m", "fbackprop", "train", "--data", "xor", "--batch-size", str(BATCH),
       "--grad", "checked", "--checkpoint-every", "1", "--no-progress", "--heartbeat-timeout",
       "5"]


def _cli(out, coordinator, i, *extra):
    return RUN + ["--out", str(out), "--coordinator", coordinator, "--num-processes", "2",
                  "--process-id", str(i), *extra]


def _swap_arrays(out, epoch, other):
    """Damage the step of ``epoch`` that only the checksums can see: it holds the (complete,
    readable) arrays of ``other``."""
    step = out / "checkpoints" / str(epoch) / "default"
    shutil.rmtree(step)
    shutil.copytree(out / "checkpoints" / str(other) / "default", step)


def test_a_killed_process_stops_the_other_and_the_resumed_run_equals_one_process(
        tmp_path, env, spawn, single):
    epochs, out = 8, tmp_path / "run"
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = [spawn(_cli(out, coordinator, i, "--epochs", str(epochs)), env) for i in (0, 1)]
    deadline = time.monotonic() + 120
    while len(list(out.glob(f"checkpoints/*/{rundir.CHECKSUM}"))) < 3:  # epochs 0, 1 and 2
        assert all(p.poll() is None for p in procs), "a process ended before the kill"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    _, stderr = procs[0].communicate(timeout=60)  # the survivor ends on its own
    print(f"survivor exited {procs[0].returncode} {time.monotonic() - killed_at:.1f} s after "
          f"the kill")
    assert procs[0].returncode != 0
    assert ("lost the other processes" in stderr  # a collective failed: fbackprop's error
            or "another task died" in stderr), stderr  # JAX's heartbeat monitor ended it
    verified = [e for e in saved_epochs(out)
                if (out / "checkpoints" / str(e) / rundir.CHECKSUM).exists()]
    assert len(verified) >= 2 and verified[-1] < epochs, verified
    _swap_arrays(out, verified[-1], verified[-2])  # the resume must fall back past it

    coordinator = f"127.0.0.1:{_free_port()}"
    resumed = [spawn(_cli(out, coordinator, i, "--resume"), env) for i in (0, 1)]
    outputs = _finish(resumed)
    # both processes skipped the damaged step (and any step a kill left without its checksum)
    assert f"resumed from the checkpoint of epoch {verified[-2]}; skipped" in outputs[0], outputs
    assert f"epoch {verified[-1]}: checksum mismatch" in outputs[0], outputs[0]
    assert "final test accuracy" in outputs[0]
    quarantined = {int(p.name.split("-")[1]) for p in (out / "quarantine").iterdir()}
    assert verified[-1] in quarantined and min(quarantined) == verified[-1], quarantined
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))  # written once, by process 0
    assert max(r["check_max_rel_error"] for r in rows) < 1e-4  # hand-written = jax.grad

    # checked gradients apply the manual ones: the program compiled for the fixture serves
    single = fb.train("mlp", "xor", epochs=epochs, batch_size=BATCH, devices=jax.devices()[:1])
    params = single.params
    like = {"params": params, "opt_state": fb.training.make_optimizer("adam", 3e-3).init(params),
            "key": jax.random.PRNGKey(0), "epoch": jax.numpy.zeros((), jax.numpy.int32)}
    restored = checkpoints.restore_latest(out, like)
    assert restored.epoch == epochs and not restored.skipped
    diff = _max_difference(restored.state["params"], single.params)
    print(f"killed and resumed on 2 processes vs one process: max |Δparam| = {diff:.2e}")
    assert diff <= 1e-6, diff


def test_processes_given_different_settings_stop_at_once(tmp_path, env, spawn):
    out, coordinator = tmp_path / "run", f"127.0.0.1:{_free_port()}"
    procs = [spawn(_cli(out, coordinator, i, "--epochs", str(3 + i)), env) for i in (0, 1)]
    for proc in procs:  # each says so, before anything is compiled or written
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 2, stderr
        assert "those of process 1 differ from process 0's" in stderr, stderr
    assert not (out / rundir.CONFIG).exists()


@pytest.mark.parametrize("bad, message", [
    (dict(coordinator="127.0.0.1:1", num_processes=2, process_id=2), "process_id"),
    (dict(coordinator="127.0.0.1:1", num_processes=2, process_id=-1), "[0, 1]"),
    (dict(coordinator="localhost", num_processes=2, process_id=0), "HOST:PORT"),
    (dict(coordinator="127.0.0.1:1", num_processes=0, process_id=0), "num_processes"),
    (dict(coordinator="127.0.0.1:1", num_processes=2), "process_id"),
    (dict(coordinator="127.0.0.1:1", num_processes=2, process_id=0, port=3), "unknown port"),
])
def test_bad_settings_say_what_was_expected(bad, message):
    with pytest.raises(ValueError) as info:
        distributed._spec(bad)
    assert message in str(info.value)


def test_bad_settings_fail_before_jax_joins():
    with pytest.raises(ValueError, match="process_id"):
        fb.train("mlp", "xor", epochs=1, distributed=distributed.Distributed("127.0.0.1:1", 2, 5))
    with pytest.raises(TypeError, match="distributed must be"):
        fb.train("mlp", "xor", epochs=1, distributed=["127.0.0.1:1", 2, 0])


@pytest.mark.parametrize("args, message", [
    (["--coordinator", "127.0.0.1:1", "--out", "x"], "missing --num-processes, --process-id"),
    (["--distributed", "auto", "--process-id", "0", "--out", "x"], "received also --process-id"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "0"], "needs --out"),
])
def test_incomplete_flags_exit_2_before_jax_joins(args, message, capsys):
    assert cli.main(["train", *args]) == 2
    assert message in capsys.readouterr().err


def test_indivisible_global_batch_is_refused(monkeypatch):
    monkeypatch.setattr(distributed.jax, "devices", lambda: [object()] * 4)  # 4 devices in all
    with pytest.raises(ValueError) as info:
        distributed.placement(18)
    assert "not a multiple of 4" in str(info.value) and "--batch-size 16" in str(info.value)


# shard_params across processes: 2 processes of 2 local devices each, the first hidden layer's
# weights split 4 ways (each process holds half of them), checked against jax.grad (on the
# gathered parameters), checkpointed after one epoch, then resumed by 2 new processes for one
# more.
SHARDED_WORKER = textwrap.dedent("""
    import sys, numpy as np, jax
    from jax.experimental import multihost_utils
    import fbackprop as fb
    coordinator, i, out, epochs, resume = sys.argv[1:6]
    result = fb.train("mlp", "digits", epochs=int(epochs), batch_size=32, hidden=(128,),
                      optimizer="momentum", shard_params=True, out=out, resume=resume == "1",
                      grad="checked", check_every=5,
                      distributed=dict(coordinator=coordinator, num_processes=2,
                                       process_id=int(i)))
    W = result.params[0]["W"]
    print("devices", result.devices, "W", W.shape, tuple(W.sharding.spec),
          "local", sorted(s.data.shape for s in W.addressable_shards))
    leaves = [np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
              for leaf in jax.tree.leaves(result.params)]
    np.savez(f"{out}-{i}.npz", *leaves)
""")


def test_sharded_parameters_across_processes_resume_and_equal_one_process(tmp_path, env, spawn):
    out = tmp_path / "run"
    env = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    for epochs, resume in ((1, "0"), (2, "1")):
        coordinator = f"127.0.0.1:{_free_port()}"
        procs = [spawn([sys.executable, "-c", SHARDED_WORKER, coordinator, str(i), str(out),
                        str(epochs), resume], env) for i in (0, 1)]
        outputs = _finish(procs, timeout=300)  # two compiles each (manual and checked)
    for output in outputs:  # W (128, 64) split along its 128 rows: 2 slices of 32 per process
        assert "devices 4 W (128, 64) ('batch',) local [(32, 64), (32, 64)]" \
            in output, output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert max(r["check_max_rel_error"] for r in rows) < 1e-4  # hand-written = jax.grad
    single = fb.train("mlp", "digits", epochs=2, batch_size=32, hidden=(128,),
                      optimizer="momentum", devices=jax.devices()[:1])
    for i in (0, 1):
        with np.load(f"{out}-{i}.npz") as z:
            leaves = [z[f"arr_{k}"] for k in range(len(z.files))]
        diff = _max_difference(leaves, jax.tree.leaves(single.params))
        print(f"sharded on 2 processes × 2 devices, resumed, process {i}: max |Δparam| = "
              f"{diff:.2e}")
        assert diff <= 1e-6, diff
