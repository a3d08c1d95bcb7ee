"""Bi-level meta-training of the MAPA meta-learner (paper Section IV "Bi-Level
Optimization" and Section V "Training Protocol").

Each *meta-step* takes one batch of ``meta_batch`` inner trajectories of one
task (new ones, or ones in flight from the replay buffer), runs a truncation
of ``horizon`` steps on them (sharded over the devices of a 1-D mesh), and
accumulates the meta-gradient. Every ``tasks_per_update`` trajectories the
accumulated meta-gradient, clipped by its global norm, updates the meta-params
with Adam. What the paper lists, and what we do:

* replay buffer of in-flight trajectories (default 100): truncations resume
  from it, so consecutive meta-gradients come from different tasks and stages
  of training; a trajectory leaves it after ``T`` inner steps;
* moving-average baseline per task family: a constant baseline does not change
  a pathwise (backpropagated) gradient, so we use the moving average of each
  family's normalized meta-loss to *scale* its meta-gradient, which evens out
  the weight of easy and hard families;
* curriculum: the pool of tasks grows from the smallest (by parameter count)
  to all, and ``T`` from ``min_inner_steps`` to ``inner_steps``, over the first
  ``curriculum_fraction`` of the run;
* a non-finite meta-loss or meta-gradient skips that meta-update: it is counted,
  logged, and never reaches the meta-params.

Everything is a function of the seed: two runs with one seed give bit-identical
meta-params on CPU, and a run resumed from a checkpoint ends exactly where the
uninterrupted run does.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mapa_jax import tasks as tasks_lib
from mapa_jax.config import MetaLearnerConfig
from mapa_jax.mapa import init_meta_params
from mapa_jax.meta import checkpoint as ckpt
from mapa_jax.meta import sharding
from mapa_jax.meta.unroll import CHECKPOINT_POLICIES, OBJECTIVES, InnerState, init_inner_state
from mapa_jax.tasks.base import Task

__all__ = ["MetaTrainConfig", "PRESETS", "preset", "meta_train", "MetaTrainResult", "initial_meta_params",
           "resolve_tasks"]


META_LR_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    """What to meta-train, how long and how.

    Attributes:
      meta_learner: the :class:`MetaLearnerConfig` of the trained meta-learner.
      tasks: a task family name (``"meta_train"``, ``"synthetic"``, ...) or a
        comma-separated list of task names.
      meta_steps: truncations to run (each on ``meta_batch`` trajectories).
      meta_batch: trajectories per truncation, sharded over devices (divisible
        by the number of devices).
      horizon: H, the truncation length (paper: TBPTT horizon).
      inner_steps: T, the length of an inner trajectory at the end of the
        curriculum (paper: 1000).
      min_inner_steps: T at the start of the curriculum.
      curriculum_fraction: fraction of the run over which the curriculum ramps.
      meta_lr: Adam step size on the meta-params (paper: 1e-4).
      meta_lr_schedule: ``"constant"`` (the paper's), or ``"cosine"``: from
        ``meta_lr`` at the first meta-update down to 0 at the last one.
      head_weight_decay: decoupled weight decay (AdamW's, scaled by the
        meta-lr) on the meta-parameters that start near zero: the heads'
        kernel, FiLM and the head shift. It pulls the learner back toward its
        initial, architecture- and trajectory-independent output (the
        configured ``init_*``); the heads' bias, which sets those values, is
        not decayed. 0 (the default) turns it off.
      tasks_per_update: trajectories per meta-update (paper: 20).
      clip_norm: meta-gradient global-norm clipping.
      replay_size: trajectories in flight (paper: 100).
      baseline_decay: decay of the per-family moving-average baseline.
      normalize_by_family: scale each task family's meta-gradients by the
        inverse of its moving-average meta-loss (every family weighs the same
        in relative terms); False: meta-gradients are averaged as they come.
      objective: ``"final"`` or ``"mean"`` minibatch loss of each truncation,
        or ``"validation"``: the validation-split loss at its end (see
        :func:`~mapa_jax.meta.unroll.truncated_unroll`).
      checkpoint_policy: ``jax.checkpoint`` policy of the unroll, or None.
      second_order: differentiate through the inner gradients.
      checkpoint_every: meta-updates between checkpoints.
    """

    meta_learner: MetaLearnerConfig = MetaLearnerConfig()
    tasks: str = "meta_train"
    meta_steps: int = 400
    meta_batch: int = 4
    horizon: int = 20
    inner_steps: int = 400
    min_inner_steps: int = 100
    curriculum_fraction: float = 0.5
    meta_lr: float = 1e-4
    meta_lr_schedule: str = "constant"
    head_weight_decay: float = 0.0
    tasks_per_update: int = 20
    clip_norm: float = 1.0
    replay_size: int = 100
    baseline_decay: float = 0.9
    normalize_by_family: bool = True
    objective: str = "final"
    checkpoint_policy: Optional[str] = "nothing_saveable"
    second_order: bool = False
    checkpoint_every: int = 10

    def __post_init__(self) -> None:
        def bad(field, value, expected):
            return ValueError(f"MetaTrainConfig.{field} must be {expected}, got {value!r}.")

        for name in ("meta_steps", "meta_batch", "horizon", "inner_steps", "min_inner_steps",
                     "tasks_per_update", "replay_size", "checkpoint_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad(name, v, "an integer >= 1")
        if self.min_inner_steps > self.inner_steps:
            raise bad("min_inner_steps", self.min_inner_steps, f"<= inner_steps ({self.inner_steps})")
        if self.horizon > self.min_inner_steps:
            raise bad("horizon", self.horizon, f"<= min_inner_steps ({self.min_inner_steps})")
        if self.inner_steps % self.horizon or self.min_inner_steps % self.horizon:
            raise bad("horizon", self.horizon, "a divisor of inner_steps and min_inner_steps")
        if self.replay_size < self.meta_batch:
            raise bad("replay_size", self.replay_size, f">= meta_batch ({self.meta_batch})")
        if not 0.0 <= self.curriculum_fraction <= 1.0:
            raise bad("curriculum_fraction", self.curriculum_fraction, "in [0, 1]")
        for name in ("meta_lr", "clip_norm"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise bad(name, v, "a finite number > 0")
        v = self.head_weight_decay
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0):
            raise bad("head_weight_decay", v, "a finite number >= 0")
        if self.meta_lr_schedule not in META_LR_SCHEDULES:
            raise bad("meta_lr_schedule", self.meta_lr_schedule, f"one of {META_LR_SCHEDULES}")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise bad("baseline_decay", self.baseline_decay, "in [0, 1)")
        for name in ("normalize_by_family", "second_order"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, getattr(self, name), "True or False")
        if self.objective not in OBJECTIVES:
            raise bad("objective", self.objective, f"one of {OBJECTIVES}")
        if self.checkpoint_policy is not None and self.checkpoint_policy not in CHECKPOINT_POLICIES:
            raise bad("checkpoint_policy", self.checkpoint_policy, f"one of {sorted(CHECKPOINT_POLICIES)} or None")
        if not isinstance(self.meta_learner, MetaLearnerConfig):
            raise bad("meta_learner", self.meta_learner, "a MetaLearnerConfig")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["meta_learner"] = self.meta_learner.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MetaTrainConfig":
        d = dict(d)
        d["meta_learner"] = MetaLearnerConfig.from_dict(d["meta_learner"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"MetaTrainConfig: unknown fields {unknown}.")
        return cls(**d)

    @property
    def steps_per_update(self) -> int:
        return max(1, self.tasks_per_update // self.meta_batch)

    @property
    def num_updates(self) -> int:
        """Meta-updates in a run (the last one may average fewer trajectories)."""
        return -(-self.meta_steps // self.steps_per_update)

    def meta_optimizer(self) -> optax.GradientTransformation:
        """Global-norm clipping, then Adam at ``meta_lr`` on ``meta_lr_schedule``
        (AdamW on the near-zero-initialized parameters with ``head_weight_decay``)."""
        lr: Any = self.meta_lr
        if self.meta_lr_schedule == "cosine":
            lr = optax.cosine_decay_schedule(self.meta_lr, decay_steps=self.num_updates)
        if self.head_weight_decay:
            adam = optax.adamw(lr, weight_decay=self.head_weight_decay, mask=_near_zero_init_mask)
        else:  # plain Adam: the optimizer state of runs without decay stays as it was
            adam = optax.adam(lr)
        return optax.chain(optax.clip_by_global_norm(self.clip_norm), adam)


# Meta-parameters initialized at (or near) zero, so that the untrained learner
# emits its configured init_* whatever the trajectory and architecture.
_NEAR_ZERO_INIT = {("heads", "kernel"), ("film", "kernel"), ("film", "bias"), ("head_shift", "kernel")}


def _near_zero_init_mask(meta_params: Any) -> Any:
    def near_zero(path, _):
        keys = tuple(getattr(k, "key", None) for k in path)
        return keys[-2:] in _NEAR_ZERO_INIT

    return jax.tree_util.tree_map_with_path(near_zero, meta_params)


# The meta-learner all presets train: Adam-preconditioned direction (the
# learned per-tensor step scales Adam's), the corrected Huber prox.
_DEFAULT_LEARNER = MetaLearnerConfig(direction="adam", operator="huber", eta_max=0.05, init_eta=0.2,
                                     lstm_hidden=64, gnn_hidden=32)

PRESETS: dict[str, MetaTrainConfig] = {
    # About a minute on a 2-core CPU: a tiny learner on the small tasks.
    "smoke": MetaTrainConfig(
        meta_learner=dataclasses.replace(_DEFAULT_LEARNER, lstm_hidden=16, gnn_hidden=8, window=10),
        tasks="smoke",
        meta_steps=24,
        meta_batch=2,
        horizon=10,
        inner_steps=40,
        min_inner_steps=20,
        meta_lr=3e-3,
        tasks_per_update=4,
        replay_size=8,
        checkpoint_every=2,
    ),
    # The shipped default: at most an hour on a 2-core CPU. The meta-loss is
    # the validation loss (what the evaluation selects baselines by) at the
    # end of long truncations (H = 100 of T = 200; with H = 20 the learner
    # learned one early eta decay, within 40-80 steps, for every task: the
    # short-horizon bias), 8 trajectories per truncation, 400 meta-updates of 8 at meta-lr 3e-4,
    # lambda starting at 1e-4, and decoupled weight decay (3.0, scaled by the
    # meta-lr) pulling the near-zero-initialized heads and FiLM back toward the
    # learner's initial output (better transfer to held-out architectures on
    # two seeds, at no cost on the meta-train tasks). The runs behind these
    # choices are in the README (Benchmarks: "What we tried").
    "default": MetaTrainConfig(
        meta_learner=dataclasses.replace(_DEFAULT_LEARNER, init_lam=1e-4),
        tasks="meta_train",
        meta_steps=400,
        meta_batch=8,
        horizon=100,
        inner_steps=200,
        min_inner_steps=100,
        meta_lr=3e-4,
        tasks_per_update=8,
        replay_size=100,
        objective="validation",
        head_weight_decay=3.0,
        checkpoint_every=10,
    ),
}


def preset(name: str, **overrides: Any) -> MetaTrainConfig:
    """A named configuration (``"smoke"``, ``"default"``), with field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}.")
    return dataclasses.replace(PRESETS[name], **overrides)


