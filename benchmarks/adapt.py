"""Test-time self-adaptation (``mj.adapt``) on held-out kinds of models: the lift and its cost.

Per task of each family: the learner as given and the learner after
``mj.adapt`` on that task (K meta-steps of truncations of H inner steps,
validation meta-loss, from a trajectory keyed away from the evaluation
seeds), each trained for T steps from the same evaluation seeds and
minibatches (``mapa_jax.evaluation.run_seeds``); the final test loss of both,
their ratio (``before / after``: > 1, adaptation helped), and what adaptation
cost: its inner steps (K * H, each with a backward pass through the learner)
and its seconds (compile included).

    python benchmarks/adapt.py [--pretrained NAME [--pretrained-dir DIR] | --checkpoint-dir DIR]
        [--families meta_test,sequence,rl] [--seeds 2] [--steps 200] [--adapt-steps 10] [--horizon 20]
        [--meta-lr 1e-4] [--tasks-per-family N] [--json]

Prints a markdown table and, on the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Optional, Sequence

import jax
import numpy as np

import mapa_jax as mj
from mapa_jax import cli, evaluation
from mapa_jax import tasks as tasks_lib

#: Adaptation's trajectory key: away from the evaluation seeds (offset by EVAL_SEED_OFFSET).
ADAPT_KEY = 7_777


def _test_losses(meta, config, task, seeds, steps) -> list[float]:
    runs = evaluation.run_seeds(evaluation.MapaFactory(config), task, seeds, steps, hparams=meta)
    return [r["metrics"]["test"]["loss"] for r in runs]


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="adapt", description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--checkpoint-dir", default=None)
    src.add_argument("--pretrained", default=None)
    ap.add_argument("--pretrained-dir", default=None)
    ap.add_argument("--families", default="meta_test,sequence,rl")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200, help="T of the evaluation runs")
    ap.add_argument("--adapt-steps", type=int, default=10, help="K, meta-steps of adaptation")
    ap.add_argument("--horizon", type=int, default=20, help="H, inner steps per adaptation truncation")
    ap.add_argument("--meta-lr", type=float, default=1e-4)
    ap.add_argument("--tasks-per-family", type=int, default=None, help="only the smallest N tasks of each family")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args(argv)
    try:
        meta, config, source = cli._load_learner(args)
    except (cli._SourceError, FileNotFoundError, ValueError) as e:
        print(f"adapt: cannot load the meta-learner: {e}", file=sys.stderr)
        return 2
    seeds = list(range(args.seeds))
    rows = []
    for fam in args.families.split(","):
        fam_tasks = list(tasks_lib.family(fam.strip()).tasks)
        if args.tasks_per_family is not None:
            fam_tasks = sorted(fam_tasks, key=lambda t: (t.num_params, t.name))[: args.tasks_per_family]
        for task in fam_tasks:
            before = _test_losses(meta, config, task, seeds, args.steps)
            t0 = time.perf_counter()
            out = mj.adapt(meta, config, task, steps=args.adapt_steps, horizon=args.horizon, meta_lr=args.meta_lr,
                           key=jax.random.key(ADAPT_KEY))
            jax.block_until_ready(out.meta_params)
            seconds = time.perf_counter() - t0
            after = _test_losses(out.meta_params, config, task, seeds, args.steps)
            mb, ma = float(np.mean(before)), float(np.mean(after))
            rows.append({"family": fam, "task": task.name, "before": before, "after": after,
                         "ratio": mb / ma if ma > 0 and math.isfinite(ma) else None,
                         "pairs_won": int(sum(a < b for a, b in zip(after, before))),
                         "pairs_lost": int(sum(a > b for a, b in zip(after, before))),
                         "adapt_inner_steps": args.adapt_steps * args.horizon, "adapt_s": round(seconds, 2),
                         "skipped": out.skipped, "meta_losses": [float(x) for x in out.meta_losses]})
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    summary = {
        "tasks_helped": sum(r["ratio"] is not None and r["ratio"] > 1 for r in rows), "tasks": len(rows),
        "pairs_won": sum(r["pairs_won"] for r in rows), "pairs_lost": sum(r["pairs_lost"] for r in rows),
        "geomean_ratio": float(np.exp(np.mean(np.log(ratios)))) if ratios else None,
    }
    if not args.json:
        print(f"| task | test loss as given | after mj.adapt (K = {args.adapt_steps}, H = {args.horizon}) "
              "| before / after | adaptation: inner steps, seconds |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for r in rows:
            ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "-"
            print(f"| {r['task']} | {np.mean(r['before']):.4g} | {np.mean(r['after']):.4g} | {ratio} "
                  f"| {r['adapt_inner_steps']}, {r['adapt_s']:.1f} s |")
        print(f"\nhelped on {summary['tasks_helped']} of {summary['tasks']} tasks; seed pairs "
              f"{summary['pairs_won']} / {summary['pairs_lost']}; geometric-mean before / after "
              f"{summary['geomean_ratio']}")
    print(json.dumps({"benchmark": "adapt", "source": source, "steps": args.steps, "seeds": seeds,
                      "adapt_steps": args.adapt_steps, "horizon": args.horizon, "meta_lr": args.meta_lr,
                      "rows": rows, "summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
