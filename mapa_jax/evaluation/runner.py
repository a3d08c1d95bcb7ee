"""The one runner of the evaluation: train an optimizer on a task for T steps, several seeds at once.

Everything that measures an optimizer (the comparison protocol, the tests
"the meta-learner beats its random initialization", the benchmarks) runs it
through :func:`run_seeds`: one jitted ``vmap`` over seeds of one ``lax.scan``
trajectory, compiled once per (optimizer factory, task, T) and reused across
hyperparameter values, which are traced arguments.

Held-out seeds: evaluation seeds are offset by :data:`EVAL_SEED_OFFSET`, far
from the seeds meta-training draws its trajectories from. Seed ``s`` means the
key ``jax.random.key(EVAL_SEED_OFFSET + s)``, split into the initialization key
and the minibatch keys; so two optimizers run on one seed start from the same
parameters and see the same minibatches (a paired comparison).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mapa_jax.evaluation.sharpness import pga_sharpness
from mapa_jax.tasks.base import SPLITS, Task

__all__ = ["EVAL_SEED_OFFSET", "SPARSITY_THRESHOLD", "run_seeds"]

EVAL_SEED_OFFSET = 1_000_003

#: A weight counts as zero for the sparsity ratio when ``|w| <`` this (paper Section V).
SPARSITY_THRESHOLD = 1e-6

# The sharpness batch's key: fold_in(the run's minibatch key, this), a stream
# of its own, so that it is the same batch for every optimizer on a seed.
_SHARPNESS_STREAM = 0x5A


def _train(tx: optax.GradientTransformation, task: Task, k_init: jax.Array, k_run: jax.Array,
           steps: int) -> tuple[Any, Any, jax.Array]:
    """``steps`` steps of ``tx`` on ``task`` from ``task.init(k_init)``, in one scan:
    the final params and optimizer state and the minibatch-loss curve (traceable; callers jit it)."""
    params = task.init(k_init)

    def step(carry, k):
        params, state = carry
        loss, grads = jax.value_and_grad(task.loss)(params, task.sample(k))
        updates, state = tx.update(grads, state, params, value=loss)
        return (optax.apply_updates(params, updates), state), loss

    (params, state), losses = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(k_run, steps))
    return params, state, losses


def _steps_to_95(losses: np.ndarray) -> Optional[int]:
    """First step at which the 10-step moving mean of the loss has made 95% of its final reduction."""
    smooth = np.convolve(losses, np.ones(10) / 10, mode="valid") if len(losses) >= 10 else losses
    target = smooth[0] - 0.95 * (smooth[0] - smooth[-1])
    reached = np.nonzero(smooth <= target)[0]
    return int(reached[0]) + 1 if len(reached) else None


@dataclasses.dataclass(frozen=True)
class _Fixed:
    """``(task, hparams) -> tx`` from a ``task -> tx`` factory (no hyperparameters)."""

    make_tx: Callable[[Task], optax.GradientTransformation]

    def __call__(self, task: Task, hparams: Any) -> optax.GradientTransformation:
        del hparams
        return self.make_tx(task)


@functools.lru_cache(maxsize=32)  # one task needs about 10 programs (MAPA, each baseline); old ones are freed
def _seeds_runner(make_tx: Callable[[Task, Any], optax.GradientTransformation], task: Task, steps: int,
                  eval_params: Optional[Callable[[Any, Any], Any]], sharpness_radii: tuple[float, ...]) -> Callable:
    """``jit(vmap over seeds)`` of one trajectory; ``hparams`` is a traced (shared) argument.

    Cached on ``(make_tx, task, steps, eval_params, sharpness_radii)``: every value of the
    hyperparameters and every set of seeds of one size reuses one compiled program.
    """

    def one(hparams: Any, seed: jax.Array):
        tx = make_tx(task, hparams)
        k_init, k_run = jax.random.split(jax.random.key(seed))
        params, state, losses = _train(tx, task, k_init, k_run, steps)
        if eval_params is not None:
            params = eval_params(state, params)
        metrics = {split: dict(task.evaluate(params, split)) for split in SPLITS}
        weights = [p for p in jax.tree.leaves(params) if jnp.ndim(p) >= 2]
        zeros = sum((jnp.sum(jnp.abs(w) < SPARSITY_THRESHOLD) for w in weights), jnp.int32(0))
        sharp = jnp.zeros(0)
        if sharpness_radii:
            batch = task.sample(jax.random.fold_in(k_run, _SHARPNESS_STREAM))
            sharp = jnp.stack([pga_sharpness(lambda p: task.loss(p, batch), params, r) for r in sharpness_radii])
        return losses, metrics, zeros, sharp

    return jax.jit(jax.vmap(one, in_axes=(None, 0)))


def run_seeds(
    make_tx: Callable[..., optax.GradientTransformation],
    task: Task,
    seeds: Sequence[int],
    steps: int,
    hparams: Any = None,
    *,
    eval_params: Optional[Callable[[Any, Any], Any]] = None,
    sharpness_radii: Sequence[float] = (),
) -> list[dict[str, Any]]:
    """Trains ``task`` for ``steps`` steps from the initialization of each seed, in one ``jit(vmap)``.

    Args:
      make_tx: ``task -> tx`` when ``hparams`` is None; otherwise
        ``(task, hparams) -> tx``, with ``hparams`` a pytree of arrays
        (learning rates, meta-params, ...) passed traced, so that one compiled
        program serves every value. Keep ``make_tx`` the same object across
        calls (a module-level function or a registered baseline's factory, not
        a new lambda) to reuse it.
      task: the task (its ``init``, ``sample``, ``loss`` and ``evaluate``).
      seeds: evaluation seeds (offset by :data:`EVAL_SEED_OFFSET`).
      steps: T, the inner steps of each run.
      hparams: the hyperparameters given to ``make_tx``, or None.
      eval_params: ``(opt_state, params) -> params``: the point at which the
        final metrics and sparsity are measured (e.g.
        ``optax.contrib.schedule_free_eval_params``, the averaged iterate of
        schedule-free methods); None: the params themselves. The loss curve
        is always that of the training iterate.
      sharpness_radii: radii ``r`` at which to measure the sharpness of that
        final point, :func:`~mapa_jax.evaluation.sharpness.pga_sharpness` of
        the task's loss on one training minibatch (the same for every
        optimizer on a seed); empty (the default): none.

    Returns:
      One record per seed, in the order of ``seeds``: ``task`` (its name),
      ``seed``, ``losses`` (the minibatch-loss curve, shape ``(steps,)``),
      ``metrics`` (``{split: {metric: float}}`` for every split of the task
      after the last step), ``sparsity`` (fraction of weight-tensor entries,
      ndim >= 2, with ``|w| <`` :data:`SPARSITY_THRESHOLD`), ``finite``
      (whether the loss curve stayed finite) and ``steps_to_95`` (the first
      step at which the 10-step moving mean of the loss has made 95% of its
      final reduction; None if never, or if the curve is not finite) and,
      with ``sharpness_radii``, ``sharpness`` (``{r: loss increase}``).
    """
    if not seeds:
        raise ValueError("run_seeds: seeds is empty.")
    factory = _Fixed(make_tx) if hparams is None else make_tx
    offsets = np.asarray([EVAL_SEED_OFFSET + int(s) for s in seeds], np.int32)
    radii = tuple(float(r) for r in sharpness_radii)
    runner = _seeds_runner(factory, task, int(steps), eval_params, radii)
    losses, metrics, zeros, sharp = jax.device_get(runner(hparams, offsets))
    total = sum(
        int(np.prod(p.shape)) for p in jax.tree.leaves(jax.eval_shape(task.init, jax.random.key(0))) if len(p.shape) >= 2
    )
    out = []
    for i, seed in enumerate(seeds):
        curve = np.asarray(losses[i])
        finite = bool(np.all(np.isfinite(curve)))
        out.append({
            "task": task.name,
            "seed": seed,
            "losses": curve,
            "metrics": {split: {k: float(v[i]) for k, v in metrics[split].items()} for split in SPLITS},
            "sparsity": float(zeros[i]) / total if total else 0.0,
            "finite": finite,
            "steps_to_95": _steps_to_95(curve) if finite else None,
            **({"sharpness": {r: float(sharp[i, j]) for j, r in enumerate(radii)}} if radii else {}),
        })
    return out
