"""Task families for meta-training and evaluation: real datasets, a model zoo, synthetic problems.

A :class:`Task` is a model (or objective), its data, a loss and test metrics,
as pure jittable functions; a :class:`TaskFamily` is a named sampler of tasks
(``sample`` a name, ``build`` the task); :func:`task_group` names the dataset a
task is built on. Data sits on the device and minibatches are drawn inside the scan.

Registry::

    from mapa_jax import tasks
    task = tasks.get_task("digits/mlp_relu_1x32")      # built once, cached
    tasks.task_names()                                   # every registered name
    tasks.meta_train_tasks(); tasks.meta_test_tasks()    # 15 / 5 zoo architectures
    tasks.synthetic_tasks()                              # LASSO, Quadratic, Rosenbrock, sparse logreg
    tasks.family("meta_train")                           # by name: meta_train, meta_test, synthetic, smoke, sequence, rl
    tasks.family_from_spec("smoke") / ("a,b")            # a family, or an ad-hoc one of task names
    tasks.get_task(tasks.TINY_TASK)                      # 20-parameter quadratic for unit tests

Modules: `datasets` (digits, breast cancer, MNIST-1D, Boston, diabetes; fixed
60/20/20 splits, train-standardized), `models` (Flax building blocks), `zoo`
(the 20 architectures and their 15/5 split, documented in its docstring),
`supervised` (model + dataset -> Task), `synthetic` (M-L2O problems), `sequence`
(causal transformers on synthetic languages), `rl` (REINFORCE on gymnax classic
control, a held-out kind of task), `augment` (a task in a randomly
rescaled parameterization: ``rescale_task``, ``sample_scales``).
"""

from mapa_jax.tasks.augment import rescale_task, sample_scales
from mapa_jax.tasks.base import SPLITS, Task, TaskFamily, task_group
from mapa_jax.tasks.datasets import Dataset, dataset_names, load_dataset
from mapa_jax.tasks.registry import (
    BATCH_SIZES,
    TINY_TASK,
    family,
    family_from_spec,
    family_names,
    get_task,
    meta_test_tasks,
    meta_train_tasks,
    smoke_tasks,
    synthetic_tasks,
    task_names,
)
from mapa_jax.tasks.rl import policy_gradient_task
from mapa_jax.tasks.supervised import supervised_task
from mapa_jax.tasks.zoo import META_TEST, META_TRAIN, ZOO, Architecture, architecture_names, get_architecture

__all__ = [
    "SPLITS", "Task", "TaskFamily", "task_group", "Dataset", "dataset_names", "load_dataset",
    "BATCH_SIZES", "TINY_TASK", "family", "family_from_spec", "family_names", "get_task", "meta_test_tasks",
    "meta_train_tasks", "smoke_tasks", "synthetic_tasks", "task_names", "supervised_task",
    "META_TEST", "META_TRAIN", "ZOO", "Architecture", "architecture_names", "get_architecture",
    "rescale_task", "sample_scales",
    "policy_gradient_task",
]
