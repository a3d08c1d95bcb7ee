"""Run an optimizer on a task for T steps and measure it (meta-test protocol).

Used by the tests ("the meta-learner beats its random initialization"), by the
benchmarks (MAPA against grid-tuned baselines) and by the CLI's report.
Held-out seeds: evaluation seeds are offset by :data:`EVAL_SEED_OFFSET`, far
from the seeds meta-training draws its trajectories from.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mapa_jax.config import MetaLearnerConfig
from mapa_jax.mapa import mapa
from mapa_jax.tasks.base import Task

__all__ = ["EVAL_SEED_OFFSET", "run", "mapa_factory", "evaluate"]

EVAL_SEED_OFFSET = 1_000_003


def mapa_factory(meta_params: Any, config: MetaLearnerConfig) -> Callable[[Task], optax.GradientTransformation]:
    """``task -> mapa(meta_params, config, graph=task.graph())``."""
    return lambda task: mapa(meta_params, config, graph=task.graph())


def run(make_tx: Callable[[Task], optax.GradientTransformation], task: Task, seed: int, steps: int) -> dict[str, Any]:
    """Trains ``task`` from the initialization of ``seed`` for ``steps`` steps.

    Returns the minibatch-loss curve, the final metrics on every split, the
    sparsity (fraction of weights with ``|w| < 1e-6``) and the number of steps
    to reach 95% of the final reduction of the training loss.
    """
    tx = make_tx(task)
    key = jax.random.key(EVAL_SEED_OFFSET + seed)
    k_init, k_run = jax.random.split(key)

    @jax.jit
    def train(k_init, k_run):
        params = task.init(k_init)

        def step(carry, k):
            params, state = carry
            loss, grads = jax.value_and_grad(task.loss)(params, task.sample(k))
            updates, state = tx.update(grads, state, params, value=loss)
            return (optax.apply_updates(params, updates), state), loss

        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(k_run, steps))
        return params, losses

    params, losses = train(k_init, k_run)
    losses = np.asarray(losses)
    metrics = {split: {k: float(v) for k, v in task.evaluate(params, split).items()} for split in ("train", "validation", "test")}
    weights = [np.asarray(p) for p in jax.tree.leaves(params) if np.ndim(p) >= 2]
    total = sum(w.size for w in weights)
    sparsity = float(sum(np.sum(np.abs(w) < 1e-6) for w in weights) / total) if total else 0.0
    finite = bool(np.all(np.isfinite(losses)))
    smooth = np.convolve(losses, np.ones(10) / 10, mode="valid") if len(losses) >= 10 else losses
    target = smooth[0] - 0.95 * (smooth[0] - smooth[-1])
    reached = np.nonzero(smooth <= target)[0]
    return {
        "task": task.name,
        "seed": seed,
        "losses": losses,
        "metrics": metrics,
        "sparsity": sparsity,
        "finite": finite,
        "steps_to_95": int(reached[0]) + 1 if finite and len(reached) else None,
    }


def evaluate(
    make_tx: Callable[[Task], optax.GradientTransformation],
    tasks: Sequence[Task],
    seeds: Sequence[int],
    steps: int,
) -> dict[str, list[dict[str, Any]]]:
    """:func:`run` for every task and seed: ``{task name: [result per seed]}``."""
    return {t.name: [run(make_tx, t, s, steps) for s in seeds] for t in tasks}


def summarize(results: Mapping[str, list[dict[str, Any]]], split: str = "test", metric: str = "loss") -> dict[str, float]:
    """Mean of ``metrics[split][metric]`` over seeds, per task (NaN-safe: inf for failures)."""
    out = {}
    for name, runs in results.items():
        vals = [r["metrics"][split].get(metric, np.nan) for r in runs]
        vals = [v if np.isfinite(v) else np.inf for v in vals]
        out[name] = float(np.mean(vals))
    return out
