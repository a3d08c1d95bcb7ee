"""The meta-training state as one typed value, and the meta-update that advances it.

:class:`MetaTrainState` holds everything a run needs to continue: the
meta-params and the meta-optimizer's state, the meta-gradient accumulated
since the last meta-update, the replay buffer of trajectories in flight, the
per-group moving-average baselines, the RNG key, the step and the counters.
:meth:`MetaTrainer.meta_update` is a function of it: it returns a new state and
a log record and changes nothing in place; the loop, logging and checkpointing
(:func:`mapa_jax.meta.train.meta_train`) sit outside it. A checkpoint is this
tuple (:mod:`mapa_jax.meta.checkpoint`).

One meta-step, as the MAPA paper's Section V lists it:

* replay buffer of in-flight trajectories: a step continues one from the
  buffer (or, with probability 1/4 or while the buffer fills, starts
  ``meta_batch`` new ones of a task drawn from the family), runs one
  truncation with the :class:`~mapa_jax.meta.estimators.GradientEstimator`
  sharded over the mesh, and puts them back until they reach ``T`` steps;
* moving-average baseline per task group: a constant baseline does not change
  a pathwise (backpropagated) gradient, so we use the moving average of each
  group's normalized meta-loss to *scale* its meta-gradient, which evens out
  the weight of easy and hard groups;
* curriculum: the pool of tasks grows from the smallest (by parameter count)
  to all, and ``T`` from ``min_inner_steps`` to ``inner_steps``, over the
  first ``curriculum_fraction`` of the run;
* horizon awareness (``meta_learner.horizon_aware``): each new batch of
  trajectories gets its own length ``T`` (:meth:`MetaTrainer.sample_length`),
  which the learner is told (``mapa(total_steps=T)``, held in a
  :class:`~mapa_jax.meta.unroll.HorizonState`), except for a fraction run
  without it;
* task augmentation (``augment_log_range > 0``): each new trajectory runs
  on its task in a parameterization rescaled per tensor by factors drawn from
  its own key (:func:`~mapa_jax.meta.unroll.init_augmented`), kept in its state;
* every ``steps_per_update`` steps the accumulated meta-gradient updates the
  meta-params (clipped, Adam); a non-finite meta-loss or meta-gradient skips
  its contribution or its update: counted, logged, never applied.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mapa_jax.mapa import init_meta_params, meta_params_shape
from mapa_jax.meta import sharding
from mapa_jax.meta.config import MetaTrainConfig
from mapa_jax.meta.estimators import GradientEstimator, make_estimator
from mapa_jax.meta.unroll import HorizonState, init_augmented
from mapa_jax.tasks import family_from_spec, task_group

__all__ = ["MetaTrainState", "MetaTrainer", "seed_keys", "curriculum"]


class MetaTrainState(NamedTuple):
    """Everything a meta-training run needs to continue (see the module docstring).

    Attributes:
      meta_params: the meta-learner's parameters.
      opt_state: the meta-optimizer's state (:meth:`MetaTrainConfig.meta_optimizer`).
      grad_acc: the meta-gradient accumulated since the last meta-update
        (each term scaled by its group's baseline).
      acc_count: finite meta-gradients in ``grad_acc``.
      baselines: per task group, the moving average of the normalized meta-loss.
      buffer: the trajectories in flight, oldest first: host arrays with a
        leading axis of ``meta_batch``.
      buffer_tasks: the task name of each entry of ``buffer``.
      key: the loop's RNG key (raw key data).
      step: meta-steps taken.
      updates: meta-updates applied.
      skipped: meta-steps and meta-updates skipped for non-finite values.
    """

    meta_params: Any
    opt_state: Any
    grad_acc: Any
    acc_count: int
    baselines: dict[str, float]
    buffer: tuple[Any, ...]
    buffer_tasks: tuple[str, ...]
    key: np.ndarray
    step: int
    updates: int
    skipped: int


def seed_keys(seed: int) -> tuple[Any, Any]:
    """(meta-params init key, loop key) of a run's seed."""
    k_meta, k_loop = jax.random.split(jax.random.key(seed))
    return k_meta, k_loop


def curriculum(cfg: MetaTrainConfig, step: int, n_tasks: int) -> tuple[int, int]:
    """(number of tasks in the pool, T) at meta-step ``step``."""
    ramp = cfg.curriculum_fraction * cfg.meta_steps
    progress = 1.0 if ramp == 0 else min(1.0, step / ramp)
    pool = max(1, math.ceil(n_tasks * (0.3 + 0.7 * progress)))
    t = cfg.min_inner_steps + progress * (cfg.inner_steps - cfg.min_inner_steps)
    t = int(round(t / cfg.horizon)) * cfg.horizon
    return min(pool, n_tasks), max(cfg.horizon, t)


class MetaTrainer:
    """The fixed parts of a run (tasks, mesh, estimator, compiled steps) and the meta-update.

    Args:
      cfg: the run's configuration.
      devices: number of devices of the mesh (default: as many as divide
        ``meta_batch`` evenly).
    """

    def __init__(self, cfg: MetaTrainConfig, devices: Optional[int] = None):
        self.cfg = cfg
        self.family = family_from_spec(cfg.tasks).by_size()
        if devices is None:  # the most devices that split the meta-batch evenly
            devices = max(d for d in range(1, jax.device_count() + 1) if cfg.meta_batch % d == 0)
        self.mesh = sharding.make_mesh(devices)
        n_dev = self.mesh.devices.size
        if cfg.meta_batch % n_dev:
            raise ValueError(
                f"meta_batch ({cfg.meta_batch}) must be divisible by the number of devices ({n_dev})."
            )
        self.meta_opt = cfg.meta_optimizer()
        self.estimator: GradientEstimator = make_estimator(cfg.estimator, cfg.meta_learner, cfg.unroll_spec,
                                                           **cfg.estimator_options)
        self._step_fns: dict[str, Callable] = {}
        self._init_fns: dict[str, Callable] = {}

    # ---- states -----------------------------------------------------------

    def init_state(self, seed: int) -> MetaTrainState:
        """The state a run with ``seed`` starts from."""
        k_meta, k_loop = seed_keys(seed)
        meta_params = init_meta_params(k_meta, self.cfg.meta_learner)
        return MetaTrainState(
            meta_params=meta_params,
            opt_state=self.meta_opt.init(meta_params),
            grad_acc=jax.tree.map(jnp.zeros_like, meta_params),
            acc_count=0,
            baselines={},
            buffer=(),
            buffer_tasks=(),
            key=np.asarray(jax.random.key_data(k_loop)),
            step=0,
            updates=0,
            skipped=0,
        )

    def abstract_state(self, buffer_tasks: tuple[str, ...], baseline_groups: tuple[str, ...]) -> MetaTrainState:
        """Shapes and dtypes of a state with that buffer and those baselines (to restore into)."""
        mp = meta_params_shape(self.cfg.meta_learner)
        key = jax.ShapeDtypeStruct((2,), np.uint32)
        t = jax.ShapeDtypeStruct((), np.int32)
        buffer = tuple(jax.eval_shape(self._init_batch(name), mp, key, t) for name in buffer_tasks)
        return MetaTrainState(
            meta_params=mp,
            opt_state=jax.eval_shape(self.meta_opt.init, mp),
            grad_acc=mp,
            acc_count=0,
            baselines={g: 0.0 for g in baseline_groups},
            buffer=buffer,
            buffer_tasks=tuple(buffer_tasks),
            key=key,
            step=0,
            updates=0,
            skipped=0,
        )

    # ---- compiled pieces --------------------------------------------------

    def _init_batch(self, name: str) -> Callable:
        """``(meta_params, key data) ->`` ``meta_batch`` fresh trajectories of task ``name``."""
        task = self.family.build(name)
        n, log_range = self.cfg.meta_batch, self.cfg.augment_log_range
        horizon_aware = self.cfg.meta_learner.horizon_aware

        def one(mp: Any, k: Any) -> Any:
            if log_range:  # its own rescaled parameterization, from its own key
                return init_augmented(lambda t, kt: self.estimator.init(mp, t, kt), task, k, log_range)
            return self.estimator.init(mp, task, k)

        def init(mp: Any, key: Any, total_steps: Any = 0) -> Any:
            keys = jax.random.split(jax.random.wrap_key_data(key), n)
            batch = jax.vmap(lambda k: one(mp, k))(keys)
            if horizon_aware:  # the trajectories' length T, told to the learner (0: not told)
                batch = HorizonState(batch, jnp.full((n,), total_steps, jnp.int32))
            return batch

        return init

    def init_batch(self, name: str, meta_params: Any, key: Any, total_steps: int = 0) -> Any:
        if name not in self._init_fns:
            self._init_fns[name] = jax.jit(self._init_batch(name))
        return self._init_fns[name](meta_params, key, jnp.int32(total_steps))

    def sample_length(self, key: Any, t_max: int) -> tuple[int, int]:
        """(T, total_steps) of new trajectories at curriculum length ``t_max``.

        Without ``horizon_aware``: ``(t_max, 0)``. With it, ``T`` is uniform over
        the multiples of ``horizon`` in ``[min(min_inner_steps, t_max), t_max]``,
        told to the learner (``total_steps = T``) except with probability
        ``unknown_horizon_fraction``, where the trajectory runs to ``t_max``
        and ``total_steps = 0`` (the learner must cope without the length).
        Drawn from ``key`` alone, so the loop's stream is the same either way.
        """
        cfg = self.cfg
        if not cfg.meta_learner.horizon_aware:
            return t_max, 0
        k_known, k_t = jax.random.split(key)
        if float(jax.random.uniform(k_known)) < cfg.unknown_horizon_fraction:
            return t_max, 0
        lo = max(1, min(cfg.min_inner_steps, t_max) // cfg.horizon)
        t = cfg.horizon * int(jax.random.randint(k_t, (), lo, t_max // cfg.horizon + 1))
        return t, t

    def meta_step_fn(self, name: str) -> Callable:
        if name not in self._step_fns:
            self._step_fns[name] = sharding.sharded_meta_step(self.mesh, self.estimator, self.family.build(name))
        return self._step_fns[name]

    # ---- the meta-update --------------------------------------------------

    def meta_update(self, st: MetaTrainState) -> tuple[MetaTrainState, dict[str, Any]]:
        """One meta-step (and, every ``steps_per_update`` steps, a meta-update).

        Returns the new state and the step's log record; ``st`` is unchanged.
        """
        cfg = self.cfg
        pool, t_max = curriculum(cfg, st.step, len(self.family.task_names))
        key = jax.random.wrap_key_data(jnp.asarray(st.key))
        key, k_choice, k_task, k_init = jax.random.split(key, 4)
        buffer, buffer_tasks = list(st.buffer), list(st.buffer_tasks)
        capacity = cfg.replay_size // cfg.meta_batch
        if len(buffer) < capacity or float(jax.random.uniform(k_choice)) < 0.25:
            name = self.family.sample(k_task, limit=pool)
            _, total_steps = self.sample_length(jax.random.fold_in(k_init, 2), t_max)
            inner = self.init_batch(name, st.meta_params, jax.random.key_data(k_init), total_steps)
            inner = jax.tree.map(np.asarray, inner)
        else:
            i = int(jax.random.randint(k_task, (), 0, len(buffer)))
            name, inner = buffer_tasks.pop(i), buffer.pop(i)
        # The estimator's own randomness (none for TBPTT): derived from k_init
        # without drawing from the loop's key, so the loop's stream is the same
        # for every estimator.
        k_est = jax.random.key_data(jax.random.fold_in(k_init, 1))
        loss, grads, new_inner, metrics = self.meta_step_fn(name)(
            st.meta_params, sharding.to_global(self.mesh, inner), k_est
        )
        loss = float(loss)
        new_inner = sharding.to_host(new_inner)
        inner_loss = float(np.mean(sharding.to_host(metrics)["loss"]))
        # A trajectory told its length ends there; the others at the curriculum's T.
        t_end = int(new_inner.total_steps[0]) if isinstance(new_inner, HorizonState) else 0
        t_end = t_end or t_max
        if int(new_inner.step[0]) < t_end:
            buffer.append(new_inner)
            buffer_tasks.append(name)
            if len(buffer) > capacity:  # oldest out
                buffer.pop(0)
                buffer_tasks.pop(0)

        group = task_group(self.family.build(name))
        finite = math.isfinite(loss) and all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
        baselines, grad_acc, acc_count = st.baselines, st.grad_acc, st.acc_count
        if finite:
            base = baselines.get(group, loss)
            base = cfg.baseline_decay * base + (1 - cfg.baseline_decay) * loss
            baselines = {**baselines, group: base}
            scale = 1.0 / max(base, 1e-6) if cfg.normalize_by_group else 1.0
            grad_acc = jax.tree.map(lambda a, g: a + scale * g, grad_acc, grads)
            acc_count += 1
        st = st._replace(
            key=np.asarray(jax.random.key_data(key)),
            buffer=tuple(buffer),
            buffer_tasks=tuple(buffer_tasks),
            baselines=baselines,
            grad_acc=grad_acc,
            acc_count=acc_count,
            step=st.step + 1,
            skipped=st.skipped + (not finite),
        )
        record = {
            "step": st.step,
            "task": name,
            "group": group,
            "meta_loss": loss if math.isfinite(loss) else None,
            "inner_loss": inner_loss if math.isfinite(inner_loss) else None,
            "inner_step": int(new_inner.step[0]),
            "T": t_max,
            "trajectory_T": t_end,
            "pool": pool,
            "finite": finite,
        }
        if st.step % cfg.steps_per_update == 0:
            st, applied = self._apply_update(st)
            record.update(applied)
        record["skipped_updates"] = st.skipped
        return st, record

    def _apply_update(self, st: MetaTrainState) -> tuple[MetaTrainState, dict[str, Any]]:
        """The meta-update from the accumulated meta-gradient (skipped if it is not finite)."""
        if st.acc_count == 0:
            return st, {"updated": False}
        grads = jax.tree.map(lambda a: a / st.acc_count, st.grad_acc)
        norm = float(optax.tree.norm(grads))
        if math.isfinite(norm):
            updates, opt_state = self.meta_opt.update(grads, st.opt_state, st.meta_params)
            st = st._replace(
                meta_params=optax.apply_updates(st.meta_params, updates), opt_state=opt_state, updates=st.updates + 1
            )
        else:
            st = st._replace(skipped=st.skipped + 1)
        st = st._replace(grad_acc=jax.tree.map(jnp.zeros_like, st.grad_acc), acc_count=0)
        return st, {"updated": math.isfinite(norm), "meta_grad_norm": norm if math.isfinite(norm) else None}
