"""The nouns of meta-training: a Task (model, data, loss, metric) and a TaskFamily.

A :class:`Task` is a bundle of pure, jittable functions with fixed shapes:

* ``init(key) -> params``: initial parameters (a new draw per key);
* ``sample(key) -> batch``: a training minibatch, drawn from data that sits on
  the device (closed-over arrays), so that minibatches are drawn inside a
  ``lax.scan`` without a round trip to the host;
* ``loss(params, batch) -> scalar``: the training loss (the inner objective);
* ``evaluate(params, split) -> dict``: metrics on ``"train"``, ``"validation"``
  or ``"test"`` (always ``"loss"``; plus ``"accuracy"`` for classification or
  ``"r2"`` for regression; ``"suboptimality"`` for synthetic problems with a
  known optimum);
* ``graph()``: the architecture graph, traced from the model.

Every draw of ``init``/``sample`` with different keys has the same shapes, so a
meta-batch of draws of one task can be vmapped or sharded over devices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jraph

Array = jax.Array
Params = Any
Batch = Any

__all__ = ["Task", "TaskFamily", "SPLITS"]

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Task:
    """One optimization problem: a model (or objective) and its data.

    Attributes:
      name: unique, e.g. ``"digits/mlp_relu_2x64"``.
      kind: ``"classification"``, ``"regression"`` or ``"synthetic"``.
      init: ``key -> params``.
      sample: ``key -> batch`` (training minibatch).
      loss: ``(params, batch) -> scalar`` training loss.
      evaluate: ``(params, split) -> {"loss": ..., ...}`` (split one of SPLITS).
      graph: ``() -> jraph.GraphsTuple``, the architecture graph.
      num_params: number of parameters (for the curriculum).
      info: free-form description (dataset, architecture, sizes).
    """

    name: str
    kind: str
    init: Callable[[Array], Params]
    sample: Callable[[Array], Batch]
    loss: Callable[[Params, Batch], Array]
    evaluate: Callable[[Params, str], Mapping[str, Array]]
    graph: Callable[[], jraph.GraphsTuple]
    num_params: int
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __hash__(self) -> int:  # identity: tasks close over arrays
        return id(self)


@dataclasses.dataclass(frozen=True)
class TaskFamily:
    """A named, ordered collection of tasks; ``sample`` draws one."""

    name: str
    tasks: Sequence[Task]

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError(f"TaskFamily {self.name!r} has no tasks.")

    def sample(self, key: Array) -> Task:
        """A task drawn uniformly (host-side: tasks differ in shapes)."""
        i = int(jax.random.randint(key, (), 0, len(self.tasks)))
        return self.tasks[i]

    def by_name(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"no task {name!r} in family {self.name!r}; known: {[t.name for t in self.tasks]}")