def resolve_tasks(spec: str) -> list[Task]:
    """Tasks named by a family name or a comma-separated list of task names."""
    families = tasks_lib.family_names()
    if spec in families:
        return list(tasks_lib.family(spec).tasks)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ValueError(f"no tasks in {spec!r}; give a family ({families}) or task names.")
    return [tasks_lib.get_task(n) for n in names]


@dataclasses.dataclass
class MetaTrainResult:
    """What :func:`meta_train` returns."""

    meta_params: Any
    config: MetaTrainConfig
    metrics: list[dict[str, Any]]
    skipped_updates: int
    checkpoint_dir: Optional[str]


def _seed_keys(seed: int) -> tuple[Any, Any]:
    """(meta-params init key, loop key) of a run's seed."""
    k_meta, k_loop = jax.random.split(jax.random.key(seed))
    return k_meta, k_loop


def initial_meta_params(config: MetaTrainConfig, seed: int) -> Any:
    """The meta-params a run with ``seed`` starts from (its random initialization)."""
    return init_meta_params(_seed_keys(seed)[0], config.meta_learner)


def _task_family(task: Task) -> str:
    return str(task.info.get("family", task.kind))


def _curriculum(cfg: MetaTrainConfig, step: int, n_tasks: int) -> tuple[int, int]:
    """(number of tasks in the pool, T) at meta-step ``step``."""
    ramp = cfg.curriculum_fraction * cfg.meta_steps
    progress = 1.0 if ramp == 0 else min(1.0, step / ramp)
    pool = max(1, math.ceil(n_tasks * (0.3 + 0.7 * progress)))
    t = cfg.min_inner_steps + progress * (cfg.inner_steps - cfg.min_inner_steps)
    t = int(round(t / cfg.horizon)) * cfg.horizon
    return min(pool, n_tasks), max(cfg.horizon, t)


