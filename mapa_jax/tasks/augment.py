"""Task augmentation: the same problem in a randomly rescaled parameterization.

A learned optimizer that sees the raw magnitudes of weights and gradients can
learn to key on them: on the tasks it was meta-trained on, a tensor's weights
and gradients have typical scales, and the learner may use those scales as a
shortcut to tell tensors (and tasks) apart instead of learning an update rule
that works at any scale. Reparameterizing each tensor as ``theta = c * theta'``
with a random per-tensor factor ``c > 0`` removes the shortcut: the problem and
its optima are the same, but the learner optimizes ``theta'``, whose weights
are ``theta / c`` and whose gradients are ``c * g`` (chain rule on
``loss(c * theta')``), so absolute scales no longer identify anything. The idea
is VeLO's (Metz et al., 2022, "VeLO: Training Versatile Learned Optimizers by
Scaling Up", task augmentation by reparameterization); this is our own
implementation of it::

    scales = sample_scales(key, task.init(k0), log_range=1.0)  # c = exp(U(-1, 1)) per tensor
    rtask = rescale_task(task, scales)
    rtask.init(k) == task.init(k) / c;  rtask.loss(p, b) == task.loss(c * p, b)

Meta-training draws scales per trajectory with
``MetaTrainConfig(augment_log_range=...)`` (:mod:`mapa_jax.meta.unroll`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mapa_jax.tasks.base import Task

Array = jax.Array

__all__ = ["check_log_range", "rescale_task", "sample_scales"]


def check_log_range(log_range: Any, where: str = "sample_scales") -> float:
    """``log_range`` as a float, if it is a finite real number >= 0.

    Raises:
      ValueError: naming ``log_range`` (and ``where``) for a bool, a string,
        a non-finite or a negative value.
    """
    ok = isinstance(log_range, (int, float, np.integer, np.floating)) and not isinstance(log_range, (bool, np.bool_))
    if not (ok and math.isfinite(log_range) and log_range >= 0):
        raise ValueError(f"{where}: log_range must be a finite real number >= 0, got {log_range!r}.")
    return float(log_range)


def sample_scales(key: Array, params: Any, log_range: float) -> Any:
    """Per-tensor factors ``c = exp(u)``, ``u ~ Uniform(-log_range, log_range)``.

    Args:
      key: a PRNG key.
      params: a parameter tree (arrays or ``jax.ShapeDtypeStruct``s); only its
        structure is used.
      log_range: half-width of the range of ``log c`` (a finite number >= 0;
        0 gives all ones).

    Returns:
      A tree shaped like ``params`` with one float32 scalar per leaf.

    Raises:
      ValueError: ``log_range`` is negative or not a finite real number.
    """
    r = check_log_range(log_range)
    leaves, treedef = jax.tree.flatten(params)
    if not leaves:
        return params
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [jnp.exp(jax.random.uniform(k, (), jnp.float32, -r, r)) for k in keys])


def _check_scales(scales: Any, params: Any, task: Task) -> None:
    """A ValueError naming ``scales`` unless it has ``params``' structure, one scalar per leaf."""
    want, got = jax.tree.structure(params), jax.tree.structure(scales)
    if want != got:
        raise ValueError(
            f"rescale_task({task.name!r}): scales must have the tree structure of the task's params "
            f"(one scalar per tensor), got {got}, expected {want}."
        )
    for path, c in jax.tree_util.tree_leaves_with_path(scales):
        if jnp.shape(c) != ():
            raise ValueError(
                f"rescale_task({task.name!r}): scales{jax.tree_util.keystr(path)} must be a scalar "
                f"(one factor per tensor), got shape {jnp.shape(c)}."
            )


def rescale_task(task: Task, scales: Any) -> Task:
    """``task`` in the parameterization ``theta = c * theta'``, one factor ``c`` per tensor.

    The returned task optimizes ``theta'``: its ``init(key)`` is
    ``task.init(key) / c``, its ``loss(theta', batch)`` is
    ``task.loss(c * theta', batch)`` (so its gradient is ``c * g`` at the
    mapped point) and its ``evaluate(theta', split)`` is
    ``task.evaluate(c * theta', split)``. ``sample``, ``graph``, ``name``,
    ``kind`` and ``num_params`` are the task's; ``info`` gains
    ``"rescaled": True`` (its other entries, e.g. a synthetic task's
    ``optimum``, describe the original parameterization). See the module
    docstring for why.

    Args:
      task: the task to reparameterize.
      scales: a tree with the structure of ``task.init``'s params, one scalar
        (> 0) per leaf, e.g. from :func:`sample_scales`; it may be traced.

    Raises:
      ValueError: ``scales`` does not match the params' structure, or a leaf
        of it is not a scalar (the message names the leaf).
    """
    _check_scales(scales, jax.eval_shape(task.init, jax.random.key(0)), task)

    def mul(theta: Any) -> Any:
        return jax.tree.map(lambda c, p: p * jnp.asarray(c, p.dtype), scales, theta)

    def init(key: Array) -> Any:
        return jax.tree.map(lambda c, p: p / jnp.asarray(c, p.dtype), scales, task.init(key))

    def loss(theta: Any, batch: Any) -> Array:
        return task.loss(mul(theta), batch)

    def evaluate(theta: Any, split: str) -> Any:
        return task.evaluate(mul(theta), split)

    return dataclasses.replace(task, init=init, loss=loss, evaluate=evaluate, info={**task.info, "rescaled": True})
