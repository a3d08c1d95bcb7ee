"""The meta-step on one device, and the same step sharded over a device mesh.

:func:`device_meta_step` is a plain function of the meta-params, a batch of
inner trajectories (leading axis: trajectories on this device) and a key, for
any :class:`~mapa_jax.meta.estimators.GradientEstimator`; it takes an
``axis_name``: with one, it averages the meta-gradient over that mapped axis
with ``lax.pmean``, so it can be mapped with ``jax.shard_map`` (as
:func:`sharded_meta_step` does, over a 1-D mesh) or with ``jax.pmap``.
With several processes (``jax.distributed.initialize``) the mesh spans every
process's devices and the same code runs on each: JAX's multi-controller
runtime is the distributed engine.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from mapa_jax.meta.estimators import GradientEstimator
from mapa_jax.tasks.base import Task

Array = jax.Array

__all__ = ["AXIS", "device_meta_step", "make_mesh", "sharded_meta_step"]

AXIS = "tasks"


def device_meta_step(
    meta_params: Any,
    inner: Any,
    key: Array,
    *,
    estimator: GradientEstimator,
    task: Task,
    axis_name: Optional[str] = None,
) -> tuple[Any, Any, Any, dict]:
    """Meta-loss and meta-gradient of ``estimator``, averaged over the trajectories in ``inner``.

    ``inner`` has a leading axis (the trajectories on this device); ``key`` is
    raw key data (``jax.random.key_data``), the same on every device: each
    trajectory gets its own key from it, its index and (with ``axis_name``)
    the device's index. Returns ``(meta_loss, meta_grads, new_inner,
    metrics)``; with ``axis_name`` the loss and gradients are averaged over
    that axis too (``lax.pmean``).
    """
    key = jax.random.wrap_key_data(key)
    if axis_name is not None:
        key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    keys = jax.random.split(key, jax.tree.leaves(inner)[0].shape[0])
    out = jax.vmap(lambda state, k: estimator.estimate(meta_params, state, task, k))(inner, keys)
    loss = jnp.mean(out.meta_loss)
    grads = jax.tree.map(lambda g: jnp.mean(g, axis=0), out.meta_grad)
    if axis_name is not None:
        loss = jax.lax.pmean(loss, axis_name)
        grads = jax.lax.pmean(grads, axis_name)
    return loss, grads, out.inner, out.aux


def make_mesh(num_devices: Optional[int] = None) -> jax.sharding.Mesh:
    """A 1-D mesh named :data:`AXIS` over the first ``num_devices`` devices (all by default)."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"make_mesh: asked for {n} devices, {len(devices)} available.")
    return jax.sharding.Mesh(np.asarray(devices[:n]), (AXIS,))


def sharded_meta_step(mesh: jax.sharding.Mesh, estimator: GradientEstimator, task: Task) -> Callable:
    """``jit(shard_map(device_meta_step))`` over ``mesh``: trajectories are split across devices.

    The returned function takes ``(meta_params, inner, key)``; ``inner``'s
    leading axis (the meta-batch) must be divisible by the mesh size; ``key``
    is raw key data. Meta-params and key are replicated; the meta-loss and
    meta-gradient come back replicated (averaged with ``pmean``), the new inner
    states sharded like the input. Any :class:`GradientEstimator` works.
    """
    fn = jax.shard_map(
        lambda mp, inner, key: device_meta_step(mp, inner, key, estimator=estimator, task=task, axis_name=AXIS),
        mesh=mesh,
        in_specs=(P(), P(AXIS), P()),
        out_specs=(P(), P(), P(AXIS), P(AXIS)),
        check_vma=False,
    )
    return jax.jit(fn)


def to_global(mesh: jax.sharding.Mesh, tree: Any) -> Any:
    """Places a host batch (leading axis = meta-batch) sharded over the mesh.

    Every process holds the whole batch (the meta-training loop is
    deterministic, so all processes build the same one) and contributes the
    shards of its own devices; this works for one process and for several.
    """
    sharding = NamedSharding(mesh, P(AXIS))

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(put, tree)


def to_host(tree: Any) -> Any:
    """NumPy copies of (possibly multi-process) global arrays, whole on every process."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils

    return jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), tree)
