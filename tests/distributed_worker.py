"""One process of the two-process meta-step test (run by tests/test_meta_distributed.py).

usage: python distributed_worker.py PROCESS_ID NUM_PROCESSES PORT OUT_FILE
"""

import os
import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_num_cpu_devices", 2)


def main() -> None:
    pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid,
        initialization_timeout=120,
    )
    import numpy as np
    import optax

    import mapa_jax as mj
    from mapa_jax.meta import sharding, unroll
    from mapa_jax.meta.estimators import TruncatedBackprop
    from mapa_jax.meta.unroll import UnrollSpec

    sys.path.insert(0, os.path.dirname(__file__))
    from test_meta_unroll import CFG, tiny_task

    task = tiny_task()
    meta = mj.init_meta_params(jax.random.key(0), CFG)
    keys = jax.random.split(jax.random.key(7), 4)
    inner = jax.tree.map(np.asarray, jax.vmap(lambda k: unroll.init_inner_state(meta, CFG, task, k))(keys))
    mesh = sharding.make_mesh()  # all devices of all processes
    assert mesh.devices.size == 2 * nproc, mesh
    step = sharding.sharded_meta_step(mesh, TruncatedBackprop(CFG, UnrollSpec(4)), task)
    loss, grads, new, _ = step(meta, sharding.to_global(mesh, inner), np.asarray(jax.random.key_data(jax.random.key(3))))
    opt = optax.adam(1e-3)
    updates, _ = opt.update(grads, opt.init(meta), meta)
    meta = optax.apply_updates(meta, updates)
    flat = np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(sharding.to_host(meta))])
    steps = sharding.to_host(new).step
    np.savez(out, meta=flat, loss=float(loss), steps=steps)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
