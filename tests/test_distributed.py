"""Training across processes on 127.0.0.1 with CPU gloo collectives: 4 processes end at the
parameters of a single-process run with the same global batch and seed, each process holding
only its rows of each batch; of 2 processes, a SIGKILLed one stops the other with an error (no
hang), and ``--resume`` of the killed run, past a damaged checkpoint, ends at the parameters of
one process too. Each launch of a process costs seconds of CPU (JAX writes the compilation
cache from process 0 only, so the others compile): the tests launch 8 in all."""
import importlib.util
import io
import json
import os
import pathlib
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
from fbackprop.commands import supervisor
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
    ended = time.monotonic() - killed_at
    print(f"survivor exited {procs[0].returncode} {ended:.1f} s after the kill")
    # a collective failed (fbackprop's error) or JAX's heartbeat monitor aborted the training
    # process (the supervisor's line): either way status 3 and one line, within the heartbeat
    assert procs[0].returncode == 3 and ended <= 5 + 10, (procs[0].returncode, ended)
    assert [line for line in stderr.splitlines() if line.strip()] == [
        line for line in stderr.splitlines() if "lost the other processes" in line], stderr
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
    (dict(coordinator="127.0.0.1:99999", num_processes=2, process_id=0), "port from 1 to 65535"),
    (dict(coordinator="127.0.0.1:0", num_processes=2, process_id=0), "port from 1 to 65535"),
    (dict(coordinator="127.0.0.1:1", num_processes=2, process_id=0, initialization_timeout=0),
     "--connect-timeout"),
    (dict(coordinator="127.0.0.1:1", num_processes=0, process_id=0), "num_processes"),
    (dict(coordinator="127.0.0.1:1", num_processes=2), "process_id"),
    (dict(coordinator="127.0.0.1:1", num_processes=2, process_id=0, port=3), "unknown port"),
])
def test_bad_settings_say_what_was_expected(bad, message):
    with pytest.raises(ValueError) as info:
        distributed.check_spec(bad)
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
    (["--coordinator", "127.0.0.1:99999", "--num-processes", "2", "--process-id", "0", "--out",
      "x"], "received '127.0.0.1:99999'"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "0", "--out", "x",
      "--connect-timeout", "-1"], "initialization_timeout"),
])
def test_incomplete_flags_exit_2_before_jax_joins(args, message, capsys):
    assert cli.main(["train", *args]) == 2
    assert message in capsys.readouterr().err


def test_indivisible_global_batch_is_refused(monkeypatch):
    monkeypatch.setattr(distributed.jax, "devices", lambda: [object()] * 4)  # 4 devices in all
    with pytest.raises(ValueError) as info:
        distributed.placement(18)
    assert "not a multiple of 4" in str(info.value) and "--batch-size 16" in str(info.value)


