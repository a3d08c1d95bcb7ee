"""Task registry: tasks by name, and the named task families.

Tasks are built lazily on first use and cached for the life of the process
(each dataset is loaded once, shared by every task on it).

Families
    ``"meta_train"``: the 15 meta-train zoo architectures on their datasets;
    ``"meta_test"``: the 5 held-out architectures (see `mapa_jax.tasks.zoo`);
    ``"synthetic"``: the M-L2O problems and sparse logistic regression (see
    `mapa_jax.tasks.synthetic`; not the tiny test quadratic);
    ``"sequence"``: two small causal transformers on synthetic languages (see
    `mapa_jax.tasks.sequence`), held out: in no meta-training family;
    ``"sequence_train"``: two other transformers for meta-training (a
    different Markov language, vocabulary and depth; the sort task, where the
    held-out one is the copy task);
    ``"meta_train_wide"``: ``meta_train`` and ``sequence_train``;
    ``"rl"``: policy-gradient (REINFORCE) tasks on gymnax classic control,
    ``kind="reinforcement"``, a held-out kind for evaluation only: in no
    meta-training family or preset (see `mapa_jax.tasks.rl`; needs gymnax,
    the ``train`` extra);
    ``"smoke"``: three tiny tasks (``synthetic/quadratic_tiny``,
    ``breast_cancer/mlp_tanh_1x16``, ``diabetes/mlp_leaky_relu_4x16``) for
    smoke runs of meta-training.
"""

from __future__ import annotations

import functools
from typing import Callable

from mapa_jax.tasks import rl, sequence, synthetic, zoo
from mapa_jax.tasks.base import Task, TaskFamily
from mapa_jax.tasks.datasets import load_dataset
from mapa_jax.tasks.supervised import supervised_task

__all__ = [
    "BATCH_SIZES", "TINY_TASK", "get_task", "task_names", "family", "family_from_spec", "family_names",
    "meta_train_tasks", "meta_test_tasks", "synthetic_tasks", "smoke_tasks",
]

#: Training minibatch size per dataset.
BATCH_SIZES: dict[str, int] = {"digits": 64, "mnist1d": 64, "breast_cancer": 32,
                               "boston": 32, "diabetes": 32}

#: The tiny, fast task for unit tests of the meta-training engine (20 params).
TINY_TASK = "synthetic/quadratic_tiny"


def _zoo_builder(arch: zoo.Architecture) -> Callable[[], Task]:
    def build() -> Task:
        data = load_dataset(arch.dataset)
        info = {"architecture": arch.name, "architecture_family": arch.family,
                "activation": arch.activation, "blocks": tuple(sorted(arch.blocks)),
                "param_layers": arch.param_layers, "split": arch.split,
                "novelty": arch.novelty}
        return supervised_task(arch.task_name, arch.build(data.num_outputs), data,
                               BATCH_SIZES[arch.dataset], info)

    return build


_SYNTHETIC: dict[str, Callable[[], Task]] = {
    "synthetic/lasso": lambda: synthetic.lasso("synthetic/lasso"),
    "synthetic/lasso_gaussian": lambda: synthetic.lasso("synthetic/lasso_gaussian",
                                                        distribution="gaussian"),
    "synthetic/quadratic": lambda: synthetic.quadratic("synthetic/quadratic"),
    "synthetic/rosenbrock": lambda: synthetic.rosenbrock("synthetic/rosenbrock"),
    "synthetic/sparse_logreg": lambda: synthetic.sparse_logreg("synthetic/sparse_logreg"),
}

# Small causal transformers on the synthetic languages of `mapa_jax.tasks.sequence`.
_SEQUENCE: dict[str, Callable[[], Task]] = {
    "markov/transformer_d16_l1": lambda: sequence.sequence_task(
        "markov/transformer_d16_l1", sequence.CausalTransformer(16, 31, width=16, layers=1),
        sequence.markov_language(vocab=16, length=32)),
    "copy/transformer_d32_l2": lambda: sequence.sequence_task(
        "copy/transformer_d32_l2", sequence.CausalTransformer(24, 24, width=32, layers=2, heads=4),
        sequence.copy_language(vocab=24, prefix=12)),
}

