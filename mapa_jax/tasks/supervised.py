"""A supervised :class:`~mapa_jax.tasks.base.Task`: a Flax model on a real dataset.

The dataset's splits become float32 ``jnp`` arrays closed over by the task's
functions, so ``sample`` draws a minibatch on the device (``jax.random.randint``
indices into the train split, with replacement) inside a jitted scan, with no
host round trip per step.

* classification: ``loss`` is the mean softmax cross-entropy (optax) on integer
  labels; ``evaluate`` returns ``{"loss", "accuracy"}``;
* regression: ``loss`` is the mean squared error on standardized targets;
  ``evaluate`` returns ``{"loss", "r2"}`` with ``R^2 = 1 - SSE / SST`` on the
  split (SST around the split's own mean).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import optax

from mapa_jax.architecture import architecture_graph
from mapa_jax.tasks.base import SPLITS, Task
from mapa_jax.tasks.datasets import Dataset

__all__ = ["supervised_task", "count_params", "check_split"]

Array = jax.Array


def check_split(split: str) -> None:
    """Raise ValueError unless ``split`` is one of SPLITS."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}.")


def count_params(tree: Any) -> int:
    """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


def supervised_task(name: str, model: nn.Module, data: Dataset, batch_size: int,
                    info: Mapping[str, Any] | None = None) -> Task:
    """A :class:`Task` training ``model`` on ``data``'s train split.

    Args:
      name: the task's name (``"dataset/architecture"``).
      model: a linen module mapping ``(batch, *data.input_shape)`` to
        ``(batch, data.num_outputs)``.
      data: the dataset (splits, standardized).
      batch_size: training minibatch size for ``sample``.
      info: extra entries for ``Task.info``.

    ``init(key)`` returns the ``"params"`` collection (not the variables dict);
    ``graph()`` is ``architecture_graph(model.apply, {"params": params}, x[:1])``,
    traced once from abstract params and cached.
    """
    xs = {s: jnp.asarray(data.x[s], jnp.float32) for s in SPLITS}
    if data.kind == "classification":
        ys = {s: jnp.asarray(data.y[s], jnp.int32) for s in SPLITS}
    else:
        ys = {s: jnp.asarray(data.y[s], jnp.float32) for s in SPLITS}
    x_train, y_train = xs["train"], ys["train"]
    n_train = x_train.shape[0]
    example = jnp.zeros((1, *data.input_shape), jnp.float32)
    classification = data.kind == "classification"

    def init(key: Array) -> Any:
        return model.init(key, example)["params"]

    def sample(key: Array) -> tuple[Array, Array]:
        idx = jax.random.randint(key, (batch_size,), 0, n_train)
        return x_train[idx], y_train[idx]

    def _loss_and_out(params: Any, x: Array, y: Array) -> tuple[Array, Array]:
        out = model.apply({"params": params}, x)
        if classification:
            return optax.softmax_cross_entropy_with_integer_labels(out, y).mean(), out
        pred = out[:, 0]
        return jnp.mean((pred - y) ** 2), pred

    def loss(params: Any, batch: tuple[Array, Array]) -> Array:
        return _loss_and_out(params, *batch)[0]

    @functools.partial(jax.jit, static_argnames="split")
    def evaluate(params: Any, split: str) -> dict[str, Array]:
        check_split(split)
        x, y = xs[split], ys[split]
        value, out = _loss_and_out(params, x, y)
        if classification:
            return {"loss": value, "accuracy": jnp.mean(jnp.argmax(out, -1) == y)}
        sse = jnp.sum((out - y) ** 2)
        sst = jnp.sum((y - jnp.mean(y)) ** 2)
        return {"loss": value, "r2": 1.0 - sse / sst}

    abstract = jax.eval_shape(init, jax.random.key(0))

    @functools.cache
    def graph() -> jraph.GraphsTuple:
        return architecture_graph(model.apply, {"params": abstract}, example)

    metrics = ("loss", "accuracy") if classification else ("loss", "r2")
    full_info = {"group": data.name, "dataset": data.name, "batch_size": batch_size,
                 "train_size": int(n_train), "input_shape": data.input_shape,
                 "num_outputs": data.num_outputs, "metrics": metrics, "stochastic": True,
                 "model": model}
    full_info.update(info or {})
    return Task(name=name, kind=data.kind, init=init, sample=sample, loss=loss,
                evaluate=evaluate, graph=graph, num_params=count_params(abstract),
                info=full_info)
