"""Truncated unrolls of the inner optimization, differentiable in the meta-params.

The inner loop is ``jax.lax.scan`` over steps. Under ``jax.checkpoint`` (the
default) the scan is split into chunks of about ``sqrt(H)`` steps: the outer
scan saves only the inner state at chunk boundaries and the inner scan, also
rematerialized, recomputes a chunk's steps during the backward pass, so the
memory of one meta-gradient grows like ``sqrt(H)`` instead of ``H`` (measured
by ``benchmarks/meta_train_cost.py``). ``checkpoint=None`` switches it off.

Truncated backpropagation through time (TBPTT): a truncation of ``H`` steps
starts from an inner state carried over from the previous truncation under
``stop_gradient``; the meta-gradient flows within the truncation only. The
default is first order: inner gradients are treated as constants with respect
to the meta-params (``second_order=False``), as Andrychowicz et al. (2016) do.

Task augmentation (:func:`init_augmented`): a trajectory may run on its task in
a randomly rescaled parameterization (:mod:`mapa_jax.tasks.augment`); its
scales are part of its state (:class:`AugmentedState`) and every truncation uses them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mapa_jax.config import MetaLearnerConfig
from mapa_jax.mapa import MapaState, conditioning, mapa
from mapa_jax.tasks.augment import check_log_range, rescale_task, sample_scales
from mapa_jax.tasks.base import Task

Array = jax.Array

__all__ = ["AUGMENT_STREAM", "CHECKPOINT_POLICIES", "OBJECTIVES", "REGULARIZED_OBJECTIVES", "AugmentedState", "HorizonState", "InnerState",
           "UnrollSpec", "init_augmented", "init_inner_state", "regularized_loss", "truncated_unroll"]

# Names of jax.checkpoint policies (None: no rematerialization at all).
CHECKPOINT_POLICIES = {
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
}
OBJECTIVES = ("final", "mean", "validation", "sam", "gsam", "gam")
#: The regularized objectives: the end point scored by a sharpness-aware loss
#: (:func:`regularized_loss`).
REGULARIZED_OBJECTIVES = ("sam", "gsam", "gam")
#: What a trajectory's key is folded with for its augmentation scales: a stream
#: of its own, so the trajectory's other draws are those of a run without it.
AUGMENT_STREAM = 0x5CA1E


@dataclasses.dataclass(frozen=True)
class UnrollSpec:
    """How one truncation is unrolled and scored; validated once, here.

    Attributes:
      horizon: H, the truncation length (>= 1).
      objective: ``"final"``, the minibatch loss after the last step,
        ``"mean"``, the mean minibatch loss over the truncation, or
        ``"validation"``, the loss on the task's whole validation split after
        the last step (what the evaluation protocol selects baselines by, so
        that a meta-learner is not rewarded for overfitting the train split);
        each divided by the trajectory's initial loss (normalized per task);
        or a regularized score of the end point on the last minibatch,
        ``"sam"``, ``"gsam"`` or ``"gam"`` (:func:`regularized_loss`).
      checkpoint: a :data:`CHECKPOINT_POLICIES` name, or None for a plain scan.
      second_order: if False (default) inner gradients are constants w.r.t.
        the meta-params.
      rho: the neighbourhood radius of the regularized objectives (> 0).
      regularizer_weight: the weight of GSAM's surrogate gap and of GAM's
        gradient-norm term (>= 0).
    """

    horizon: int
    objective: str = "final"
    checkpoint: Optional[str] = "nothing_saveable"
    second_order: bool = False
    rho: float = 0.05
    regularizer_weight: float = 0.1

    def __post_init__(self) -> None:
        h = self.horizon
        if not isinstance(h, (int, np.integer)) or isinstance(h, bool) or h < 1:
            raise ValueError(f"UnrollSpec: horizon must be an integer >= 1, got {h!r}.")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"UnrollSpec: objective must be one of {OBJECTIVES}, got {self.objective!r}.")
        if self.checkpoint is not None and self.checkpoint not in CHECKPOINT_POLICIES:
            raise ValueError(
                f"UnrollSpec: checkpoint must be one of {sorted(CHECKPOINT_POLICIES)} or None, "
                f"got {self.checkpoint!r}."
            )
        if not isinstance(self.second_order, bool):
            raise ValueError(f"UnrollSpec: second_order must be True or False, got {self.second_order!r}.")
        for name, lo in (("rho", "> 0"), ("regularizer_weight", ">= 0")):
            v = getattr(self, name)
            ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)
            if not (ok and (v > 0 if lo == "> 0" else v >= 0)):
                raise ValueError(f"UnrollSpec: {name} must be a finite number {lo}, got {v!r}.")


def regularized_loss(loss_fn: Callable[[Any], Array], params: Any, objective: str, rho: float,
                     weight: float) -> Array:
    r"""A sharpness-aware score of ``params`` (the meta-objectives ``"sam"``, ``"gsam"``, ``"gam"``).

    With ``g = grad L(theta)`` and the one-step worst-case perturbation
    ``eps = rho g / ||g||`` (held constant: no meta-gradient through its
    direction, as SAM's own update treats it):

    * ``"sam"`` (Foret et al., ICLR 2021): ``L_SAM = L(theta + eps)``, the
      first-order estimate of ``max_{||e|| <= rho} L(theta + e)``;
    * ``"gsam"`` (Zhuang et al., ICLR 2022): ``L_SAM + weight * h`` with the
      surrogate gap ``h = L_SAM - L(theta)``;
    * ``"gam"`` (Zhang et al., CVPR 2023): ``L(theta) + weight * rho *
      ||grad L(theta + eps)||``, the first-order flatness
      ``rho max_{||e|| <= rho} ||grad L(theta + e)||`` at its one-step
      estimate (its meta-gradient differentiates through a gradient).

    The norms are over all parameters together (the pytree as one vector).
    """
    value, grads = jax.value_and_grad(loss_fn)(params)
    g = jax.lax.stop_gradient(grads)
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(g)))
    scale = rho / jnp.maximum(norm, 1e-12)
    perturbed = jax.tree.map(lambda p, x: p + scale * x, params, g)
    if objective == "gam":
        gp = jax.grad(loss_fn)(perturbed)
        return value + weight * rho * jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(gp)) + 1e-30)
    sam = loss_fn(perturbed)
    if objective == "sam":
        return sam
    if objective == "gsam":
        return sam + weight * (sam - value)
    raise ValueError(f"regularized_loss: objective must be one of {REGULARIZED_OBJECTIVES}, got {objective!r}.")


class InnerState(NamedTuple):
    """One inner trajectory in flight: parameters, optimizer state, step, RNG, scale.

    ``key`` is raw key data (``jax.random.key_data``), so that the state is
    plain arrays that travel to the host and into checkpoints. ``loss0`` is the
    trajectory's initial loss, used to normalize its meta-loss.
    """

    params: Any
    opt_state: MapaState
    step: Array
    key: Array
    loss0: Array


class AugmentedState(NamedTuple):
    """A trajectory of a task in a randomly rescaled parameterization (task augmentation).

    Made by :func:`init_augmented`; :func:`truncated_unroll` continues it on
    ``rescale_task(task, scales)``. A wrapper rather than a field of
    :class:`InnerState`, so that the state (and checkpoints) of a run without
    augmentation are what they were before it existed.

    Attributes:
      inner: the trajectory on the rescaled task (its params are ``theta' = theta / c``).
      scales: ``c``, one float32 scalar per tensor (:func:`~mapa_jax.tasks.augment.sample_scales`).
    """

    inner: InnerState
    scales: Any

    @property
    def step(self) -> Array:
        """The inner steps the trajectory has taken (its ``inner.step``)."""
        return self.inner.step


class HorizonState(NamedTuple):
    """A trajectory of a horizon-aware learner with its own length ``T``.

    Meta-training (:class:`~mapa_jax.meta.state.MetaTrainer`) draws ``T`` per
    new trajectory when ``config.horizon_aware``; :func:`truncated_unroll` runs
    MAPA with ``total_steps=total_steps`` (a traced scalar: one compiled
    program for every ``T``), so that the progress feature is the fraction of
    *this* trajectory done. A wrapper, as :class:`AugmentedState` is, so that
    the states and checkpoints of runs without it are unchanged.

    Attributes:
      inner: the trajectory (an :class:`InnerState` or :class:`AugmentedState`).
      total_steps: ``T``, an int32 scalar; 0: the length is not told to the
        learner (both horizon features are 0), as ``mapa(total_steps=None)``.
    """

    inner: Any
    total_steps: Array

    @property
    def step(self) -> Array:
        """The inner steps the trajectory has taken."""
        return self.inner.step


def init_inner_state(meta_params: Any, config: MetaLearnerConfig, task: Task, key: Array) -> InnerState:
    """A fresh trajectory of ``task``: new parameters, optimizer state and scale."""
    k_init, k_batch, k_run = jax.random.split(key, 3)
    params = task.init(k_init)
    tx = mapa(meta_params, config, graph=task.graph())
    loss0 = task.loss(params, task.sample(k_batch))
    return InnerState(
        params, tx.init(params), jnp.zeros([], jnp.int32), jax.random.key_data(k_run), jnp.abs(loss0) + 1e-8
    )


def init_augmented(
    init: Callable[[Task, Array], InnerState], task: Task, key: Array, log_range: float
) -> AugmentedState:
    """A fresh trajectory of ``task`` in a randomly rescaled parameterization (task augmentation).

    Draws per-tensor scales ``c = exp(U(-log_range, log_range))``
    (:func:`~mapa_jax.tasks.augment.sample_scales`) from
    ``fold_in(key, AUGMENT_STREAM)`` and starts the trajectory with
    ``init(rescale_task(task, c), key)``; the :class:`AugmentedState` holds
    ``c``, so that every truncation of it (:func:`truncated_unroll`), also
    after a resume from a checkpoint, runs on the same rescaled task.

    Args:
      init: ``(task, key) -> InnerState``, e.g. an estimator's ``init`` with its
        meta-params bound, or :func:`init_inner_state`'s.
      task: the task.
      key: the trajectory's key (a typed PRNG key).
      log_range: half-width of ``log c``; a finite number >= 0.

    Raises:
      ValueError: ``log_range`` is not a finite number >= 0.
    """
    check_log_range(log_range, "init_augmented")
    k_scales = jax.random.fold_in(key, AUGMENT_STREAM)
    scales = sample_scales(k_scales, jax.eval_shape(task.init, key), log_range)
    return AugmentedState(init(rescale_task(task, scales), key), scales)


def _chunks(h: int) -> tuple[int, int]:
    """Split ``h`` steps into ``n`` chunks of ``c`` (``n * c == h``, ``c`` near sqrt(h))."""
    c = max(1, int(math.isqrt(h)))
    while h % c:
        c -= 1
    return h // c, c


def truncated_unroll(
    meta_params: Any,
    config: MetaLearnerConfig,
    task: Task,
    state: InnerState | AugmentedState | HorizonState,
    spec: UnrollSpec,
    *,
    total_steps: Optional[Array] = None,
) -> tuple[Array, tuple[InnerState | AugmentedState | HorizonState, dict[str, Array]]]:
    """Runs ``spec.horizon`` inner steps of MAPA on ``task`` from ``state``.

    Args:
      meta_params: differentiated.
      config: the meta-learner configuration.
      task: the inner problem.
      state: where the trajectory stands (its arrays are treated as constants);
        an :class:`AugmentedState` (:func:`init_augmented`) continues on
        ``rescale_task(task, state.scales)``: its steps and meta-loss
        (validation objective included) use the rescaled loss and evaluate;
        a :class:`HorizonState` runs MAPA with ``total_steps=state.total_steps``.
      spec: horizon, objective, checkpoint policy and order (:class:`UnrollSpec`).
      total_steps: passed to :func:`~mapa_jax.mapa.mapa` (set from a
        :class:`HorizonState`; None: the length is not known).

    Returns:
      ``(meta_loss, (new_state, metrics))``: the new state is stop-gradient'ed
      and ready to continue; metrics hold the final raw loss.
    """
    if not isinstance(spec, UnrollSpec):
        raise TypeError(f"truncated_unroll: spec must be an UnrollSpec, got {type(spec).__name__}.")
    horizon, objective, checkpoint, second_order = spec.horizon, spec.objective, spec.checkpoint, spec.second_order
    if isinstance(state, HorizonState):  # the same unroll, told the trajectory's length
        t = jax.lax.stop_gradient(state.total_steps)
        meta_loss, (new, metrics) = truncated_unroll(meta_params, config, task, state.inner, spec, total_steps=t)
        return meta_loss, (HorizonState(new, t), metrics)
    if isinstance(state, AugmentedState):  # the same unroll, on the trajectory's rescaled task
        scales = jax.lax.stop_gradient(state.scales)
        meta_loss, (new, metrics) = truncated_unroll(meta_params, config, rescale_task(task, scales), state.inner, spec,
                                                     total_steps=total_steps)
        return meta_loss, (AugmentedState(new, scales), metrics)
    state = jax.lax.stop_gradient(state)
    graph = task.graph()
    tx = mapa(meta_params, config, graph=graph, total_steps=total_steps)
    # The architecture conditioning is recomputed from the current meta-params
    # (the carried state holds the one from when the trajectory started), so
    # that the GNN and FiLM receive meta-gradients on every truncation.
    opt_state = state.opt_state._replace(film=conditioning(meta_params, config, graph, state.params))

    def step(carry, _):
        params, opt_state, key = carry
        key, k_batch = jax.random.split(key)
        loss, grads = jax.value_and_grad(task.loss)(params, task.sample(k_batch))
        if not second_order:
            grads = jax.lax.stop_gradient(grads)
            value = jax.lax.stop_gradient(loss)
        else:
            value = loss
        updates, opt_state = tx.update(grads, opt_state, params, value=value)
        params = optax.apply_updates(params, updates)
        return (params, opt_state, key), loss

    carry = (state.params, opt_state, jax.random.wrap_key_data(state.key))
    if checkpoint is None:
        carry, losses = jax.lax.scan(step, carry, None, length=horizon)
    else:
        policy = CHECKPOINT_POLICIES[checkpoint]
        n_chunks, chunk = _chunks(horizon)
        inner = jax.checkpoint(step, policy=policy)

        def chunk_fn(carry, _):
            return jax.lax.scan(inner, carry, None, length=chunk)

        carry, losses = jax.lax.scan(jax.checkpoint(chunk_fn, policy=policy), carry, None, length=n_chunks)
        losses = losses.reshape(-1)
    params, opt_state, key = carry
    key, k_eval = jax.random.split(key)
    eval_batch = task.sample(k_eval)
    final = task.loss(params, eval_batch)
    if objective == "final":
        meta_loss = final / state.loss0
    elif objective in REGULARIZED_OBJECTIVES:
        score = regularized_loss(lambda p: task.loss(p, eval_batch), params, objective, spec.rho,
                                 spec.regularizer_weight)
        meta_loss = score / state.loss0
    elif objective == "validation":
        meta_loss = task.evaluate(params, "validation")["loss"] / state.loss0
    else:
        meta_loss = jnp.mean(jnp.concatenate([losses[1:], final[None]])) / state.loss0
    new_state = jax.lax.stop_gradient(
        InnerState(params, opt_state, state.step + horizon, jax.random.key_data(key), state.loss0)
    )
    return meta_loss, (new_state, {"loss": jax.lax.stop_gradient(final)})
