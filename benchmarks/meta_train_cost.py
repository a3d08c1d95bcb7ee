"""Cost of meta-training: inner steps per second, and meta-gradient memory vs T.

* Throughput: inner steps per second of the sharded meta-step (truncations of
  H steps on ``meta_batch`` trajectories), as the meta-training loop runs it.
* Memory: peak temporary memory of one meta-gradient over T = 100, 200, 400,
  800 unrolled steps (H = T, full backpropagation through the unroll), with
  and without ``jax.checkpoint``, from XLA's compiled memory analysis (no
  execution needed).

* Estimators: seconds per meta-step of each meta-gradient estimator
  (``--estimators tbptt,es,pes``, same trajectories, ratios to TBPTT's within
  this run) and the spread of its estimates over ``--draws`` keys:
  ``E||g - mean||^2 / ||mean||^2`` (0 for TBPTT, which is deterministic given
  the trajectories) and the cosine between its mean and TBPTT's gradient.

    python benchmarks/meta_train_cost.py [--task NAME] [--ts 100,200,400,800] [--estimators tbptt,es,pes] [--json]

Prints a markdown table; with ``--json`` the last line is
``{"inner_steps_per_s": ..., "memory": [{"T": ..., "checkpointed_bytes": ..., "plain_bytes": ...}, ...]}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import numpy as np

import mapa_jax as mj
from mapa_jax import tasks as tasks_lib
from mapa_jax.meta import sharding, train, unroll
from mapa_jax.meta.estimators import make_estimator

DEFAULT_TASK = None  # the default preset's first meta-train task (smallest by size)


def memory_bytes(config, task, meta, state, t: int, policy) -> int:
    fn = jax.jit(jax.grad(lambda m: unroll.truncated_unroll(m, config, task, state, unroll.UnrollSpec(t, checkpoint=policy))[0]))
    analysis = fn.lower(meta).compile().memory_analysis()
    return int(analysis.temp_size_in_bytes)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default", help="meta-training preset whose learner and settings to use")
    ap.add_argument("--task", default=DEFAULT_TASK, help="task name (default: the preset's smallest task)")
    ap.add_argument("--ts", default="100,200,400,800", help="comma-separated unroll lengths T")
    ap.add_argument("--repeats", type=int, default=5, help="timed meta-steps for the throughput")
    ap.add_argument("--estimators", default="tbptt,es,pes", help="comma-separated estimators to compare")
    ap.add_argument("--draws", type=int, default=8, help="estimates per estimator for the spread")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args(argv)

    cfg_train = train.preset(args.preset)
    config = cfg_train.meta_learner
    task = tasks_lib.get_task(args.task) if args.task else train.resolve_tasks(cfg_train.tasks)[0]
    meta = mj.init_meta_params(jax.random.key(0), config)
    state = unroll.init_inner_state(meta, config, task, jax.random.key(1))

    # Throughput, as the training loop runs it (one device).
    mesh = sharding.make_mesh(1)
    step = sharding.sharded_meta_step(mesh, make_estimator(cfg_train.estimator, config, cfg_train.unroll_spec), task)
    key = np.asarray(jax.random.key_data(jax.random.key(3)))
    keys = jax.random.split(jax.random.key(2), cfg_train.meta_batch)
    inner = jax.tree.map(np.asarray, jax.vmap(lambda k: unroll.init_inner_state(meta, config, task, k))(keys))
    inner = sharding.to_global(mesh, inner)
    jax.block_until_ready(step(meta, inner, key))
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(step(meta, inner, key))
        times.append(time.perf_counter() - t0)
    per_step = float(np.median(times))
    inner_steps_per_s = cfg_train.meta_batch * cfg_train.horizon / per_step

    memory = []
    for t in [int(x) for x in args.ts.split(",")]:
        memory.append({
            "T": t,
            "checkpointed_bytes": memory_bytes(config, task, meta, state, t, "nothing_saveable"),
            "plain_bytes": memory_bytes(config, task, meta, state, t, None),
        })
    estimators = compare_estimators(cfg_train, config, task, meta, [e for e in args.estimators.split(",") if e],
                                    args.draws, args.repeats)
    result = {
        "preset": args.preset,
        "task": task.name,
        "num_params": task.num_params,
        "meta_batch": cfg_train.meta_batch,
        "horizon": cfg_train.horizon,
        "backend": jax.default_backend(),
        "inner_steps_per_s": inner_steps_per_s,
        "memory": memory,
        "estimators": estimators,
    }
    if not args.json:
        print(f"task {task.name} ({task.num_params} params), meta-learner of preset {args.preset!r}, "
              f"{jax.default_backend()}")
        print(f"throughput: {inner_steps_per_s:.0f} inner steps/s (meta-batch {cfg_train.meta_batch}, "
              f"H = {cfg_train.horizon}, with meta-gradient)\n")
        print("| T | with jax.checkpoint (MiB) | without (MiB) | reduction |")
        print("|---:|---:|---:|---:|")
        for m in memory:
            print(f"| {m['T']} | {m['checkpointed_bytes']/2**20:.2f} | {m['plain_bytes']/2**20:.2f} | "
                  f"{m['plain_bytes']/max(m['checkpointed_bytes'], 1):.1f}x |")
        if estimators:
            print("\n| estimator | s per meta-step | vs TBPTT | spread E||g - mean||^2 / ||mean||^2 "
                  "| cos(mean, TBPTT) |")
            print("|---|---:|---:|---:|---:|")
            for e in estimators:
                print(f"| {e['estimator']} | {e['seconds_per_meta_step']:.3f} | {e['cost_vs_tbptt']:.2f}x | "
                      f"{e['relative_spread']:.2f} | {e['cos_to_tbptt']:.2f} |")
    print(json.dumps(result))
    return result


def compare_estimators(cfg_train, config, task, meta, names, draws: int, repeats: int) -> list[dict]:
    """Per estimator: median seconds per meta-step, and the spread of ``draws`` estimates (see the docstring)."""
    mesh = sharding.make_mesh(1)
    keys = jax.random.split(jax.random.key(2), cfg_train.meta_batch)
    out, reference = [], None
    for name in ["tbptt"] + [n for n in names if n != "tbptt"]:
        est = make_estimator(name, config, cfg_train.unroll_spec)
        step = sharding.sharded_meta_step(mesh, est, task)
        inner = jax.tree.map(np.asarray, jax.vmap(lambda k: est.init(meta, task, k))(keys))
        inner = sharding.to_global(mesh, inner)
        grads = []
        for d in range(max(draws, 1)):
            key = np.asarray(jax.random.key_data(jax.random.key(100 + d)))
            grads.append(np.concatenate([np.ravel(x) for x in jax.tree.leaves(step(meta, inner, key)[1])]))
        times = []
        for d in range(repeats):
            key = np.asarray(jax.random.key_data(jax.random.key(200 + d)))
            t0 = time.perf_counter()
            jax.block_until_ready(step(meta, inner, key))
            times.append(time.perf_counter() - t0)
        g = np.stack(grads)
        mean = g.mean(0)
        if reference is None:
            reference = (mean, float(np.median(times)))
        spread = float(np.mean(np.sum((g - mean) ** 2, 1)) / max(float(mean @ mean), 1e-30))
        cos = float(mean @ reference[0] / max(np.linalg.norm(mean) * np.linalg.norm(reference[0]), 1e-30))
        if name in names:
            out.append({"estimator": name, "seconds_per_meta_step": float(np.median(times)),
                        "cost_vs_tbptt": float(np.median(times)) / reference[1], "relative_spread": spread,
                        "cos_to_tbptt": cos, "draws": len(grads)})
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