class _Trainer:
    """The loop's state and its pieces; one instance per run."""

    def __init__(self, cfg: MetaTrainConfig, seed: int, devices: Optional[int]):
        self.cfg = cfg
        self.seed = seed
        self.tasks = sorted(resolve_tasks(cfg.tasks), key=lambda t: (t.num_params, t.name))
        self.by_name = {t.name: t for t in self.tasks}
        if devices is None:  # the most devices that split the meta-batch evenly
            devices = max(d for d in range(1, jax.device_count() + 1) if cfg.meta_batch % d == 0)
        self.mesh = sharding.make_mesh(devices)
        n_dev = self.mesh.devices.size
        if cfg.meta_batch % n_dev:
            raise ValueError(
                f"meta_batch ({cfg.meta_batch}) must be divisible by the number of devices ({n_dev})."
            )
        self.meta_opt = cfg.meta_optimizer()
        self._step_fns: dict[str, Callable] = {}
        self._init_fns: dict[str, Callable] = {}

    # ---- state -----------------------------------------------------------

    def fresh_state(self) -> dict[str, Any]:
        k_meta, k_loop = _seed_keys(self.seed)
        meta_params = init_meta_params(k_meta, self.cfg.meta_learner)
        return {
            "meta_params": meta_params,
            "opt_state": self.meta_opt.init(meta_params),
            "grad_acc": jax.tree.map(jnp.zeros_like, meta_params),
            "key": np.asarray(jax.random.key_data(k_loop)),
            "step": 0,
            "updates": 0,
            "skipped": 0,
            "acc_count": 0,
            "baselines": {},
            "buffer": [],  # list of (task name, host InnerState with leading axis meta_batch)
        }

    def _meta_json(self, st: dict) -> dict:
        return {
            "meta_learner": self.cfg.meta_learner.to_dict(),
            "train_config": self.cfg.to_dict(),
            "seed": self.seed,
            "step": st["step"],
            "updates": st["updates"],
            "skipped": st["skipped"],
            "acc_count": st["acc_count"],
            "baselines": st["baselines"],
            "buffer_tasks": [name for name, _ in st["buffer"]],
        }

    def _arrays(self, st: dict) -> dict:
        return {
            "opt_state": st["opt_state"],
            "grad_acc": st["grad_acc"],
            "key": st["key"],
            "buffer": {str(i): inner for i, (_, inner) in enumerate(st["buffer"])},
        }

    def save(self, directory: str, st: dict) -> None:
        ckpt.save(directory, st["step"], st["meta_params"], self._arrays(st), self._meta_json(st))

    def restore(self, directory: str) -> dict:
        def abstract(meta):
            saved = MetaTrainConfig.from_dict(meta["train_config"])
            if saved != self.cfg or meta["seed"] != self.seed:
                raise ckpt.CheckpointError(
                    f"checkpoint in {directory!r} was written by another configuration or seed "
                    f"(seed {meta['seed']}); resume with the same preset, overrides and seed."
                )
            mp = jax.eval_shape(lambda: init_meta_params(jax.random.key(0), self.cfg.meta_learner))
            buffer = {
                str(i): jax.eval_shape(lambda name=name: self._init_batch(name, mp_concrete=None))
                for i, name in enumerate(meta["buffer_tasks"])
            }
            ts = {
                "opt_state": jax.eval_shape(self.meta_opt.init, mp),
                "grad_acc": mp,
                "key": jax.ShapeDtypeStruct((2,), np.uint32),
                "buffer": buffer,
            }
            return mp, ts

        step, mp, ts, meta = ckpt.restore(directory, abstract)
        return {
            "meta_params": mp,
            "opt_state": ts["opt_state"],
            "grad_acc": ts["grad_acc"],
            "key": np.asarray(ts["key"]),
            "step": step,
            "updates": meta["updates"],
            "skipped": meta["skipped"],
            "acc_count": meta["acc_count"],
            "baselines": meta["baselines"],
            "buffer": [
                (name, jax.tree.map(np.asarray, ts["buffer"][str(i)]))
                for i, name in enumerate(meta["buffer_tasks"])
            ],
        }

    # ---- compiled pieces --------------------------------------------------

    def _init_batch(self, name: str, mp_concrete: Any, key: Any = None) -> InnerState:
        """``meta_batch`` fresh trajectories of task ``name`` (vmapped)."""
        task = self.by_name[name]
        cfg = self.cfg
        mp = mp_concrete
        if mp is None:  # only shapes are needed
            mp = init_meta_params(jax.random.key(0), cfg.meta_learner)
            key = jax.random.key(0)
        keys = jax.random.split(key, cfg.meta_batch)
        return jax.vmap(lambda k: init_inner_state(mp, cfg.meta_learner, task, k))(keys)

    def init_batch(self, name: str, meta_params: Any, key: Any) -> InnerState:
        if name not in self._init_fns:
            self._init_fns[name] = jax.jit(
                lambda mp, k, name=name: self._init_batch(name, mp, jax.random.wrap_key_data(k))
            )
        return self._init_fns[name](meta_params, key)

    def meta_step_fn(self, name: str) -> Callable:
        if name not in self._step_fns:
            cfg = self.cfg
            self._step_fns[name] = sharding.sharded_meta_step(
                self.mesh,
                config=cfg.meta_learner,
                task=self.by_name[name],
                horizon=cfg.horizon,
                objective=cfg.objective,
                checkpoint=cfg.checkpoint_policy,
                second_order=cfg.second_order,
            )
        return self._step_fns[name]

    # ---- one meta-step ----------------------------------------------------

    def step(self, st: dict) -> dict[str, Any]:
        cfg = self.cfg
        pool, t_max = _curriculum(cfg, st["step"], len(self.tasks))
        key = jax.random.wrap_key_data(jnp.asarray(st["key"]))
        key, k_choice, k_task, k_init = jax.random.split(key, 4)
        st["key"] = np.asarray(jax.random.key_data(key))
        capacity = cfg.replay_size // cfg.meta_batch
        if len(st["buffer"]) < capacity or float(jax.random.uniform(k_choice)) < 0.25:
            name = self.tasks[int(jax.random.randint(k_task, (), 0, pool))].name
            inner = self.init_batch(name, st["meta_params"], jax.random.key_data(k_init))
            inner = jax.tree.map(np.asarray, inner)
        else:
            i = int(jax.random.randint(k_task, (), 0, len(st["buffer"])))
            name, inner = st["buffer"].pop(i)
        task = self.by_name[name]
        loss, grads, new_inner, metrics = self.meta_step_fn(name)(
            st["meta_params"], sharding.to_global(self.mesh, inner)
        )
        loss = float(loss)
        new_inner = sharding.to_host(new_inner)
        inner_loss = float(np.mean(sharding.to_host(metrics)["loss"]))
        if int(new_inner.step[0]) < t_max:
            st["buffer"].append((name, new_inner))
            if len(st["buffer"]) > capacity:  # oldest out
                st["buffer"].pop(0)

        family = _task_family(task)
        finite = math.isfinite(loss) and all(
            bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads)
        )
        if finite:
            base = st["baselines"].get(family, loss)
            base = cfg.baseline_decay * base + (1 - cfg.baseline_decay) * loss
            st["baselines"][family] = base
            scale = 1.0 / max(base, 1e-6) if cfg.normalize_by_family else 1.0
            st["grad_acc"] = jax.tree.map(lambda a, g: a + scale * g, st["grad_acc"], grads)
            st["acc_count"] += 1
        st["step"] += 1
        record = {
            "step": st["step"],
            "task": name,
            "family": family,
            "meta_loss": loss if math.isfinite(loss) else None,
            "inner_loss": inner_loss if math.isfinite(inner_loss) else None,
            "inner_step": int(new_inner.step[0]),
            "T": t_max,
            "pool": pool,
            "finite": finite,
        }
        if not finite:
            st["skipped"] += 1
        if st["step"] % cfg.steps_per_update == 0:
            record.update(self.apply_update(st))
        record["skipped_updates"] = st["skipped"]
        return record

    def apply_update(self, st: dict) -> dict[str, Any]:
        if st["acc_count"] == 0:
            return {"updated": False}
        grads = jax.tree.map(lambda a: a / st["acc_count"], st["grad_acc"])
        norm = float(optax.tree.norm(grads))
        if math.isfinite(norm):
            updates, st["opt_state"] = self.meta_opt.update(grads, st["opt_state"], st["meta_params"])
            st["meta_params"] = optax.apply_updates(st["meta_params"], updates)
            st["updates"] += 1
            updated = True
        else:
            st["skipped"] += 1
            updated = False
        st["grad_acc"] = jax.tree.map(jnp.zeros_like, st["grad_acc"])
        st["acc_count"] = 0
        return {"updated": updated, "meta_grad_norm": norm if math.isfinite(norm) else None}


