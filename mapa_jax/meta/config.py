"""What a meta-training run is: :class:`MetaTrainConfig` and the named presets.

A config is a frozen dataclass, validated on construction, saved as JSON in
every checkpoint (``to_dict`` / ``from_dict``) so that a run resumes only with
the configuration that started it. The unroll settings (horizon, objective,
checkpoint policy, order) are validated by :class:`~mapa_jax.meta.unroll.UnrollSpec`
and reach the estimator as one value (:attr:`MetaTrainConfig.unroll_spec`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional

import jax
import optax

from mapa_jax.config import MetaLearnerConfig
from mapa_jax.meta.estimators import ESTIMATORS
from mapa_jax.meta.unroll import UnrollSpec

__all__ = ["MetaTrainConfig", "PRESETS", "preset", "META_LR_SCHEDULES"]

META_LR_SCHEDULES = ("constant", "cosine")

# Fields renamed since checkpoints were first written: old name -> new name.
_RENAMED = {"normalize_by_family": "normalize_by_group"}


def _is_real(value: Any) -> bool:
    """A real number (int or float, not a bool or a string)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
      baseline_decay: decay of the per-group moving-average baseline.
      normalize_by_group: scale the meta-gradients of each task group (the
        dataset a task is built on, :func:`mapa_jax.tasks.task_group`) by the
        inverse of its moving-average meta-loss (every group weighs the same
        in relative terms); False: meta-gradients are averaged as they come.
        (Named ``normalize_by_family`` before; ``from_dict`` reads that name.)
      objective: ``"final"`` or ``"mean"`` minibatch loss of each truncation,
        or ``"validation"``: the validation-split loss at its end (see
        :func:`~mapa_jax.meta.unroll.truncated_unroll`); ``"sam"``,
        ``"gsam"``, ``"gam"``: a sharpness-aware score of its end point
        (:func:`~mapa_jax.meta.unroll.regularized_loss`).
      sharpness_rho, regularizer_weight: the radius and weight of those
        regularized objectives (unused by the others).
      checkpoint_policy: ``jax.checkpoint`` policy of the unroll, or None.
      second_order: differentiate through the inner gradients.
      estimator: the meta-gradient estimator
        (:data:`~mapa_jax.meta.estimators.ESTIMATORS`; ``"tbptt"``).
      es_sigma: the perturbation scale of ``"es"`` and ``"pes"``.
      adapt_steps, adapt_lr: the adaptation of ``"m-l2o"`` (first-order;
        :class:`~mapa_jax.meta.estimators.AdaptedBackprop`).
      checkpoint_every: meta-updates between checkpoints.
      augment_log_range: task augmentation (VeLO's, Metz et al. 2022): each
        trajectory optimizes its task reparameterized per tensor as
        ``theta = c * theta'``, ``c = exp(U(-r, r))`` drawn from its own key
        with ``r`` this value (:mod:`mapa_jax.tasks.augment`), so that the
        learner cannot key on the absolute scales of weights and gradients.
        0 (the default) turns it off; a run without it is the same as before
        the option existed (numerics and checkpoints).
      unknown_horizon_fraction: with a ``meta_learner.horizon_aware`` learner,
        the fraction of new trajectories whose length is not told to it
        (``total_steps`` not given: they run to the curriculum's T); the
        others draw their own T (:meth:`~mapa_jax.meta.state.MetaTrainer.sample_length`)
        and are told it. Unused by a learner without horizon features.
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
    normalize_by_group: bool = True
    objective: str = "final"
    sharpness_rho: float = 0.05
    regularizer_weight: float = 0.1
    checkpoint_policy: Optional[str] = "nothing_saveable"
    second_order: bool = False
    checkpoint_every: int = 10
    estimator: str = "tbptt"
    es_sigma: float = 0.01
    adapt_steps: int = 1
    adapt_lr: float = 1e-3
    augment_log_range: float = 0.0
    unknown_horizon_fraction: float = 0.25

    def __post_init__(self) -> None:
        """Raises ValueError naming the field for a value of the wrong type or out of range."""

        def bad(field, value, expected):
            return ValueError(f"MetaTrainConfig.{field} must be {expected}, got {value!r}.")

        for name, lo in (("sharpness_rho", 0.0), ("regularizer_weight", None), ("es_sigma", 0.0), ("adapt_lr", 0.0)):
            v = getattr(self, name)
            if not (_is_real(v) and math.isfinite(v) and (v > 0 if lo is not None else v >= 0)):
                raise bad(name, v, "a finite number > 0" if lo is not None else "a finite number >= 0")
        self.unroll_spec  # horizon, objective, checkpoint policy, order: validated there
        if not isinstance(self.adapt_steps, int) or isinstance(self.adapt_steps, bool) or self.adapt_steps < 0:
            raise bad("adapt_steps", self.adapt_steps, "an integer >= 0")
        for name in ("meta_steps", "meta_batch", "inner_steps", "min_inner_steps",
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
        if not (_is_real(self.curriculum_fraction) and 0.0 <= self.curriculum_fraction <= 1.0):
            raise bad("curriculum_fraction", self.curriculum_fraction, "a number in [0, 1]")
        if not (_is_real(self.unknown_horizon_fraction) and 0.0 <= self.unknown_horizon_fraction <= 1.0):
            raise bad("unknown_horizon_fraction", self.unknown_horizon_fraction, "a number in [0, 1]")
        for name in ("meta_lr", "clip_norm"):
            v = getattr(self, name)
            if not (_is_real(v) and math.isfinite(v) and v > 0):
                raise bad(name, v, "a finite number > 0")
        v = self.head_weight_decay
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0):
            raise bad("head_weight_decay", v, "a finite number >= 0")
        v = self.augment_log_range
        if not (_is_real(v) and math.isfinite(v) and v >= 0):
            raise bad("augment_log_range", v, "a finite number >= 0")
        if self.meta_lr_schedule not in META_LR_SCHEDULES:
            raise bad("meta_lr_schedule", self.meta_lr_schedule, f"one of {META_LR_SCHEDULES}")
        if not (_is_real(self.baseline_decay) and 0.0 <= self.baseline_decay < 1.0):
            raise bad("baseline_decay", self.baseline_decay, "a number in [0, 1)")
        if not isinstance(self.normalize_by_group, bool):
            raise bad("normalize_by_group", self.normalize_by_group, "True or False")
        if self.estimator not in ESTIMATORS:
            raise bad("estimator", self.estimator, f"one of {sorted(ESTIMATORS)}")
        if not isinstance(self.meta_learner, MetaLearnerConfig):
            raise bad("meta_learner", self.meta_learner, "a MetaLearnerConfig")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["meta_learner"] = self.meta_learner.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MetaTrainConfig":
        """Inverse of :meth:`to_dict` (also reads configs saved before a field was renamed).

        Raises:
          TypeError: ``d`` (or its ``meta_learner``) is not a dict.
          ValueError: ``meta_learner`` is missing, a field is unknown or has a
            bad value (the message names the field).
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"MetaTrainConfig.from_dict: d must be a dict of fields, got {type(d).__name__}.")
        d = dict(d)
        if "meta_learner" not in d:
            raise ValueError("MetaTrainConfig.from_dict: the field 'meta_learner' (a MetaLearnerConfig dict) "
                             "is missing.")
        d["meta_learner"] = MetaLearnerConfig.from_dict(d["meta_learner"])
        for old, new in _RENAMED.items():  # configs saved before a field was renamed
            if old in d and new not in d:
                d[new] = d.pop(old)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"MetaTrainConfig: unknown fields {unknown}.")
        return cls(**d)

    @property
    def estimator_options(self) -> dict[str, Any]:
        """The options of :attr:`estimator` (for :func:`~mapa_jax.meta.estimators.make_estimator`)."""
        if self.estimator in ("es", "pes"):
            return {"sigma": self.es_sigma}
        if self.estimator == "m-l2o":
            return {"adapt_steps": self.adapt_steps, "adapt_lr": self.adapt_lr}
        return {}

    @property
    def unroll_spec(self) -> UnrollSpec:
        """The truncation settings as one validated value."""
        return UnrollSpec(self.horizon, self.objective, self.checkpoint_policy, self.second_order,
                          rho=self.sharpness_rho, regularizer_weight=self.regularizer_weight)

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

# The default preset with the "distance" parameterization: a learned factor on
# Prodigy's distance estimate (the untrained learner is Prodigy with the Huber
# prox). Not the default yet: README, Benchmarks ("Scale-free base steps").
PRESETS["distance"] = dataclasses.replace(
    PRESETS["default"],
    meta_learner=dataclasses.replace(PRESETS["default"].meta_learner, parameterization="distance"),
)

# The distance preset on a wider distribution: the meta-train architectures and
# two transformers (`sequence_train`: tasks that want large steps, where the
# tabular tasks want small ones), trajectories of T = 100-400 steps (truncations
# of H = 100), VeLO-style per-tensor rescaling within e^{+-1}, and a stronger
# pull of the heads toward the factor 1 (10.0). README, Benchmarks.
PRESETS["distance_wide"] = dataclasses.replace(
    PRESETS["distance"],
    tasks="meta_train_wide",
    inner_steps=400,
    augment_log_range=1.0,
    head_weight_decay=10.0,
)


# distance_wide with d held after step 100 and the learned factor acting only
# after it (MetaLearnerConfig.distance_factor_after_growth): the first 100 steps
# are Prodigy's, so a factor below 1 cannot slow the estimate's growth.
PRESETS["distance_held"] = dataclasses.replace(
    PRESETS["distance_wide"],
    meta_learner=dataclasses.replace(PRESETS["distance_wide"].meta_learner, distance_growth_steps=100,
                                     distance_factor_after_growth=True),
)

# distance_held with the horizon features (MetaLearnerConfig.horizon_aware):
# each new trajectory draws its own T in {100, ..., 400} and is told it
# (mapa(total_steps=T)), a quarter are not told (unknown_horizon_fraction), so
# that the learned factor can follow the fraction of training done, a shape
# that stretches to runs longer than meta-training's.
PRESETS["distance_horizon"] = dataclasses.replace(
    PRESETS["distance_held"],
    meta_learner=dataclasses.replace(PRESETS["distance_held"].meta_learner, horizon_aware=True),
)


def preset(name: str, **overrides: Any) -> MetaTrainConfig:
    """A named configuration (``"smoke"``, ``"default"``, ``"distance"``, ``"distance_wide"``,
    ``"distance_held"``, ``"distance_horizon"``), with field overrides.

    Raises:
      ValueError: an unknown preset or override field, or a bad value (the
        message names it).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}.")
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(MetaTrainConfig)})
    if unknown:
        raise ValueError(f"preset({name!r}): unknown MetaTrainConfig fields {unknown}.")
    return dataclasses.replace(PRESETS[name], **overrides)


