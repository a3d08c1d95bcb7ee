"""Per-step cost of MAPA against optax and the proximal baselines.

Times one jitted ``update`` + ``optax.apply_updates`` on a pytree of about 10M
float32 parameters in several layers, for mapa (sgd and adam directions),
optax.sgd, optax.adamw and prox_adam, and MAPA with its non-finite guard off
(``skip_nonfinite=False``), on the ``"distance"`` parameterization with the
exact and the sampled (``distance_sample``) estimate, and the non-finite
guards: optax.sgd, optax.adamw and prox_adam under ``mj.skip_nonfinite`` and under
``optax.apply_if_finite`` (the same guarantee, as MAPA's own guard), each
reported next to the unguarded optimizer as ratios to an optax.sgd step
(``--no-guards`` leaves those six rows out). Methods are measured
alternately, round after round, in one process, so that machine noise hits
all of them alike; the table reports medians and ratios. It also reports the
optimizer state's size in floats per parameter, and checks that the
architecture embedding does not run per step (the jitted update contains no
GNN).

    python benchmarks/overhead.py [--params 10_000_000] [--layers 8] [--rounds 21] [--no-guards] [--json]

Prints a markdown table, then one line of JSON (the last line of stdout).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

import mapa_jax as mj
from mapa_jax import features


def make_params(total: int, layers: int, key: jax.Array) -> dict[str, Any]:
    """``layers`` dense layers (kernel + bias) with about ``total`` parameters."""
    width = int(math.sqrt(total / layers))
    params = {}
    for i, k in enumerate(jax.random.split(key, layers)):
        params[f"Dense_{i}"] = {
            "kernel": jax.random.normal(k, (width, width), jnp.float32) / math.sqrt(width),
            "bias": jnp.zeros((width,), jnp.float32),
        }
    return params


# optax.apply_if_finite applies a non-finite step after this many in a row; never, here.
_NEVER_GIVE_UP = 2**30


# The optimizers timed with and without a non-finite guard, by row name.
GUARDED = {
    "optax.sgd": lambda: optax.sgd(1e-3),
    "optax.adamw": lambda: optax.adamw(1e-3),
    "prox_adam": lambda: mj.prox_adam(1e-3, l1=1e-4),
}


def skip_row(name: str) -> str:
    return f"skip_nonfinite({name})"


def apply_if_finite_row(name: str) -> str:
    return f"apply_if_finite({name})"


def optimizers(small: bool, guards: bool = True) -> dict[str, optax.GradientTransformation]:
    key = jax.random.key(0)
    hidden = dict(lstm_hidden=32, gnn_hidden=16) if small else {}
    sgd_cfg = mj.MetaLearnerConfig(direction="sgd", **hidden)
    adam_cfg = mj.MetaLearnerConfig(direction="adam", operator="soft_threshold", **hidden)
    dist_cfg = mj.MetaLearnerConfig(direction="adam", operator="soft_threshold", parameterization="distance", **hidden)
    sampled_cfg = mj.MetaLearnerConfig(direction="adam", operator="soft_threshold", parameterization="distance",
                                       distance_sample=features.SAMPLE_SIZE, **hidden)
    txs = {
        **{name: make() for name, make in GUARDED.items()},
        "mapa[sgd]": mj.mapa(mj.init_meta_params(key, sgd_cfg), sgd_cfg),
        "mapa[adam]": mj.mapa(mj.init_meta_params(key, adam_cfg), adam_cfg),
        # Without the full pass that detects non-finite gradients.
        "mapa[sgd,unguarded]": mj.mapa(mj.init_meta_params(key, sgd_cfg), sgd_cfg, skip_nonfinite=False),
        "mapa[adam,unguarded]": mj.mapa(mj.init_meta_params(key, adam_cfg), adam_cfg, skip_nonfinite=False),
        # The "distance" parameterization: Prodigy's estimate as the base step.
        "mapa[adam,distance,unguarded]": mj.mapa(mj.init_meta_params(key, dist_cfg), dist_cfg, skip_nonfinite=False),
        # The same, with d estimated from each tensor's subsample (distance_sample).
        "mapa[adam,distance-sampled,unguarded]": mj.mapa(mj.init_meta_params(key, sampled_cfg), sampled_cfg,
                                                         skip_nonfinite=False),
    }
    if guards:
        # The guarantee of MAPA's default (a non-finite step changes nothing)
        # for any optax optimizer: ours, and optax's own wrapper.
        for name, make in GUARDED.items():
            txs[skip_row(name)] = mj.skip_nonfinite(make())
            txs[apply_if_finite_row(name)] = optax.apply_if_finite(make(), _NEVER_GIVE_UP)
    return txs


def make_step(tx: optax.GradientTransformation) -> Callable:
    def step(params, state, grads, loss):
        updates, state = tx.update(grads, state, params, value=loss)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def state_floats_per_param(state: Any, n_params: int) -> float:
    nbytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    return nbytes / 4.0 / n_params


def base_parser(description: str, inner: int, inner_help: str) -> argparse.ArgumentParser:
    """The options shared by the per-step benchmarks (this one and guard_cost.py)."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=int, default=10_000_000)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=21, help="alternating rounds (medians over them)")
    ap.add_argument("--inner", type=int, default=inner, help=inner_help)
    ap.add_argument("--small-meta", action="store_true", help="tiny meta-learner (for tests)")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    return ap