# Transformers for meta-training: other languages, sizes and depths than the held-out ones above.
_SEQUENCE_TRAIN: dict[str, Callable[[], Task]] = {
    "markov_v32/transformer_d24_l2": lambda: sequence.sequence_task(
        "markov_v32/transformer_d24_l2", sequence.CausalTransformer(32, 23, width=24, layers=2, heads=2),
        sequence.markov_language(vocab=32, length=24, successors=4, seed=7)),
    "sort/transformer_d16_l1": lambda: sequence.sequence_task(
        "sort/transformer_d16_l1", sequence.CausalTransformer(12, 16, width=16, layers=1, heads=2),
        sequence.sort_language(vocab=12, prefix=8, seed=3)),
}

# REINFORCE on gymnax classic control (`mapa_jax.tasks.rl`): held out, never meta-trained on.
_RL: dict[str, Callable[[], Task]] = {
    "cartpole/policy_mlp_tanh_2x32": lambda: rl.policy_gradient_task(
        "cartpole/policy_mlp_tanh_2x32", "CartPole-v1", reward="balance", length=200, num_episodes=16),
    "acrobot/policy_mlp_tanh_2x32": lambda: rl.policy_gradient_task(
        "acrobot/policy_mlp_tanh_2x32", "Acrobot-v1", reward="height", length=200, num_episodes=16),
}

_BUILDERS: dict[str, Callable[[], Task]] = {
    **{a.task_name: _zoo_builder(a) for a in zoo.ZOO},
    **_SYNTHETIC,
    **_SEQUENCE,
    **_SEQUENCE_TRAIN,
    **_RL,
    TINY_TASK: lambda: synthetic.quadratic_tiny(TINY_TASK),
}

_FAMILIES: dict[str, tuple[str, ...]] = {
    "meta_train": tuple(a.task_name for a in zoo.META_TRAIN),
    "meta_test": tuple(a.task_name for a in zoo.META_TEST),
    "synthetic": tuple(_SYNTHETIC),
    "smoke": (TINY_TASK, "breast_cancer/mlp_tanh_1x16", "diabetes/mlp_leaky_relu_4x16"),
    "sequence": tuple(_SEQUENCE),
    "sequence_train": tuple(_SEQUENCE_TRAIN),
    "meta_train_wide": tuple(a.task_name for a in zoo.META_TRAIN) + tuple(_SEQUENCE_TRAIN),
    "rl": tuple(_RL),
}


def task_names() -> list[str]:
    """Names of every registered task (zoo, synthetic, sequence and RL tasks, the tiny task)."""
    return list(_BUILDERS)


def family_names() -> list[str]:
    """Names accepted by :func:`family`."""
    return list(_FAMILIES)


@functools.lru_cache(maxsize=None)
def get_task(name: str) -> Task:
    """The task named ``name``, built on first use and cached.

    Raises:
      KeyError: for an unknown name (the message lists the known names).
    """
    if name not in _BUILDERS:
        raise KeyError(f"unknown task {name!r}; known tasks: {task_names()}.")
    return _BUILDERS[name]()


def family(name: str) -> TaskFamily:
    """The task family named ``name`` (see :func:`family_names`).

    Raises:
      KeyError: for an unknown name (the message lists the known families).
    """
    if name not in _FAMILIES:
        raise KeyError(f"unknown task family {name!r}; known families: {family_names()}.")
    return TaskFamily(name, _FAMILIES[name], get_task)


def family_from_spec(spec: str) -> TaskFamily:
    """A family by name (``"meta_train"``, ...), or an ad-hoc family of comma-separated task names.

    Raises:
      ValueError: for a spec with no names; KeyError: for an unknown task name.
    """
    if spec in _FAMILIES:
        return family(spec)
    names = tuple(dict.fromkeys(s.strip() for s in spec.split(",") if s.strip()))
    if not names:
        raise ValueError(f"no tasks in {spec!r}; give a family ({family_names()}) or task names.")
    for n in names:
        get_task(n)  # an unknown name fails here, listing the known ones
    return TaskFamily(spec, names, get_task)


def meta_train_tasks() -> TaskFamily:
    """The 15 meta-train architectures, each on its dataset."""
    return family("meta_train")


def meta_test_tasks() -> TaskFamily:
    """The 5 held-out meta-test architectures, each on its dataset."""
    return family("meta_test")


def synthetic_tasks() -> TaskFamily:
    """LASSO (two distributions), Quadratic, Rosenbrock and sparse logistic regression."""
    return family("synthetic")


def smoke_tasks() -> TaskFamily:
    """Three tiny tasks for smoke runs of meta-training."""
    return family("smoke")
