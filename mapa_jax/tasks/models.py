"""Flax linen building blocks of the model zoo: MLPs, residual MLPs, CNNs, VGG stacks.

All models take a batch ``x`` of shape ``(batch, *input_shape)`` and return
``(batch, num_outputs)``. Layers are created in forward order, so module names
(``Dense_0``, ``Conv_1``, ...) follow the data flow. The activation is chosen by
name from :data:`ACTIVATIONS`.

Kernels are initialized with :func:`lecun_normal_flat`: Flax's default
(LeCun normal: truncated normal, variance 1/fan-in) drawn as one flat vector
and reshaped. Same distribution, but far cheaper to compile on CPU: XLA takes
seconds per multi-dimensional ``truncated_normal`` draw (about 17 s for five
3x3 conv kernels on a 2-core CPU with JAX 0.10's default partitionable
threefry, 1 s for the same draws flat), and a task's ``init`` is compiled in
every meta-training program that starts trajectories.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["ACTIVATIONS", "MLP", "ResMLP", "CNN", "VGG", "ResCNN", "Conv1DNet", "lecun_normal_flat",
           "Dense", "Conv"]

#: Activation functions by name (names match `mapa_jax.architecture.ACTIVATIONS`
#: except ``swish``, which the traced graph reports as ``silu``).
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "swish": nn.swish,
    "leaky_relu": nn.leaky_relu,
    "tanh": nn.tanh,
    "gelu": nn.gelu,
}


# Truncated-normal correction: std of a standard normal truncated to [-2, 2].
_TRUNC_STD = 0.87962566103423978


def lecun_normal_flat(key: jax.Array, shape: Sequence[int], dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """LeCun normal init (as ``flax.linen.initializers.lecun_normal()``), drawn flat.

    Variance ``1 / fan_in`` with ``fan_in = shape[-2] * prod(shape[:-2])`` (Dense
    ``(in, out)``, Conv ``(*kernel, in, out)``), from a normal truncated to two
    standard deviations; one 1-D draw reshaped to ``shape``.
    """
    shape = tuple(shape)
    fan_in = shape[-2] * math.prod(shape[:-2])
    std = math.sqrt(1.0 / fan_in) / _TRUNC_STD
    flat = jax.random.truncated_normal(key, -2.0, 2.0, (math.prod(shape),), dtype)
    return (flat * std).reshape(shape)


def Dense(features: int) -> nn.Dense:  # noqa: N802 (a module factory)
    """``nn.Dense`` with :func:`lecun_normal_flat` kernels."""
    return nn.Dense(features, kernel_init=lecun_normal_flat)


def Conv(features: int, kernel_size: Sequence[int], **kw) -> nn.Conv:  # noqa: N802
    """``nn.Conv`` with :func:`lecun_normal_flat` kernels."""
    return nn.Conv(features, tuple(kernel_size), kernel_init=lecun_normal_flat, **kw)


def _act(name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """Flatten, then ``Dense(w) -> [LayerNorm] -> act`` per width, then ``Dense(num_outputs)``."""

    widths: Sequence[int]
    num_outputs: int
    activation: str = "relu"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _act(self.activation)
        x = x.reshape((x.shape[0], -1))
        for w in self.widths:
            x = Dense(w)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = act(x)
        return Dense(self.num_outputs)(x)


class ResMLP(nn.Module):
    """``Dense(width) -> act``, ``blocks`` residual blocks
    ``x <- act(x + Dense(act(Dense(x))))``, then ``Dense(num_outputs)``."""

    width: int
    blocks: int
    num_outputs: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _act(self.activation)
        x = act(Dense(self.width)(x.reshape((x.shape[0], -1))))
        for _ in range(self.blocks):
            h = Dense(self.width)(act(Dense(self.width)(x)))
            x = act(x + h)
        return Dense(self.num_outputs)(x)


class CNN(nn.Module):
    """2-D convolutions ``Conv(c, 3x3, SAME) -> act`` per channel count, a 2x2
    average pool, flatten, ``Dense(num_outputs)``. Input ``(batch, H, W, C)``."""

    channels: Sequence[int]
    num_outputs: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _act(self.activation)
        for c in self.channels:
            x = act(Conv(c, (3, 3), padding="SAME")(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        return Dense(self.num_outputs)(x.reshape((x.shape[0], -1)))


class VGG(nn.Module):
    """VGG-style stages: per stage ``n`` times ``Conv(c, 3x3) -> act`` then a 2x2
    max pool; then ``Dense(hidden) -> act -> Dense(num_outputs)``.

    ``stages`` is a sequence of ``(channels, convs)``. Input ``(batch, H, W, C)``.
    """

    stages: Sequence[tuple[int, int]]
    num_outputs: int
    hidden: int = 32
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _act(self.activation)
        for channels, convs in self.stages:
            for _ in range(convs):
                x = act(Conv(channels, (3, 3), padding="SAME")(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = act(Dense(self.hidden)(x.reshape((x.shape[0], -1))))
        return Dense(self.num_outputs)(x)


class ResCNN(nn.Module):
    """A residual CNN: ``Conv(c) -> act`` stem, ``blocks`` residual blocks
    ``x <- act(x + Conv(act(Conv(x))))`` (3x3, SAME), global average pool,
    ``Dense(num_outputs)``. Input ``(batch, H, W, C)``."""

    channels: int
    blocks: int
    num_outputs: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _act(self.activation)
        x = act(Conv(self.channels, (3, 3), padding="SAME")(x))
        for _ in range(self.blocks):
            h = Conv(self.channels, (3, 3), padding="SAME")(x)
            h = Conv(self.channels, (3, 3), padding="SAME")(act(h))
            x = act(x + h)
        x = jnp.mean(x, axis=(1, 2))
        return Dense(self.num_outputs)(x)


class Conv1DNet(nn.Module):
    """1-D convolutions for sequences: ``Conv(c, kernel, stride 2, SAME) -> act``
    per channel count, flatten, ``Dense(num_outputs)``. Input ``(batch, length)``
    or ``(batch, length, channels)``."""

    channels: Sequence[int]
    num_outputs: int
    kernel: int = 5
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _act(self.activation)
        if x.ndim == 2:
            x = x[..., None]
        for c in self.channels:
            x = act(Conv(c, (self.kernel,), strides=(2,), padding="SAME")(x))
        return Dense(self.num_outputs)(x.reshape((x.shape[0], -1)))