def time_alternately(calls: dict[str, Callable[[], Any]], rounds: int, inner: int) -> dict[str, list[float]]:
    """Seconds per call of each item, one list entry per round; the items take
    turns within each round, so slow drifts of the machine hit them all."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                out = call()
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - t0) / inner)
    return times


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = base_parser(__doc__, 3, "steps per method per round")
    ap.add_argument("--no-guards", dest="guards", action="store_false",
                    help="leave out the rows of optax.sgd, optax.adamw and prox_adam under "
                         "mj.skip_nonfinite and optax.apply_if_finite")
    ap.add_argument("--guarded-baselines", action="store_true",
                    help="(the default now; kept for old command lines) time the guard rows")
    args = ap.parse_args(argv)
    guards = args.guards or args.guarded_baselines

    key = jax.random.key(0)
    base = make_params(args.params, args.layers, key)
    n_params = sum(x.size for x in jax.tree.leaves(base))
    grads = jax.tree.map(lambda p: 1e-2 * jnp.ones_like(p), base)
    loss = jnp.float32(1.0)

    txs = optimizers(args.small_meta, guards)
    runs, init_s = {}, {}
    for name, tx in txs.items():
        params = jax.tree.map(jnp.copy, base)
        t0 = time.perf_counter()
        state = tx.init(params)
        jax.block_until_ready(state)
        init_s[name] = time.perf_counter() - t0
        step = make_step(tx)
        params, state = step(params, state, grads, loss)  # compile + warm up
        jax.block_until_ready(params)
        runs[name] = {"step": step, "params": params, "state": state}

    def one_step(run: dict[str, Any]) -> Any:
        run["params"], run["state"] = run["step"](run["params"], run["state"], grads, loss)
        return run["params"]

    times = time_alternately(
        {name: (lambda run=run: one_step(run)) for name, run in runs.items()}, args.rounds, args.inner
    )

    # The architecture embedding must not run per step: no GNN in the update.
    mapa_tx = txs["mapa[sgd]"]
    hlo = jax.jit(lambda p, s, g: mapa_tx.update(g, s, p, value=loss)).lower(
        base, runs["mapa[sgd]"]["state"], grads
    ).as_text()
    gnn_ops = hlo.count("scatter")  # message passing = segment_sum = scatter-add

    med = {name: statistics.median(t) for name, t in times.items()}
    guarded_ratios, guard_table = {}, {}
    if guards:
        guarded_ratios = {
            "mapa_sgd_over_guarded_sgd": med["mapa[sgd]"] / med[apply_if_finite_row("optax.sgd")],
            "mapa_adam_over_guarded_prox_adam": med["mapa[adam]"] / med[apply_if_finite_row("prox_adam")],
            "mapa_sgd_over_skip_nonfinite_sgd": med["mapa[sgd]"] / med[skip_row("optax.sgd")],
            "mapa_adam_over_skip_nonfinite_prox_adam": med["mapa[adam]"] / med[skip_row("prox_adam")],
            "skip_nonfinite_sgd_over_sgd": med[skip_row("optax.sgd")] / med["optax.sgd"],
            "skip_nonfinite_adamw_over_adamw": med[skip_row("optax.adamw")] / med["optax.adamw"],
            "skip_nonfinite_prox_adam_over_prox_adam": med[skip_row("prox_adam")] / med["prox_adam"],
        }
        # Per optimizer: unguarded, skip_nonfinite and apply_if_finite, as ratios to an optax.sgd step.
        guard_table = {
            name: {
                "unguarded": med[name] / med["optax.sgd"],
                "skip_nonfinite": med[skip_row(name)] / med["optax.sgd"],
                "apply_if_finite": med[apply_if_finite_row(name)] / med["optax.sgd"],
            }
            for name in GUARDED
        }
    result = {
        "n_params": n_params,
        "layers": args.layers,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "median_step_ms": {k: 1e3 * v for k, v in med.items()},
        "state_floats_per_param": {
            k: state_floats_per_param(r["state"], n_params) for k, r in runs.items()
        },
        "init_s": init_s,
        "ratios": {
            "mapa_sgd_over_sgd": med["mapa[sgd]"] / med["optax.sgd"],
            "mapa_sgd_over_adamw": med["mapa[sgd]"] / med["optax.adamw"],
            "mapa_adam_over_prox_adam": med["mapa[adam]"] / med["prox_adam"],
            "prox_adam_over_adamw": med["prox_adam"] / med["optax.adamw"],
            "mapa_sgd_unguarded_over_sgd": med["mapa[sgd,unguarded]"] / med["optax.sgd"],
            "mapa_sgd_unguarded_over_adamw": med["mapa[sgd,unguarded]"] / med["optax.adamw"],
            "mapa_adam_unguarded_over_prox_adam": med["mapa[adam,unguarded]"] / med["prox_adam"],
            # What the distance estimate adds to a step, in prox_adam steps.
            "distance_estimate_over_prox_adam": (med["mapa[adam,distance,unguarded]"] - med["mapa[adam,unguarded]"])
            / med["prox_adam"],
            "distance_sampled_estimate_over_prox_adam": (
                med["mapa[adam,distance-sampled,unguarded]"] - med["mapa[adam,unguarded]"]) / med["prox_adam"],
            **guarded_ratios,
        },
        "guards_over_sgd": guard_table,
        "scatter_ops_in_update": gnn_ops,
        "targets": {
            "mapa_sgd_over_sgd": 1.5,
            "mapa_sgd_over_adamw": 0.6,
            "mapa_adam_over_prox_adam": 1.10,
            "distance_estimate_over_prox_adam": 0.1,
            "distance_sampled_estimate_over_prox_adam": 0.1,
            **({"skip_nonfinite_sgd_over_sgd": 1.6} if guards else {}),
        },
    }
    if not args.json:
        print(f"{n_params/1e6:.1f}M parameters in {args.layers} layers, {result['backend']}, "
              f"median of {args.rounds} rounds x {args.inner} steps\n")
        print("| optimizer | step (ms) | vs optax.sgd | vs optax.adamw | state floats / param |")
        print("|---|---:|---:|---:|---:|")
        for name in runs:
            print(f"| {name} | {1e3*med[name]:.2f} | {med[name]/med['optax.sgd']:.2f} | "
                  f"{med[name]/med['optax.adamw']:.2f} | "
                  f"{result['state_floats_per_param'][name]:.4f} |")
        print()
        r = result["ratios"]
        print(f"mapa[sgd] / optax.sgd = {r['mapa_sgd_over_sgd']:.3f} (target <= 1.5); "
              f"mapa[sgd] / optax.adamw = {r['mapa_sgd_over_adamw']:.3f} (target <= 0.6); "
              f"mapa[adam] / prox_adam = {r['mapa_adam_over_prox_adam']:.3f} (target <= 1.10)")
        print(f"without the non-finite check (skip_nonfinite=False): "
              f"mapa[sgd] / optax.sgd = {r['mapa_sgd_unguarded_over_sgd']:.3f}, "
              f"mapa[sgd] / optax.adamw = {r['mapa_sgd_unguarded_over_adamw']:.3f}, "
              f"mapa[adam] / prox_adam = {r['mapa_adam_unguarded_over_prox_adam']:.3f}")
        print(f"the distance estimate (parameterization='distance') adds "
              f"{r['distance_estimate_over_prox_adam']:.3f} prox_adam steps per step (target <= 0.1)")
        print(f"the sampled distance estimate (distance_sample={features.SAMPLE_SIZE}) adds "
              f"{r['distance_sampled_estimate_over_prox_adam']:.3f} prox_adam steps per step (target <= 0.1)")
        if guards:
            print("non-finite guards, per step, as ratios to an optax.sgd step "
                  "(unguarded | mj.skip_nonfinite | optax.apply_if_finite):")
            for name, row in guard_table.items():
                print(f"  {name}: {row['unguarded']:.2f} | {row['skip_nonfinite']:.2f} | "
                      f"{row['apply_if_finite']:.2f}")
            print(f"skip_nonfinite(optax.sgd) / optax.sgd = {r['skip_nonfinite_sgd_over_sgd']:.3f} "
                  f"(target <= 1.6); skip_nonfinite(optax.adamw) / optax.adamw = "
                  f"{r['skip_nonfinite_adamw_over_adamw']:.3f}; skip_nonfinite(prox_adam) / prox_adam = "
                  f"{r['skip_nonfinite_prox_adam_over_prox_adam']:.3f}")
            print(f"against baselines with the same guard (optax.apply_if_finite): "
                  f"mapa[sgd] / guarded optax.sgd = {r['mapa_sgd_over_guarded_sgd']:.3f}, "
                  f"mapa[adam] / guarded prox_adam = {r['mapa_adam_over_guarded_prox_adam']:.3f}; "
                  f"(mj.skip_nonfinite): mapa[sgd] / skip_nonfinite(optax.sgd) = "
                  f"{r['mapa_sgd_over_skip_nonfinite_sgd']:.3f}, mapa[adam] / skip_nonfinite(prox_adam) = "
                  f"{r['mapa_adam_over_skip_nonfinite_prox_adam']:.3f}")
        print(f"scatter ops in the jitted mapa update (GNN message passing): {gnn_ops}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
