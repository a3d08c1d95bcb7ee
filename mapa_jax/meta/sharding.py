"""The meta-step on one device, and the same step sharded over a device mesh.

:func:`device_meta_step` is a plain function of the meta-params and a batch of
inner trajectories (leading axis: trajectories on this device) that takes an
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

from mapa_jax.config import MetaLearnerConfig
from mapa_jax.meta.unroll import InnerState, truncated_unroll
from mapa_jax.tasks.base import Task

__all__ = ["AXIS", "device_meta_step", "make_mesh", "sharded_meta_step"]

AXIS = "tasks"


def device_meta_step(
    meta_params: Any,
    inner: InnerState,
    *,
    config: MetaLearnerConfig,
    task: Task,
    horizon: int,
    objective: str = "final",
    checkpoint: Optional[str] = "nothing_saveable",
    second_order: bool = False,
    axis_name: Optional[str] = None,
) -> tuple[Any, Any, InnerState, dict]:
    """Meta-loss and meta-gradient, averaged over the trajectories in ``inner``.

    Returns ``(meta_loss, meta_grads, new_inner, metrics)``; with ``axis_name``
    the loss and gradients are averaged over that axis too (``lax.pmean``).
    """

    def one(state):
        (loss, (new, metrics)), grads = jax.value_and_grad(truncated_unroll, has_aux=True)(
            meta_params,
            config,
            task,
            state,
            horizon,
            objective=objective,
            checkpoint=checkpoint,
            second_order=second_order,
        )
        return loss, grads, new, metrics

    losses, grads, new, metrics = jax.vmap(one)(inner)
    loss = jnp.mean(losses)
    grads = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
    if axis_name is not None:
        loss = jax.lax.pmean(loss, axis_name)
        grads = jax.lax.pmean(grads, axis_name)
    return loss, grads, new, metrics


def make_mesh(num_devices: Optional[int] = None) -> jax.sharding.Mesh:
    """A 1-D mesh named :data:`AXIS` over the first ``num_devices`` devices (all by default)."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"make_mesh: asked for {n} devices, {len(devices)} available.")
    return jax.sharding.Mesh(np.asarray(devices[:n]), (AXIS,))


def sharded_meta_step(mesh: jax.sharding.Mesh, **static: Any) -> Callable:
    """``jit(shard_map(device_meta_step))`` over ``mesh``: trajectories are split across devices.

    The returned function takes ``(meta_params, inner)``; ``inner``'s leading
    axis (the meta-batch) must be divisible by the mesh size. Meta-params are
    replicated; the meta-loss and meta-gradient come back replicated (averaged
    with ``pmean``), the new inner states sharded like the input.
    """
    fn = jax.shard_map(
        lambda mp, inner: device_meta_step(mp, inner, axis_name=AXIS, **static),
        mesh=mesh,
        in_specs=(P(), P(AXIS)),
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
