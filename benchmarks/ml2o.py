"""M-L2O's LASSO protocol on MAPA: meta-train on one distribution, adapt and test on shifted ones.

Following M-L2O (Yang et al., ICLR 2023, Sec. 5.2 and Table 1):

* meta-train two MAPA learners on ``synthetic/lasso`` (each instance's A drawn
  from a mixture of uniforms): *vanilla* (truncated backprop, ``tbptt``) and
  *M-L2O* (the meta-gradient after one first-order adaptation step,
  ``estimator="m-l2o"``);
* for each shift ``sigma`` (A ~ N(0, sigma^2)), an adaptation task and a test
  task of new instances (other seeds) of that distribution;
* methods: **DT** (direct transfer: the vanilla learner as trained), **TL**
  (the vanilla learner after ``mj.adapt`` on the adaptation task, the "same
  adaptation"), **M-L2O** (the M-L2O learner after the same adaptation) and
  **Vanilla L2O** (a randomly initialized learner after that adaptation);
* metric: the minimum over the test run of the natural log of the test
  task's objective (the mean LASSO objective over its 128 instances), mean
  and 95% interval over ``--repeats`` runs (other starting points and
  adaptation keys).

The paper's Table 1 (its own LASSO scales, A up to N(0, 200^2) and larger b;
not comparable in absolute value, only in ordering) is printed beside ours.

    python benchmarks/ml2o.py [--meta-steps 150] [--sigmas 10,25,50,100,200] [--adapt-steps 5]
                              [--repeats 5] [--test-steps 500] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mapa_jax as mj
from mapa_jax.meta.config import MetaTrainConfig
from mapa_jax.tasks import synthetic

# Minimum log objective on LASSO, Table 1 of the M-L2O paper (their columns as printed).
PAPER_TABLE1 = {
    10: {"vanilla_l2o": 0.033, "m_l2o": -3.712, "dt": -4.233, "tl": -4.077},
    25: {"vanilla_l2o": 1.559, "m_l2o": -3.433, "dt": -4.125, "tl": -4.019},
    50: {"vanilla_l2o": 0.550, "m_l2o": -3.285, "dt": -3.098, "tl": -3.181},
    100: {"vanilla_l2o": 2.435, "m_l2o": -2.408, "dt": -1.775, "tl": -1.961},
    200: {"vanilla_l2o": 4.104, "m_l2o": -1.396, "dt": -0.453, "tl": -0.982},
}
METHODS = ("dt", "tl", "m_l2o", "vanilla_l2o")
LEARNER = mj.MetaLearnerConfig(direction="adam", operator="huber", eta_max=0.05, init_eta=0.2, lstm_hidden=16,
                               gnn_hidden=8, window=10)


def train_config(estimator: str, meta_steps: int) -> MetaTrainConfig:
    """The meta-training run of one learner on the train distribution (both learners alike but for the estimator)."""
    return MetaTrainConfig(meta_learner=LEARNER, tasks="synthetic/lasso", meta_steps=meta_steps, meta_batch=4,
                           horizon=20, inner_steps=100, min_inner_steps=100, meta_lr=3e-3, tasks_per_update=1,
                           replay_size=8, objective="final", estimator=estimator, adapt_steps=1, adapt_lr=1e-3,
                           checkpoint_every=max(meta_steps, 1))


def _runner(task, steps: int):
    """A jitted ``(meta_params, key) -> loss curve`` of ``steps`` MAPA steps on ``task``."""

    @jax.jit
    def run(meta_params, key):
        tx = mj.mapa(meta_params, LEARNER, graph=task.graph())
        params = task.init(key)

        def body(carry, _):
            p, s = carry
            value, g = jax.value_and_grad(task.loss)(p, ())
            u, s = tx.update(g, s, p, value=value)
            return (optax.apply_updates(p, u), s), value

        (p, _), losses = jax.lax.scan(body, (params, tx.init(params)), None, steps)
        return jnp.concatenate([losses, task.loss(p, ())[None]])

    return run


def _interval(values: Sequence[float]) -> dict:
    v = np.asarray(values, np.float64)
    half = 1.96 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "ci95": float(half), "runs": [float(x) for x in v]}


def run(*, meta_steps: int = 150, sigmas: Sequence[float] = (10, 25, 50, 100, 200), adapt_steps: int = 5,
        adapt_horizon: int = 20, adapt_lr: float = 1e-3, repeats: int = 5, test_steps: int = 500) -> dict:
    t0 = time.perf_counter()
    learners = {}
    for name, estimator in (("vanilla", "tbptt"), ("m_l2o", "m-l2o")):
        res = mj.meta_train(train_config(estimator, meta_steps), seed=0, progress=False, devices=1)
        learners[name] = res.meta_params
    random_init = mj.init_meta_params(jax.random.key(0), LEARNER)
    train_s = time.perf_counter() - t0
    rows = []
    for sigma in sigmas:
        adapt_task = synthetic.lasso(f"synthetic/lasso_sigma{sigma:g}_adapt", distribution="gaussian",
                                     sigma=float(sigma), seed=1000 + int(sigma))
        test_task = synthetic.lasso(f"synthetic/lasso_sigma{sigma:g}_test", distribution="gaussian",
                                    sigma=float(sigma), seed=2000 + int(sigma))
        curve = _runner(test_task, test_steps)
        out = {m: [] for m in METHODS}
        t_adapt = []
        for r in range(repeats):
            key = jax.random.key(r)
            start = {"dt": learners["vanilla"], "tl": learners["vanilla"], "m_l2o": learners["m_l2o"],
                     "vanilla_l2o": random_init}
            for method, meta in start.items():
                if method != "dt":
                    t1 = time.perf_counter()
                    meta = mj.adapt(meta, LEARNER, adapt_task, steps=adapt_steps, horizon=adapt_horizon,
                                    meta_lr=adapt_lr, key=jax.random.fold_in(key, 1), objective="final").meta_params
                    t_adapt.append(time.perf_counter() - t1)
                losses = np.asarray(curve(meta, jax.random.fold_in(key, 2)), np.float64)
                finite = losses[np.isfinite(losses)]
                out[method].append(float(np.log(finite.min())) if finite.size else float("nan"))
        rows.append({"sigma": sigma, "f_star": test_task.info["min_loss"], "log_f_star": float(np.log(test_task.info["min_loss"])),
                     "methods": {m: _interval(v) for m, v in out.items()},
                     "paper": PAPER_TABLE1.get(int(sigma)), "adapt_s_median": float(np.median(t_adapt))})
    return {"benchmark": "ml2o_lasso", "meta_steps": meta_steps, "adapt_steps": adapt_steps,
            "adapt_horizon": adapt_horizon, "adapt_lr": adapt_lr, "repeats": repeats, "test_steps": test_steps,
            "meta_train_s": train_s, "rows": rows, "backend": jax.default_backend()}


def markdown(result: dict) -> str:
    lines = ["| sigma | log F* | DT | TL (DT + adaptation) | M-L2O + adaptation | Vanilla L2O | paper: DT, TL, M-L2O |",
             "|---:|---:|---:|---:|---:|---:|---|"]
    for row in result["rows"]:
        m = row["methods"]
        cells = [f"{m[k]['mean']:.3f} ± {m[k]['ci95']:.3f}" for k in METHODS]
        p = row["paper"]
        paper = f"{p['dt']}, {p['tl']}, {p['m_l2o']}" if p else "-"
        lines.append(f"| {row['sigma']:g} | {row['log_f_star']:.3f} | " + " | ".join(cells) + f" | {paper} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--meta-steps", type=int, default=150)
    ap.add_argument("--sigmas", default="10,25,50,100,200")
    ap.add_argument("--adapt-steps", type=int, default=5)
    ap.add_argument("--adapt-horizon", type=int, default=20)
    ap.add_argument("--adapt-lr", type=float, default=1e-3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--test-steps", type=int, default=500)
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.meta_steps < 1 or args.test_steps < 1 or args.adapt_steps < 0:
        ap.error("--repeats, --meta-steps and --test-steps must be >= 1, --adapt-steps >= 0")
    result = run(meta_steps=args.meta_steps, sigmas=[float(s) for s in args.sigmas.split(",")],
                 adapt_steps=args.adapt_steps, adapt_horizon=args.adapt_horizon, adapt_lr=args.adapt_lr,
                 repeats=args.repeats, test_steps=args.test_steps)
    if not args.json:
        print(f"M-L2O LASSO protocol: {args.meta_steps} meta-steps per learner ({result['meta_train_s']:.0f} s), "
              f"{args.adapt_steps} adaptation steps of H = {args.adapt_horizon}, {args.test_steps} test steps, "
              f"{args.repeats} runs; min log objective (lower is better)\n")
        print(markdown(result))
        print()
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