def meta_train(
    config: MetaTrainConfig | str = "smoke",
    *,
    checkpoint_dir: Optional[str] = None,
    seed: int = 0,
    resume: bool = False,
    devices: Optional[int] = None,
    progress: bool = True,
    on_step: Optional[Callable[[dict], None]] = None,
) -> MetaTrainResult:
    """Meta-trains a MAPA meta-learner.

    Args:
      config: a :class:`MetaTrainConfig` or a preset name (``"smoke"``, ``"default"``).
      checkpoint_dir: where checkpoints, ``metrics.jsonl`` and the training-curve
        plot go (None: nothing written).
      seed: the run's seed (meta-params init, task sampling, inner runs).
      resume: continue from the newest checkpoint in ``checkpoint_dir`` (an
        error if there is none, or it was written with another config or seed).
      devices: number of devices of the mesh (default: as many as divide
        ``meta_batch`` evenly). Results agree across device counts up to float
        rounding; bit-identical reruns need the same count.
      progress: show a progress bar with the meta-loss.
      on_step: called with each step's log record (for tests and notebooks).

    Returns:
      A :class:`MetaTrainResult`.
    """
    cfg = preset(config) if isinstance(config, str) else config
    if not isinstance(cfg, MetaTrainConfig):
        raise TypeError(f"meta_train: config must be a MetaTrainConfig or a preset name, got {type(config).__name__}.")
    if resume and checkpoint_dir is None:
        raise ValueError("meta_train: resume=True needs checkpoint_dir.")
    trainer = _Trainer(cfg, seed, devices)
    if resume:
        st = trainer.restore(checkpoint_dir)
    else:
        if checkpoint_dir is not None and ckpt.latest_step(checkpoint_dir) is not None:
            raise ValueError(
                f"meta_train: {checkpoint_dir!r} already holds a checkpoint; pass resume=True "
                "(--resume) to continue it, or choose another directory."
            )
        st = trainer.fresh_state()
    metrics_path = None
    if checkpoint_dir is not None:
        os.makedirs(checkpoint_dir, exist_ok=True)
        metrics_path = os.path.join(checkpoint_dir, "metrics.jsonl")
        if not resume and os.path.exists(metrics_path):
            os.remove(metrics_path)
        elif resume and os.path.exists(metrics_path):
            _truncate_metrics(metrics_path, st["step"])

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.meta_steps, initial=st["step"], desc="meta-train", unit="step")
    records = []
    t0 = time.perf_counter()
    while st["step"] < cfg.meta_steps:
        record = trainer.step(st)
        record["elapsed_s"] = round(time.perf_counter() - t0, 3)
        records.append(record)
        if metrics_path is not None:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if on_step is not None:
            on_step(record)
        if bar is not None:
            bar.update(1)
            if record["meta_loss"] is not None:
                bar.set_postfix(meta_loss=f"{record['meta_loss']:.4f}", task=record["task"][-24:])
        at_update = st["step"] % cfg.steps_per_update == 0
        if checkpoint_dir is not None and at_update and (
            (st["step"] // cfg.steps_per_update) % cfg.checkpoint_every == 0 or st["step"] >= cfg.meta_steps
        ):
            trainer.save(checkpoint_dir, st)
    if bar is not None:
        bar.close()
    if checkpoint_dir is not None:
        if ckpt.latest_step(checkpoint_dir) != st["step"]:
            trainer.save(checkpoint_dir, st)
        try:
            plot_metrics(metrics_path, os.path.join(checkpoint_dir, "metrics.png"))
        except Exception as e:  # a plot must never lose a finished run
            print(f"meta_train: could not write the plot: {e}")
    return MetaTrainResult(st["meta_params"], cfg, records, st["skipped"], checkpoint_dir)


def _truncate_metrics(path: str, step: int) -> None:
    """Drops log lines past ``step`` (written after the checkpoint a run resumes from)."""
    with open(path) as f:
        lines = [l for l in f if l.strip() and json.loads(l)["step"] <= step]
    with open(path, "w") as f:
        f.writelines(lines)


def plot_metrics(metrics_path: str, out_path: str) -> None:
    """Meta-training curves (meta-loss per family, moving average) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(metrics_path) as f:
        recs = [json.loads(l) for l in f if l.strip()]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    fams = sorted({r["family"] for r in recs})
    for fam in fams:
        xs = [r["step"] for r in recs if r["family"] == fam and r["meta_loss"] is not None]
        ys = [r["meta_loss"] for r in recs if r["family"] == fam and r["meta_loss"] is not None]
        axes[0].plot(xs, ys, ".", alpha=0.4, label=fam)
    ys = [r["meta_loss"] for r in recs if r["meta_loss"] is not None]
    if ys:
        w = max(1, len(ys) // 20)
        ma = np.convolve(ys, np.ones(w) / w, mode="valid")
        axes[0].plot(np.arange(len(ma)) + w, ma, "k-", label=f"moving mean ({w})")
    axes[0].set_xlabel("meta-step")
    axes[0].set_ylabel("meta-loss (final loss / initial loss)")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    axes[1].plot([r["step"] for r in recs], [r["T"] for r in recs], label="T (curriculum)")
    axes[1].plot([r["step"] for r in recs], [r["skipped_updates"] for r in recs], label="skipped updates")
    axes[1].set_xlabel("meta-step")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
