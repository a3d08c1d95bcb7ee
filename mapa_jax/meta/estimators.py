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
``key`` is for estimators that draw randomness of their own (the evolution
strategies :class:`EvolutionStrategies` and
:class:`PersistentEvolutionStrategies`, gradient-free, as L2E meta-learns);
:class:`TruncatedBackprop` ignores it (its minibatches come from
the trajectory's own key, so that a trajectory is the same whichever estimator
continues it).

Estimators are frozen dataclasses (hashable, so a compiled meta-step can be
cached per estimator and task). :data:`ESTIMATORS` names them for configs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Optional, Protocol

import jax
import jax.numpy as jnp

from mapa_jax.config import MetaLearnerConfig
from mapa_jax.meta.unroll import (
    AugmentedState,
    HorizonState,
    InnerState,
    UnrollSpec,
    init_inner_state,
    truncated_unroll,
)
from mapa_jax.tasks.augment import rescale_task
from mapa_jax.tasks.base import Task

Array = jax.Array

__all__ = ["Estimate", "GradientEstimator", "TruncatedBackprop", "EvolutionStrategies", "PersistentEvolutionStrategies",
           "PESState", "AdaptedBackprop", "ESTIMATORS", "make_estimator"]


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


# --------------------------------------------------------------------------
# Evolution strategies: gradient-free estimates from antithetic perturbations.


def _peel(state: Any, task: Task) -> tuple[Any, Task, Optional[Array], Callable[[Any], Any]]:
    """``(core state, task it runs on, total_steps, rewrap)``: the wrappers of a trajectory removed.

    :class:`~mapa_jax.meta.unroll.HorizonState` and
    :class:`~mapa_jax.meta.unroll.AugmentedState` (meta-training's) are peeled
    as :func:`~mapa_jax.meta.unroll.truncated_unroll` peels them, so that the
    evolution strategies see the same rescaled task and horizon.
    """
    if isinstance(state, HorizonState):
        t = jax.lax.stop_gradient(state.total_steps)
        core, task, _, rewrap = _peel(state.inner, task)
        return core, task, t, lambda new: HorizonState(rewrap(new), t)
    if isinstance(state, AugmentedState):
        scales = jax.lax.stop_gradient(state.scales)
        core, task, t, rewrap = _peel(state.inner, rescale_task(task, scales))
        return core, task, t, lambda new: AugmentedState(rewrap(new), scales)
    return state, task, None, lambda new: new


