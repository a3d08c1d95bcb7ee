"""Where MAPA's per-step time goes: the non-finite check, the meta-learner, their overlap.

``benchmarks/overhead.py`` times whole steps; this script takes the guarded
``mapa`` step apart, on the same pytree (about 10M float32 parameters in
several layers), timing alternately in one process:

* ``optax.sgd``: one jitted step (update + ``optax.apply_updates``), the unit;
* the finiteness check MAPA runs (``mapa_jax.features.gradients_finite``: one
  plain sum per gradient) and other exact ways to compute the same flag, each
  jitted alone, with the bandwidth it reaches reading the gradients;
* the meta-learner alone: ``mapa``'s update with its outputs other than the
  state dropped (so XLA removes the per-parameter update pass), without and
  with the check (``skip_nonfinite``). If the learner's small operations ran
  beside the check's memory-bound sums, "learner + check" would cost about
  the larger of the two; if it costs their sum, they do not overlap.

Every check variant is first verified to return True on finite gradients and
False with a NaN or an infinity in one entry.

    python benchmarks/guard_cost.py [--params 10_000_000] [--layers 8] [--rounds 21] [--json]

Prints a markdown table, then one line of JSON (the last line of stdout).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

import mapa_jax as mj
from mapa_jax import features

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from overhead import base_parser, make_params, make_step, time_alternately  # noqa: E402  (as overhead.py)

_EXPONENT = 0x7F800000  # float32 exponent bits: all ones iff the entry is inf or NaN


def _exponent_bits(g: jax.Array) -> jax.Array:
    return jax.lax.bitcast_convert_type(g.astype(jnp.float32), jnp.int32) & _EXPONENT


# Exact finiteness checks: True iff every entry of every gradient is finite.
CHECKS: dict[str, Callable[[list[jax.Array]], jax.Array]] = {
    # What mapa runs (a sum is non-finite iff an entry is, or the sum overflows).
    "sum (mapa)": features.gradients_finite,
    "all(isfinite(g))": lambda gs: jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in gs])),
    "max of exponent bits": lambda gs: jnp.all(
        jnp.stack([jnp.max(_exponent_bits(g)) != _EXPONENT for g in gs])
    ),
    "sum(g * 0) == 0": lambda gs: jnp.all(jnp.stack([jnp.sum(g * 0.0) == 0.0 for g in gs])),
    "column sums, then sum": lambda gs: jnp.all(
        jnp.isfinite(jnp.stack([jnp.sum(jnp.sum(g, axis=0)) for g in gs]))
    ),
}


def verify_checks(grads: list[jax.Array]) -> dict[str, list[bool]]:
    """Each check on finite grads, then with a NaN in the second tensor (the first if it is the only one), then
    with -inf in the last one (one entry each)."""
    def poison(i, value):
        return [g.reshape(-1).at[g.size // 2].set(value).reshape(g.shape) if j == i else g
                for j, g in enumerate(grads)]

    cases = [grads, poison(min(1, len(grads) - 1), jnp.nan), poison(len(grads) - 1, -jnp.inf)]
    out = {}
    for name, check in CHECKS.items():
        got = [bool(jax.jit(check)(c)) for c in cases]
        if got != [True, False, False]:
            raise AssertionError(f"check {name!r} is wrong: {got} on (finite, NaN, -inf) gradients")
        out[name] = got
    return out


def _learner_only(tx: optax.GradientTransformationExtraArgs) -> Callable:
    """The update with only the new state kept: XLA drops the per-parameter pass."""
    return jax.jit(lambda grads, state, params, loss: tx.update(grads, state, params, value=loss)[1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = base_parser(__doc__, 5, "calls per item per round")
    args = ap.parse_args(argv)

    key = jax.random.key(0)
    params = make_params(args.params, args.layers, key)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    grads = jax.tree.map(lambda p: 1e-2 * jnp.ones_like(p), params)
    grad_leaves = jax.tree.leaves(grads)
    loss = jnp.float32(1.0)
    grad_bytes = sum(g.size * g.dtype.itemsize for g in grad_leaves)
    verified = verify_checks(grad_leaves)

    hidden = dict(lstm_hidden=32, gnn_hidden=16) if args.small_meta else {}
    config = mj.MetaLearnerConfig(direction="sgd", **hidden)
    meta_params = mj.init_meta_params(key, config)

    # name -> (function of nothing that runs one call, returns something to block on)
    items: dict[str, Callable[[], Any]] = {}
    sgd_tx = optax.sgd(1e-3)
    sgd_step = make_step(sgd_tx)
    sgd_run = {"params": jax.tree.map(jnp.copy, params), "state": sgd_tx.init(params)}

    def sgd_call():
        sgd_run["params"], sgd_run["state"] = sgd_step(sgd_run["params"], sgd_run["state"], grads, loss)
        return sgd_run["params"]

    items["optax.sgd step"] = sgd_call
    for name, check in CHECKS.items():
        fn = jax.jit(check)
        items[f"check: {name}"] = lambda fn=fn: fn(grad_leaves)
    for label, guard in (("learner alone", False), ("learner + check", True)):
        tx = mj.mapa(meta_params, config, skip_nonfinite=guard)
        state = tx.init(params)
        fn = _learner_only(tx)
        items[label] = lambda fn=fn, state=state: fn(grads, state, params, loss)

    for call in items.values():  # compile and warm up
        jax.block_until_ready(call())
    times = time_alternately(items, args.rounds, args.inner)

    med = {name: statistics.median(t) for name, t in times.items()}
    unit = med["optax.sgd step"]
    check_ms = med["check: sum (mapa)"]
    learner_ms, both_ms = med["learner alone"], med["learner + check"]
    result = {
        "n_params": n_params,
        "layers": args.layers,
        "backend": jax.default_backend(),
        "median_ms": {k: 1e3 * v for k, v in med.items()},
        "vs_sgd_step": {k: v / unit for k, v in med.items()},
        "check_gb_per_s": {
            k[len("check: "):]: grad_bytes / v / 1e9 for k, v in med.items() if k.startswith("check: ")
        },
        "checks_verified": verified,
        # Memory streams of one step over the parameters: optax.sgd reads p and g
        # and writes p (3); an exact guard reads g once more before any write (4).
        # Adam-type steps: 7 streams (p, g, m, v read; p, m, v written), 8 guarded.
        "stream_floor": {"sgd": 4 / 3, "adam": 8 / 7},
        # 0 when learner + check costs the larger of the two (full overlap), 1 when
        # it costs their sum (none).
        "serialization": (both_ms - max(learner_ms, check_ms)) / min(learner_ms, check_ms),
    }
    if not args.json:
        print(f"{n_params/1e6:.1f}M parameters in {args.layers} layers, {result['backend']}, "
              f"median of {args.rounds} rounds x {args.inner} calls\n")
        print("| item | ms | vs optax.sgd step | gradient read (GB/s) |")
        print("|---|---:|---:|---:|")
        for name in items:
            gbs = result["check_gb_per_s"].get(name[len("check: "):]) if name.startswith("check: ") else None
            print(f"| {name} | {1e3*med[name]:.3f} | {med[name]/unit:.2f} | "
                  f"{'' if gbs is None else f'{gbs:.0f}'} |")
        print()
        print(f"learner + check = {1e3*both_ms:.3f} ms against learner {1e3*learner_ms:.3f} ms and "
              f"check {1e3*check_ms:.3f} ms: serialization {result['serialization']:.2f} "
              f"(0: they overlap fully, 1: not at all)")
        print(f"stream floors of an exact guard: {result['stream_floor']['sgd']:.3f}x optax.sgd, "
              f"{result['stream_floor']['adam']:.3f}x an Adam-type step")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
