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

A :class:`TaskFamily` is a *sampler* of tasks, in two steps as in
learned_optimization: ``sample(key)`` draws a task configuration (here: a task
name), ``build(name)`` makes the :class:`Task`. Meta-training draws from a
family; evaluation iterates over its ``tasks``.

A task's *group* (:func:`task_group`, ``task.info["group"]``) is something
else: the dataset (or synthetic problem) it is built on. Meta-training keeps
one moving-average meta-loss per group.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import jax
import jraph

Array = jax.Array
Params = Any
Batch = Any

__all__ = ["Task", "TaskFamily", "SPLITS", "task_group"]

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Task:
    """One optimization problem: a model (or objective) and its data.

    Attributes:
      name: unique, e.g. ``"digits/mlp_relu_2x64"``.
      kind: ``"classification"``, ``"regression"``, ``"synthetic"`` or ``"sequence"``
        (next-token prediction; a batch is one ``(batch_size, length + 1)`` token array).
      init: ``key -> params``.
      sample: ``key -> batch`` (training minibatch).
      loss: ``(params, batch) -> scalar`` training loss.
      evaluate: ``(params, split) -> {"loss": ..., ...}`` (split one of SPLITS).
      graph: ``() -> jraph.GraphsTuple``, the architecture graph.
      num_params: number of parameters (for the curriculum).
      info: free-form description (``group``: the dataset or problem; architecture, sizes).
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
    """A named, ordered set of tasks to draw from: ``sample`` a name, ``build`` the task.

    Attributes:
      name: the family's name (``"meta_train"``, ...).
      task_names: the tasks, in the family's order (evaluation tables use it).
      builder: ``name -> Task`` (the registry's cached :func:`mapa_jax.tasks.get_task` by default).
    """

    name: str
    task_names: tuple[str, ...]
    builder: Callable[[str], Task] = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.task_names, str) or not self.task_names:
            raise ValueError(f"TaskFamily {self.name!r} needs a non-empty sequence of task names, "
                             f"got {self.task_names!r}.")
        object.__setattr__(self, "task_names", tuple(self.task_names))
        if len(set(self.task_names)) != len(self.task_names):
            raise ValueError(f"TaskFamily {self.name!r} names a task twice: {list(self.task_names)}.")
        if self.builder is None:
            from mapa_jax.tasks.registry import get_task

            object.__setattr__(self, "builder", get_task)

    def build(self, name: str) -> Task:
        """The task named ``name`` (a member of the family)."""
        if name not in self.task_names:
            raise KeyError(f"no task {name!r} in family {self.name!r}; known: {list(self.task_names)}")
        return self.builder(name)

    @property
    def tasks(self) -> tuple[Task, ...]:
        """Every task of the family, built, in the family's order."""
        return tuple(self.build(n) for n in self.task_names)

    def sample(self, key: Array, limit: Optional[int] = None) -> str:
        """A task name drawn uniformly from the first ``limit`` names (all by default).

        Host-side (tasks differ in shapes, so each is compiled on its own). With
        :meth:`by_size`, ``limit`` gives a curriculum from the smallest tasks.
        """
        n = len(self.task_names) if limit is None else limit
        if not 1 <= n <= len(self.task_names):
            raise ValueError(f"TaskFamily.sample: limit must be in [1, {len(self.task_names)}], got {limit}.")
        return self.task_names[int(jax.random.randint(key, (), 0, n))]

    def by_size(self) -> "TaskFamily":
        """The same family ordered by (number of parameters, name), smallest first."""
        tasks = sorted(self.tasks, key=lambda t: (t.num_params, t.name))
        return dataclasses.replace(self, task_names=tuple(t.name for t in tasks))


def task_group(task: Task) -> str:
    """The dataset (or synthetic problem) ``task`` is built on; its kind if it names none."""
    return str(task.info.get("group", task.kind))