def _perturbation(meta_params: Any, key: Array, sigma: float) -> Any:
    """``sigma * N(0, I)`` shaped like the meta-params (one key per leaf)."""
    leaves, treedef = jax.tree.flatten(meta_params)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([sigma * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


def _check_es(where: str, config: Any, spec: Any, sigma: Any) -> None:
    if not isinstance(config, MetaLearnerConfig):
        raise TypeError(f"{where}: config must be a MetaLearnerConfig, got {type(config).__name__}.")
    if not isinstance(spec, UnrollSpec):
        raise TypeError(f"{where}: spec must be an UnrollSpec, got {type(spec).__name__}.")
    ok = isinstance(sigma, (int, float)) and not isinstance(sigma, bool) and math.isfinite(sigma) and sigma > 0
    if not ok:
        raise ValueError(f"{where}: sigma must be a finite number > 0, got {sigma!r}.")


def _scaled(tree: Any, c: Array) -> Any:
    return jax.tree.map(lambda x: c * x, tree)


@dataclasses.dataclass(frozen=True)
class EvolutionStrategies:
    """Antithetic evolution strategies (ES) on one truncation.

    With ``eps ~ N(0, sigma^2 I)`` over the meta-params and ``L(.)`` the
    truncation's meta-loss from the trajectory's current state, the estimate
    is ``(L(theta + eps) - L(theta - eps)) eps / (2 sigma^2)``: unbiased for
    the gradient of the Gaussian-smoothed truncation loss, with no
    backpropagation (three forward unrolls: the pair, and the unperturbed one
    that continues the trajectory and reports the meta-loss). Like TBPTT it
    holds the trajectory's starting state constant: the truncation bias
    remains; :class:`PersistentEvolutionStrategies` removes it.
    """

    config: MetaLearnerConfig
    spec: UnrollSpec
    sigma: float = 0.01

    def __post_init__(self) -> None:
        _check_es("EvolutionStrategies", self.config, self.spec, self.sigma)

    def init(self, meta_params: Any, task: Task, key: Array) -> InnerState:
        return init_inner_state(meta_params, self.config, task, key)

    def estimate(self, meta_params: Any, inner: Any, task: Task, key: Array) -> Estimate:
        core, task, t, rewrap = _peel(inner, task)
        eps = _perturbation(meta_params, key, self.sigma)

        def unroll(mp: Any) -> tuple[Array, Any]:
            return truncated_unroll(mp, self.config, task, core, self.spec, total_steps=t)

        plus, _ = unroll(jax.tree.map(jnp.add, meta_params, eps))
        minus, _ = unroll(jax.tree.map(jnp.subtract, meta_params, eps))
        loss, (new, aux) = unroll(meta_params)
        grad = _scaled(eps, (plus - minus) / (2.0 * self.sigma**2))
        return Estimate(loss, grad, rewrap(new), aux)


class PESState(NamedTuple):
    """A trajectory of :class:`PersistentEvolutionStrategies`: the antithetic pair in flight.

    Attributes:
      plus, minus: the trajectories run with ``theta + eps_k`` and
        ``theta - eps_k`` in every truncation ``k`` so far.
      xi: ``sum_k eps_k``, the perturbations accumulated since the start.
    """

    plus: InnerState
    minus: InnerState
    xi: Any

    @property
    def step(self) -> Array:
        """The inner steps the trajectory has taken."""
        return self.plus.step


@dataclasses.dataclass(frozen=True)
class PersistentEvolutionStrategies:
    """Persistent evolution strategies (PES; Vicol, Metz and Sohl-Dickstein, ICML 2021).

    The antithetic pair is persistent: the ``+`` and ``-`` trajectories keep
    their own states across truncations (each run with its own perturbed
    meta-params in every truncation) and the perturbations accumulate,
    ``xi_k = eps_1 + ... + eps_k``. The estimate at truncation ``k``,

    ``(L_k^+ - L_k^-) xi_k / (2 sigma^2)``,

    is unbiased for the gradient of the (smoothed) loss of truncation ``k``
    with respect to meta-params used in *every* step of the trajectory so far:
    no truncation bias, and no backpropagation. Its variance grows with the
    number of truncations (``xi`` accumulates). Two forward unrolls per
    truncation; the reported meta-loss is the pair's mean.
    """

    config: MetaLearnerConfig
    spec: UnrollSpec
    sigma: float = 0.01

    def __post_init__(self) -> None:
        _check_es("PersistentEvolutionStrategies", self.config, self.spec, self.sigma)

    def init(self, meta_params: Any, task: Task, key: Array) -> PESState:
        inner = init_inner_state(meta_params, self.config, task, key)
        return PESState(inner, inner, jax.tree.map(jnp.zeros_like, meta_params))

    def estimate(self, meta_params: Any, inner: Any, task: Task, key: Array) -> Estimate:
        core, task, t, rewrap = _peel(inner, task)
        if not isinstance(core, PESState):
            raise TypeError(f"PersistentEvolutionStrategies: the trajectory must be the PESState its init "
                            f"returned, got {type(core).__name__}.")
        eps = _perturbation(meta_params, key, self.sigma)
        xi = jax.tree.map(jnp.add, core.xi, eps)

        def unroll(mp: Any, state: InnerState) -> tuple[Array, Any]:
            return truncated_unroll(mp, self.config, task, state, self.spec, total_steps=t)

        plus, (new_plus, aux) = unroll(jax.tree.map(jnp.add, meta_params, eps), core.plus)
        minus, (new_minus, _) = unroll(jax.tree.map(jnp.subtract, meta_params, eps), core.minus)
        grad = _scaled(xi, (plus - minus) / (2.0 * self.sigma**2))
        new = PESState(new_plus, new_minus, jax.lax.stop_gradient(xi))
        return Estimate(0.5 * (plus + minus), grad, rewrap(new), aux)


# --------------------------------------------------------------------------
# M-L2O: the meta-gradient after test-time adaptation (MAML-style).


@dataclasses.dataclass(frozen=True)
class AdaptedBackprop:
    """M-L2O's meta-gradient (Yang et al., ICLR 2023, Algorithm 1): after adaptation on the task.

    On each truncation the meta-params are first adapted to the task, as
    :func:`mapa_jax.adapt` adapts them at test time: ``adapt_steps`` plain
    gradient steps ``theta_{j+1} = theta_j - adapt_lr * grad L(theta_j)`` on
    the truncation's meta-loss ``L`` from the trajectory's current state. The
    truncation is then run with the adapted ``theta_K`` (which continues the
    trajectory), and the meta-gradient is that of ``L(theta_K)`` with respect
    to ``theta``: through the adaptation steps (second order, MAML), or with
    ``first_order`` the gradient at ``theta_K`` (first-order MAML). The
    learner is thereby trained to be good *after* adaptation, the property
    that makes test-time adaptation pay on shifted tasks. With
    ``adapt_steps = 0`` it is :class:`TruncatedBackprop`.
    """

    config: MetaLearnerConfig
    spec: UnrollSpec
    adapt_steps: int = 1
    adapt_lr: float = 1e-3
    first_order: bool = True

    def __post_init__(self) -> None:
        TruncatedBackprop(self.config, self.spec)  # the same type checks
        k = self.adapt_steps
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ValueError(f"AdaptedBackprop: adapt_steps must be an integer >= 0, got {k!r}.")
        lr = self.adapt_lr
        if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"AdaptedBackprop: adapt_lr must be a finite number > 0, got {lr!r}.")
        if not isinstance(self.first_order, bool):
            raise ValueError(f"AdaptedBackprop: first_order must be True or False, got {self.first_order!r}.")

    def init(self, meta_params: Any, task: Task, key: Array) -> InnerState:
        return init_inner_state(meta_params, self.config, task, key)

    def adapted(self, meta_params: Any, inner: Any, task: Task) -> Any:
        """``theta_K``: the meta-params after the adaptation steps on this truncation."""

        def loss(mp: Any) -> Array:
            return truncated_unroll(mp, self.config, task, inner, self.spec)[0]

        mp = meta_params
        for _ in range(self.adapt_steps):
            g = jax.grad(loss)(mp)
            if self.first_order:
                g = jax.lax.stop_gradient(g)
            mp = jax.tree.map(lambda p, d: p - self.adapt_lr * d, mp, g)
        return mp

    def estimate(self, meta_params: Any, inner: Any, task: Task, key: Array) -> Estimate:
        del key

        def outer(mp: Any) -> tuple[Array, Any]:
            return truncated_unroll(self.adapted(mp, inner, task), self.config, task, inner, self.spec)

        (loss, (new, aux)), grads = jax.value_and_grad(outer, has_aux=True)(meta_params)
        return Estimate(loss, grads, new, aux)


#: Estimators by the name a :class:`~mapa_jax.meta.train.MetaTrainConfig` gives.
ESTIMATORS: dict[str, type] = {"tbptt": TruncatedBackprop, "es": EvolutionStrategies,
                               "pes": PersistentEvolutionStrategies, "m-l2o": AdaptedBackprop}


def make_estimator(name: str, config: MetaLearnerConfig, spec: UnrollSpec, **options: Any) -> GradientEstimator:
    """The estimator named ``name`` (see :data:`ESTIMATORS`) for ``config`` and ``spec``.

    ``options`` are the estimator's own fields (``sigma`` of ES and PES;
    ``adapt_steps``, ``adapt_lr``, ``first_order`` of M-L2O).
    """
    if name not in ESTIMATORS:
        raise ValueError(f"unknown meta-gradient estimator {name!r}; known: {sorted(ESTIMATORS)}.")
    cls = ESTIMATORS[name]
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)} | ({"config", "spec"} & set(options)))
    if unknown:
        raise ValueError(f"make_estimator: {name!r} has no options {unknown}.")
    return cls(config, spec, **options)
