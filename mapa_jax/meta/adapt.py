"""Test-time self-adaptation of a meta-learner on the user's own task (M-L2O style).

A learned optimizer degrades on tasks unlike its meta-training distribution.
M-L2O (papers/002) meets that with a few meta-gradient steps of the learner on
the new task itself before it is used there. :func:`adapt` does this with the
project's own machinery: ``steps`` meta-gradient steps, each one truncation of
``horizon`` inner steps of MAPA on ``task``
(:func:`~mapa_jax.meta.unroll.truncated_unroll`, differentiated by the
estimator), scored by the task's validation loss after the truncation (held-out
batches of that task, normalized by the trajectory's initial loss), applied
with Adam at ``meta_lr`` after global-norm clipping. The trajectory continues
across the steps, so the learner adapts over the first ``steps * horizon``
inner steps of training (or restarts every ``trajectory_steps`` steps).

Whether the adapted learner is better on the rest of training is a question
for measurement: README, Benchmarks.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, NamedTuple, Optional

import jax
import numpy as np
import optax

from mapa_jax.config import MetaLearnerConfig
from mapa_jax.mapa import check_meta_params
from mapa_jax.meta.estimators import make_estimator
from mapa_jax.meta.unroll import OBJECTIVES, UnrollSpec
from mapa_jax.tasks.base import Task

__all__ = ["Adapted", "adapt"]


class Adapted(NamedTuple):
    """What :func:`adapt` returns.

    Attributes:
      meta_params: the adapted meta-params (a new tree; the caller's are unchanged).
      meta_losses: the meta-loss of each step, shape ``(steps,)`` (NaN where not finite).
      skipped: steps whose meta-loss or meta-gradient was not finite: not applied.
    """

    meta_params: Any
    meta_losses: np.ndarray
    skipped: int


def _check_int(value: Any, name: str, low: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise ValueError(f"adapt: {name} must be an integer >= {low}, got {value!r}.")


@functools.lru_cache(maxsize=16)
def _compiled(estimator: str, config: MetaLearnerConfig, task: Task, horizon: int, objective: str) -> tuple:
    """The jitted ``init`` and ``estimate`` of one estimator on one task (reused by later calls)."""
    est = make_estimator(estimator, config, UnrollSpec(horizon=horizon, objective=objective))
    return (jax.jit(lambda mp, k: est.init(mp, task, k)),
            jax.jit(lambda mp, inner, k: est.estimate(mp, inner, task, k)))


def adapt(
    meta_params: Any,
    config: MetaLearnerConfig,
    task: Task,
    *,
    steps: int = 10,
    horizon: int = 20,
    meta_lr: float = 1e-4,
    key: Optional[jax.Array] = None,
    objective: str = "validation",
    trajectory_steps: Optional[int] = None,
    clip_norm: float = 1.0,
    estimator: str = "tbptt",
) -> Adapted:
    """``steps`` meta-gradient steps of the learner on ``task`` (see the module docstring).

    Deterministic for a given ``key``; JAX arrays are immutable, so the caller's
    ``meta_params`` are never changed. A step with a non-finite meta-loss or
    meta-gradient (a diverging trajectory) is skipped, counted in
    ``Adapted.skipped`` (with a RuntimeWarning) and the trajectory restarts
    from a fresh initialization.

    Args:
      meta_params, config: the meta-learner to adapt.
      task: the task to adapt on (:class:`~mapa_jax.tasks.Task`; for a Flax
        model on arrays, :func:`mapa_jax.tasks.supervised_task` builds one).
      steps: K, meta-gradient steps (0 returns the meta-params as given).
      horizon: H, inner steps per truncation.
      meta_lr: Adam's learning rate on the meta-params.
      key: the trajectory's randomness (default ``jax.random.key(0)``).
      objective: the truncation's meta-loss (:data:`~mapa_jax.meta.unroll.OBJECTIVES`).
      trajectory_steps: restart the trajectory once it has run this many
        inner steps; None: one trajectory of ``steps * horizon`` steps.
      clip_norm: global-norm clipping of each meta-gradient.
      estimator: the meta-gradient estimator's name
        (:data:`~mapa_jax.meta.estimators.ESTIMATORS`).

    Returns:
      :class:`Adapted`: the meta-params, the per-step meta-losses and the skipped count.

    Raises:
      TypeError: ``config`` is not a MetaLearnerConfig or ``task`` not a Task.
      ValueError: meta-params not built for ``config``; ``steps < 0``,
        ``horizon < 1``, ``trajectory_steps < horizon``, a ``meta_lr`` or
        ``clip_norm`` that is not a finite number > 0; an unknown objective or estimator.
    """
    if not isinstance(config, MetaLearnerConfig):
        raise TypeError(f"adapt: config must be a MetaLearnerConfig, got {type(config).__name__}.")
    if not isinstance(task, Task):
        raise TypeError(f"adapt: task must be a mapa_jax.tasks.Task, got {type(task).__name__}.")
    check_meta_params(meta_params, config)
    _check_int(steps, "steps", 0)
    _check_int(horizon, "horizon", 1)
    if trajectory_steps is not None:
        _check_int(trajectory_steps, "trajectory_steps", horizon)
    for name, value in (("meta_lr", meta_lr), ("clip_norm", clip_norm)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"adapt: {name} must be a finite number > 0, got {value!r}.")
    if objective not in OBJECTIVES:
        raise ValueError(f"adapt: objective must be one of {OBJECTIVES}, got {objective!r}.")
    init, estimate = _compiled(estimator, config, task, int(horizon), objective)
    key = jax.random.key(0) if key is None else key
    meta_opt = optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(meta_lr))
    mp, opt_state = meta_params, meta_opt.init(meta_params)
    update = jax.jit(meta_opt.update)
    key, k_init = jax.random.split(key)
    inner = init(mp, k_init)
    losses, skipped = [], 0
    for _ in range(int(steps)):
        key, k_est, k_init = jax.random.split(key, 3)
        out = estimate(mp, inner, k_est)
        loss = float(out.meta_loss)
        finite = math.isfinite(loss) and math.isfinite(float(optax.tree.norm(out.meta_grad)))
        losses.append(loss if math.isfinite(loss) else math.nan)
        if finite:
            updates, opt_state = update(out.meta_grad, opt_state, mp)
            mp = optax.apply_updates(mp, updates)
            inner = out.inner
        else:
            skipped += 1
        # a skipped step's trajectory is not continued; a finished one restarts
        if not finite or (trajectory_steps is not None and int(inner.step) >= trajectory_steps):
            inner = init(mp, k_init)
    if skipped:
        warnings.warn(f"adapt: {skipped} of {steps} meta-steps on {task.name} had a non-finite meta-loss or "
                      "meta-gradient and were skipped (not applied).", RuntimeWarning, stacklevel=2)
    return Adapted(mp, np.asarray(losses, np.float64), skipped)
