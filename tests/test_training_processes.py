"""The trainer across processes: a run killed by SIGKILL and resumed ends bit-identical to an
uninterrupted one; a data-parallel run on 4 host devices equals the single-device run."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from helpers import saved_epochs

from fbackprop import training
from fbackprop.data import xor
from fbackprop.training import checkpoints

EPOCHS = 12
RUN = [sys.executable, "-m", "fbackprop", "train", "--data", "xor", "--epochs", str(EPOCHS),
       "--checkpoint-every", "1", "--no-progress"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", **extra)
    return env


def _like():
    """A state shaped like the xor run's: what checkpoints are restored into."""
    net = training.build_model("mlp", xor())
    params = net.init(jax.random.PRNGKey(0))
    return {"params": params, "opt_state": optax.adam(1.0).init(params),
            "key": jax.random.PRNGKey(0), "epoch": jnp.zeros((), jnp.int32)}


def _restore(out, epoch=None):
    if epoch is None:
        restored = checkpoints.restore_latest(out, _like())
        return restored.epoch, restored.state
    manager = checkpoints.checkpoint_manager(out)
    try:
        return epoch, checkpoints.restore(manager, epoch, _like())
    finally:
        manager.close()


def test_killed_run_resumes_bit_identically(tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    # the resumed process reuses the compiled epoch from JAX's persistent cache (saves time only)
    env = _env(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax-cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    reference = subprocess.Popen(RUN + ["--out", str(whole)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    victim = subprocess.Popen(RUN + ["--out", str(killed)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(saved_epochs(killed)) < 2:  # epoch 0 and a first trained epoch
        assert victim.poll() is None and time.monotonic() < deadline, "run ended too early"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    saved = saved_epochs(killed)
    assert saved[-1] < EPOCHS, "the run finished before it was killed"
    for epoch in saved:  # every checkpoint the killed process left behind loads
        assert int(_restore(killed, epoch)[1]["epoch"]) == epoch

    resumed = subprocess.run(RUN[:3] + ["train", "--out", str(killed), "--resume",
                                        "--no-progress"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "final test accuracy" in resumed.stdout
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()

    (e1, a), (e2, b) = _restore(killed), _restore(whole)
    assert e1 == e2 == EPOCHS
    for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(leaf_a), np.asarray(leaf_b))  # bit-identical
    rows = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))


SHARDED = textwrap.dedent("""
    import jax, numpy as np
    import fbackprop as fb
    assert len(jax.devices()) == 4
    one = fb.train("mlp", "xor", epochs=3, batch_size=16, devices=jax.devices()[:1])
    four = fb.train("mlp", "xor", epochs=3, batch_size=16)
    assert (one.devices, four.devices) == (1, 4)
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)))
    print("max abs difference", diff)
    assert diff <= 1e-6, diff
    assert one.history[-1]["test_accuracy"] == four.history[-1]["test_accuracy"]
""")


def test_data_parallel_on_four_devices_equals_one_device():
    proc = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True,
                          env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"),
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "max abs difference" in proc.stdout
