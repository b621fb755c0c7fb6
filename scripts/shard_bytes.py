"""What ``--shard-params`` saves and what it adds, on N host CPU devices (default 4).

1. The bytes of the transformer's parameters and Adam state on modadd, whole and per device when
   sharded (read from the placed arrays' ``addressable_shards``), at three widths.
2. The collectives XLA put into one compiled epoch of the digits MLP, replicated and sharded.

    python scripts/shard_bytes.py [--devices 4] [--widths 32,128,256]

The device count is fixed before JAX starts, so the script sets ``XLA_FLAGS`` itself.
"""
import argparse
import os
import re
import sys


def _bytes_table(widths):
    import jax
    import numpy as np
    from jax.sharding import Mesh

    import fbackprop as fb
    from fbackprop.training.sharding import ParamSharding, per_device_bytes

    sharding = ParamSharding(Mesh(np.array(jax.devices()), ("batch",)))
    ds = fb.data.load("modadd")
    print("| D | parameters (bytes) | per device, sharded | ratio | Adam state (bytes) "
          "| per device, sharded | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for d in widths:
        params = fb.training.build_model("transformer", ds, (d,), None).init(
            jax.random.PRNGKey(0))
        state = {"params": params,
                 "opt_state": fb.training.make_optimizer("adam", 1e-3).init(params)}
        placed = sharding.place(state)
        cells = [str(d)]
        for part in ("params", "opt_state"):
            whole = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(state[part]))
            held = max(per_device_bytes(placed[part]).values())
            cells += [f"{whole:,}", f"{held:,}", f"{whole / held:.2f}×"]
        print("| " + " | ".join(cells) + " |")


def _collectives():
    import jax

    from fbackprop.training import loop

    kinds = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
    for shard in (False, True):
        built = loop.prepare("mlp", "digits", dict(epochs=1, batch_size=32, hidden=(128,),
                                                   shard_params=shard)).built
        state = built.state
        text = built.epoch.lower(state["params"], state["opt_state"], state["key"],
                                 jax.numpy.zeros((), jax.numpy.int32),
                                 built.feed(state["key"])).compile().as_text()
        counts = {k: len(re.findall(rf" {k}(?:-start)?\(", text)) for k in kinds}
        print(f"digits MLP --hidden 128, {'sharded' if shard else 'replicated'}: "
              + ", ".join(f"{v} {k}" for k, v in counts.items()))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=4)
    p.add_argument("--widths", default="32,128,256")
    args = p.parse_args(argv)
    if "jax" in sys.modules:
        raise SystemExit("run this as a script: JAX must not be imported before it sets "
                         "XLA_FLAGS")
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    _bytes_table([int(w) for w in args.widths.split(",")])
    _collectives()


if __name__ == "__main__":
    main()
