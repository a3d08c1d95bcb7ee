"""Meta-gradient estimators: one interface, many ways to estimate d(meta-loss)/d(meta-params).

An estimator turns the meta-params and one inner trajectory in flight into a
meta-loss, a meta-gradient and the trajectory's next state::

    est = TruncatedBackprop(config, UnrollSpec(horizon=20))
    inner = est.init(meta_params, task, key)                 # a fresh trajectory
    out = est.estimate(meta_params, inner, task, key)        # an Estimate
    out.meta_loss, out.meta_grad, out.inner, out.aux

Both methods are pure, jittable functions of one trajectory (no leading batch
axis): :func:`mapa_jax.meta.sharding.device_meta_step` vmaps ``estimate`` over
the trajectories on a device and averages over devices, whatever the
estimator, and the meta-training loop only ever sees :class:`Estimate`. The
``key`` is for estimators that draw randomness of their own (evolution
strategies); :class:`TruncatedBackprop` ignores it (its minibatches come from
the trajectory's own key, so that a trajectory is the same whichever estimator
continues it).

Estimators are frozen dataclasses (hashable, so a compiled meta-step can be
cached per estimator and task). :data:`ESTIMATORS` names them for configs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Protocol

import jax

from mapa_jax.config import MetaLearnerConfig
from mapa_jax.meta.unroll import InnerState, UnrollSpec, init_inner_state, truncated_unroll
from mapa_jax.tasks.base import Task

Array = jax.Array

__all__ = ["Estimate", "GradientEstimator", "TruncatedBackprop", "ESTIMATORS", "make_estimator"]


class Estimate(NamedTuple):
    """What an estimator returns for one trajectory.

    Attributes:
      meta_loss: the (normalized) meta-loss of this truncation, a scalar.
      meta_grad: its estimated gradient, a tree shaped like the meta-params.
      inner: the trajectory's state after the truncation (no gradient flows
        through it into the next truncation).
      aux: metrics, e.g. ``{"loss": final raw inner loss}``.
    """

    meta_loss: Array
    meta_grad: Any
    inner: Any
    aux: dict[str, Array]


class GradientEstimator(Protocol):
    """The interface every meta-gradient estimator implements."""

    config: MetaLearnerConfig
    spec: UnrollSpec

    def init(self, meta_params: Any, task: Task, key: Array) -> Any:
        """A fresh inner trajectory of ``task`` (parameters, optimizer state, ...)."""
        ...

    def estimate(self, meta_params: Any, inner: Any, task: Task, key: Array) -> Estimate:
        """Meta-loss, meta-gradient and next state of one trajectory."""
        ...


@dataclasses.dataclass(frozen=True)
class TruncatedBackprop:
    """Truncated backpropagation through time (TBPTT) over ``spec.horizon`` inner steps.

    The exact gradient of the truncation's meta-loss with the trajectory's
    starting state held constant (the bias of truncation, none of the variance
    of a stochastic estimate); see :func:`mapa_jax.meta.unroll.truncated_unroll`
    for the checkpointed scan it differentiates.
    """

    config: MetaLearnerConfig
    spec: UnrollSpec

    def __post_init__(self) -> None:
        if not isinstance(self.config, MetaLearnerConfig):
            raise TypeError(f"TruncatedBackprop: config must be a MetaLearnerConfig, got {type(self.config).__name__}.")
        if not isinstance(self.spec, UnrollSpec):
            raise TypeError(f"TruncatedBackprop: spec must be an UnrollSpec, got {type(self.spec).__name__}.")

    def init(self, meta_params: Any, task: Task, key: Array) -> InnerState:
        return init_inner_state(meta_params, self.config, task, key)

    def estimate(self, meta_params: Any, inner: InnerState, task: Task, key: Array) -> Estimate:
        del key  # deterministic given the trajectory (its minibatches use inner.key)
        (loss, (new, aux)), grads = jax.value_and_grad(truncated_unroll, has_aux=True)(
            meta_params, self.config, task, inner, self.spec
        )
        return Estimate(loss, grads, new, aux)


#: Estimators by the name a :class:`~mapa_jax.meta.train.MetaTrainConfig` gives.
ESTIMATORS: dict[str, type] = {"tbptt": TruncatedBackprop}


def make_estimator(name: str, config: MetaLearnerConfig, spec: UnrollSpec) -> GradientEstimator:
    """The estimator named ``name`` (see :data:`ESTIMATORS`) for ``config`` and ``spec``."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown meta-gradient estimator {name!r}; known: {sorted(ESTIMATORS)}.")
    return ESTIMATORS[name](config, spec)
