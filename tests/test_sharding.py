"""Sharded parameters (``shard_params=True``): the placement rule, and on 4 host devices (a
subprocess: the device count is fixed before JAX starts) the transformer trained with its
parameters and optimizer state split over the devices (the momentum trace split like its
parameters) ends where one device ends, each device holding about a quarter of the parameter
bytes, and a resumed sharded run equals an uninterrupted one. The multi-process case is in
test_distributed.py."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
from jax.sharding import PartitionSpec as P

import fbackprop as fb
from fbackprop import cli
from fbackprop.training.sharding import partition_spec


@pytest.mark.parametrize("shape, n, expected", [
    ((384, 128), 4, P("batch")),  # the largest axis divisible by 4
    ((128, 512), 4, P(None, "batch")),
    ((99, 128), 4, P(None, "batch")),  # 99 does not split: the next largest axis
    ((64, 64), 4, P("batch")),  # a tie: the first axis
    ((99, 33), 4, P()),  # no axis splits: replicated
    ((512,), 4, P()),  # under 1024 elements: replicated
    ((1024,), 4, P("batch")),
    ((384, 128), 1, P()),  # one device: nothing to split
    ((3, 4, 1024), 8, P(None, None, "batch")),
])
def test_each_leaf_splits_along_its_largest_divisible_axis(shape, n, expected):
    assert partition_spec(shape, n) == expected


def test_shard_params_must_be_a_bool():
    with pytest.raises(TypeError, match="shard_params must be True or False"):
        fb.train("mlp", "xor", epochs=1, shard_params="yes")


@pytest.mark.float32
def test_the_flag_is_saved_and_a_resume_keeps_it(tmp_path):
    out = tmp_path / "run"
    base = ["train", "--data", "xor", "--hidden", "4", "--no-progress", "--out", str(out)]
    assert cli.main([*base, "--epochs", "1", "--shard-params"]) == 0  # one device: a no-op
    assert json.loads((out / "config.json").read_text())["shard_params"] is True
    assert cli.main(["train", "--out", str(out), "--resume", "--epochs", "2",
                     "--no-progress"]) == 0
    assert json.loads((out / "config.json").read_text())["shard_params"] is True


FOUR_DEVICES = textwrap.dedent("""
    import sys, jax, numpy as np
    import fbackprop as fb
    from fbackprop.training import loop
    from fbackprop.training.sharding import per_device_bytes
    from jax.sharding import PartitionSpec as P
    tmp = sys.argv[1]
    assert len(jax.devices()) == 4
    kw = dict(optimizer="momentum", batch_size=128, hidden=(32,), seed=0)

    def largest(a, b):
        return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
                   for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    one = fb.train("transformer", "modadd", epochs=2, devices=jax.devices()[:1], **kw)
    whole = fb.train("transformer", "modadd", epochs=2, shard_params=True, out=f"{tmp}/whole",
                     **kw)
    fb.train("transformer", "modadd", epochs=1, shard_params=True, out=f"{tmp}/part", **kw)
    resumed = fb.train(epochs=2, out=f"{tmp}/part", resume=True)
    assert whole.devices == 4 and resumed.restored.epoch == 1
    try:
        fb.train("transformer", "modadd", epochs=1, shard_params=True, **dict(kw, batch_size=30))
        raise AssertionError("a batch of 30 split over 4 devices")
    except ValueError as err:
        assert "not a multiple of the 4 devices. Use --batch-size 28" in str(err), err
    print("sharded vs one device", largest(whole.params, one.params))
    print("resumed vs uninterrupted", largest(resumed.params, whole.params))
    for run in (whole, resumed):
        specs = {jax.tree_util.keystr(p): l.sharding.spec
                 for p, l in jax.tree_util.tree_flatten_with_path(run.params)[0]}
        assert specs["['block0.attn.1']['W_qkv']"] == P("batch"), specs
        assert specs["['logits']['W']"] == P(None, "batch"), specs  # 99 rows do not split
        assert specs["['logits']['b']"] == P(), specs  # 99 elements: replicated
    state = loop.prepare("transformer", "modadd", dict(kw, epochs=1, shard_params=True)).built.state
    specs = [leaf.sharding.spec for leaf in jax.tree.leaves(state["params"])]
    assert [leaf.sharding.spec for leaf in jax.tree.leaves(state["opt_state"])] == specs
    held = per_device_bytes(whole.params)
    total = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(whole.params))
    assert len(held) == 4 and len(set(held.values())) == 1, held
    print("parameter bytes: all", total, "per device", max(held.values()))
""")


def test_sharded_transformer_on_four_devices_equals_one_device(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run([sys.executable, "-c", FOUR_DEVICES, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(proc.stdout)
    lines = dict(line.rsplit(" ", 1) for line in proc.stdout.splitlines()
                 if line.startswith(("sharded", "resumed")))
    assert float(lines["sharded vs one device"]) <= 1e-6, lines
    assert float(lines["resumed vs uninterrupted"]) == 0.0, lines  # bit-identical on CPU
    _, total, _, _, held = proc.stdout.split("parameter bytes: ")[1].split()
    assert 3.5 <= int(total) / int(held) <= 4, (total, held)  # small leaves stay replicated