def _load_faults():
    path = pathlib.Path(__file__).parent.parent / "scripts" / "distributed_faults.py"
    spec = importlib.util.spec_from_file_location("distributed_faults", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# what each fault's process must say, and its status (3: the processes lost each other or never
# met; 2: they were given different settings, refused before anything is compiled or written)
SAID = {"process 0 (the coordinator) killed": (3, "process 1 of 2 lost the other processes"),
        "process 1 killed": (3, "process 0 of 2 lost the other processes"),
        "process 0 started alone": (3, "process 0 of 2 could not join the others"),
        "process 1 started alone": (3, "process 1 of 2 could not join the others"),
        "--num-processes 2 and 3": (2, "differ from process 0's in num_processes;"),
        "different --out": (2, "differ from process 0's in out;")}


def test_every_fault_ends_with_one_line_and_a_status_within_its_bound(tmp_path, env):
    """Before: SIGABRT and a C++ trace (process 0 killed, a process alone after ~127 s), a
    silent 2-process run (--num-processes 2 and 3), a hang > 250 s (different --out)."""
    faults = _load_faults()
    heartbeat, connect = 5, 3
    # "process 1 killed" runs in the kill-and-resume test above; "process 1 started alone" takes
    # the path of process 0 started alone (each process launch costs two imports of JAX)
    skipped = ("process 1 killed", "process 1 started alone")
    chosen = [f for f in faults.FAULTS if f.name not in skipped]
    results = faults.run_faults(tmp_path, heartbeat, connect, env, chosen)
    print(faults.table(results | {name: dict(status="(not run)", seconds=None, stderr="")
                                  for name in skipped}, heartbeat, connect))
    for fault in chosen:
        r, (status, said) = results[fault.name], SAID[fault.name]
        lines = [line for line in r["stderr"].splitlines() if line.strip()]
        assert r["status"] == status, (fault.name, r)
        assert len(lines) == 1 and lines[0].startswith("fbackprop train: error: "), \
            (fault.name, r["stderr"])
        assert said in lines[0], (fault.name, lines[0])
        bound = (heartbeat if fault.bound == "heartbeat" else connect) + 10
        assert r["seconds"] <= bound, (fault.name, r["seconds"])


# JAX 0.10's end of a process that lost process 0 (abridged): the supervisor holds it back
ABORT = b"""E1205 10:40:41.808083    5008 coordination_service_agent.cc:289] Polled an error
F1205 10:40:41.808117    5008 client.h:80] Terminating process because the JAX distributed
Additional GRPC error information from remote target coordination_service while calling
:UNKNOWN:Error received from peer  {grpc_status:14, grpc_message:"Socket closed"}
*** Check failure stack trace: ***
    @     0x7f8d73d40634  absl::lts_20260107::log_internal::LogMessage::SendToLog()
"""

# orbax's background save thread, when its barrier failed because a peer died
TRACE = b"""ERROR:absl:[process=0] Failed to run 3 Handler Commit operations or the Commit
Traceback (most recent call last):
  File "orbax/checkpoint/_src/multihost/multihost.py", line 309, in _fn
jax.errors.JaxRuntimeError: INTERNAL: Barrier failed because: task is set to ERROR

RPC: /xla.coordination.CoordinationService/Barrier
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_the_supervisor_holds_back_jax_logs_and_names_the_cause(verbose):
    read, write = os.pipe()
    child = (b"fbackprop train: run directory x\n" + TRACE + ABORT + b"\r 50%|#####  | 1/2\n"
             + b"w.py:3: UserWarning: shown\n")
    os.write(write, child)
    os.close(write)
    sink = io.BytesIO()
    with os.fdopen(read, "rb") as source:
        relayed = supervisor._relay(source, sink, verbose)
    shown = sink.getvalue()
    assert shown == child if verbose else shown == (b"fbackprop train: run directory x\n"
                                                    b"\r 50%|#####  | 1/2\n"
                                                    b"w.py:3: UserWarning: shown\n"), shown
    if verbose:
        return
    assert relayed.log == ABORT and relayed.trace == TRACE and not relayed.said
    held = relayed.log
    spec = distributed.Distributed("10.0.0.1:1234", 2, 1)
    line = supervisor._cause(held, spec, "runs/x")
    assert line.startswith("process 1 of 2 lost the other processes (the connection to "
                           "process 0's coordination service closed)") and "\n" not in line
    assert "runs/x; restart all 2 processes with --resume" in line
    joining = held.replace(b"Socket closed", b"RPC: /xla.coordination.CoordinationService/"
                                             b"RegisterTask DEADLINE_EXCEEDED")
    assert "could not join the others at 10.0.0.1:1234 within the 60 s of --connect-timeout" \
        in supervisor._cause(joining, spec, "runs/x")


@pytest.mark.parametrize("raised, lost", [
    (RuntimeError("UNAVAILABLE: Task 1 heartbeat timeout"), True),
    (ValueError("UNKNOWN: Gloo AllGather failed: Connection reset by peer"), True),
    (ValueError("the processes see different checkpoints in the run directory"), False),
])
def test_a_failed_collective_says_a_peer_was_lost_and_the_run_errors_pass(
        monkeypatch, raised, lost):
    monkeypatch.setattr(distributed.jax.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.jax, "process_count", lambda: 2)
    with pytest.raises(distributed.DistributedError if lost else type(raised)) as info:
        with distributed.reporting_lost_peers("runs/x"):
            raise raised
    if lost:
        assert "lost the other processes" in str(info.value)
        assert "runs/x; restart all 2 processes with --resume" in str(info.value)
    else:
        assert info.value is raised


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
