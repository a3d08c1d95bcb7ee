"""The registry of baselines that :func:`~mapa_jax.evaluation.compare` runs against MAPA.

A baseline is an *entry*: a name, a factory ``(task, hparams) -> optax
transform`` and a grid of hyperparameters. Every point of the grid is run on
every seed; the point with the lowest mean validation loss is chosen per task
and its test numbers are reported. So a grid-tuned proximal optimizer and a
zero-config one differ only in their grids::

    register_baseline(Baseline("adam", lambda task, hp: optax.adam(1e-3), {}, "Adam, lr 1e-3"))

(an empty grid is the one point ``{}``: run once, nothing to choose). The
factory gets the point's values as traced float32 scalars, so one compiled
program serves the whole grid; it must be the same object across calls (a
registered entry keeps it), since the compiled programs are cached on it.

``"mapa_random_init"`` (MAPA at its random initialization) is not an entry: it
is MAPA itself, at other meta-params, and :func:`mapa_jax.evaluation.compare` runs it as it runs
MAPA.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import optax

from mapa_jax.tasks.base import Task
from mapa_jax.transforms import prox_adam, prox_rmsprop, proximal_gradient

__all__ = ["Baseline", "BASELINES", "DEFAULT_BASELINES", "ZERO_CONFIG_BASELINES", "MAPA_RANDOM_INIT", "TRANSFER_REFERENCE",
           "register_baseline", "get_baseline", "baseline_names"]


@dataclasses.dataclass(frozen=True)
class Baseline:
    """An optimizer and the grid it is tuned over.

    Attributes:
      name: the method's name in results and reports.
      make: ``(task, hparams) -> optax transform``; ``hparams`` is one point
        of ``grid`` (``{name: value}``, values traced).
      grid: ``{name: values}``; every combination is run, and the one with the
        lowest validation loss (mean over seeds) is reported on the test split.
        A single combination means "untuned"; an empty grid, "zero-config".
      description: one line for reports.
      eval_params: ``(opt_state, params) -> params``, the point at which the
        run is measured (schedule-free methods: their averaged iterate);
        None: the params themselves.
    """

    name: str
    make: Callable[[Task, Mapping[str, Any]], optax.GradientTransformation]
    grid: Mapping[str, Sequence[float]]
    description: str = ""
    eval_params: Optional[Callable[[Any, Any], Any]] = None


#: The registry: name -> entry. Add to it with :func:`register_baseline`.
BASELINES: dict[str, Baseline] = {}

#: MAPA at its random initialization: a method of :func:`mapa_jax.evaluation.compare`, not a registry entry.
MAPA_RANDOM_INIT = "mapa_random_init"


def baseline_names() -> list[str]:
    """The registered baselines' names, in registration order."""
    return list(BASELINES)


def get_baseline(name: str) -> Baseline:
    """The registered baseline ``name``; a ValueError naming the known ones otherwise."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known baselines: {baseline_names()}.")
    return BASELINES[name]


def register_baseline(baseline: Baseline, *, replace: bool = False) -> Baseline:
    """Adds ``baseline`` to :data:`BASELINES` under its name and returns it.

    A name already registered (or ``"mapa"`` / ``"mapa_random_init"``) is an
    error unless ``replace`` (then the entry is replaced).
    """
    if baseline.name in ("mapa", MAPA_RANDOM_INIT):
        raise ValueError(f"register_baseline: {baseline.name!r} is a MAPA method of compare, not a baseline name.")
    if baseline.name in BASELINES and not replace:
        raise ValueError(f"register_baseline: {baseline.name!r} is already registered (pass replace=True).")
    BASELINES[baseline.name] = baseline
    return baseline


def _prox_adam(task: Task, hparams: Mapping[str, Any]) -> optax.GradientTransformation:
    del task
    return prox_adam(hparams["learning_rate"], l1=hparams["l1"])


def _pgd(task: Task, hparams: Mapping[str, Any]) -> optax.GradientTransformation:
    del task
    return proximal_gradient(hparams["learning_rate"], l1=hparams["l1"])


def _prox_rmsprop(task: Task, hparams: Mapping[str, Any]) -> optax.GradientTransformation:
    del task
    return prox_rmsprop(hparams["learning_rate"], l1=hparams["l1"])


# The fixed-hyperparameter baselines of the paper's Section V.
# PGD: the paper's reg grid {1e-3, 1e-4, 1e-5}; its lr grid {1e-2, 1e-3, 1e-4}
# is moved up a decade to {1e-1, 1e-2, 1e-3}, since plain gradient steps of
# 1e-4 barely move these small networks in a few hundred steps while 1e-1
# is often best. Proximal Adam: lr {1e-2, 3e-3, 1e-3} x l1 {1e-4, 1e-5} (the
# PGD reg values; the paper gives no grid for it). Proximal RMSProp: the
# paper's "default hyperparameters", lr 1e-3, l1 1e-5, untuned. The prox
# applies to weight tensors (ndim >= 2), as MAPA's does.
register_baseline(Baseline("prox_adam", _prox_adam, {"learning_rate": (1e-2, 3e-3, 1e-3), "l1": (1e-4, 1e-5)},
                           "Proximal Adam, grid-tuned per task on validation loss"))
register_baseline(Baseline("pgd", _pgd, {"learning_rate": (1e-1, 1e-2, 1e-3), "l1": (1e-3, 1e-4, 1e-5)},
                           "proximal gradient descent, grid-tuned per task on validation loss"))
register_baseline(Baseline("prox_rmsprop", _prox_rmsprop, {"learning_rate": (1e-3,), "l1": (1e-5,)},
                           "Proximal RMSProp, default hyperparameters (untuned)"))



def _adam(task: Task, hparams: Mapping[str, Any]) -> optax.GradientTransformation:
    del task, hparams
    return optax.adam(1e-3)


def _adamw(task: Task, hparams: Mapping[str, Any]) -> optax.GradientTransformation:
    del task
    return optax.adamw(hparams["learning_rate"])


def _prodigy(task: Task, hparams: Mapping[str, Any]) -> optax.GradientTransformation:
    del task, hparams
    return optax.contrib.prodigy()


def _schedule_free_adamw(task: Task, hparams: Mapping[str, Any]) -> optax.GradientTransformation:
    del task, hparams
    return optax.contrib.schedule_free_adamw()


def _dadapt_adamw(task: Task, hparams: Mapping[str, Any]) -> optax.GradientTransformation:
    del task, hparams
    return optax.contrib.dadapt_adamw()


# What a user would otherwise type: Adam at its usual learning rate, the
# tuning-free optimizers of optax.contrib at their defaults (schedule-free
# measured at its averaged point, as its authors evaluate it), and a small
# AdamW learning-rate sweep (optax's default weight decay 1e-4).
register_baseline(Baseline("adam", _adam, {}, "optax.adam(1e-3), zero-config"))
register_baseline(Baseline("prodigy", _prodigy, {}, "optax.contrib.prodigy(), zero-config"))
register_baseline(Baseline("schedule_free_adamw", _schedule_free_adamw, {},
                           "optax.contrib.schedule_free_adamw(), zero-config, at its averaged point",
                           eval_params=optax.contrib.schedule_free_eval_params))
register_baseline(Baseline("dadapt_adamw", _dadapt_adamw, {}, "optax.contrib.dadapt_adamw(), zero-config"))
register_baseline(Baseline("adamw", _adamw, {"learning_rate": (3e-4, 1e-3, 3e-3, 1e-2)},
                           "optax.adamw, learning rate grid-tuned per task on validation loss"))

#: The zero-config baselines (one point, nothing tuned).
ZERO_CONFIG_BASELINES = ("adam", "prodigy", "schedule_free_adamw", "dadapt_adamw")

#: What :func:`mapa_jax.evaluation.compare` runs besides ``"mapa"`` unless told otherwise.
DEFAULT_BASELINES = (MAPA_RANDOM_INIT, "prox_adam", "pgd", "prox_rmsprop", *ZERO_CONFIG_BASELINES, "adamw")

#: The baseline whose loss is the unit of :func:`performance` and :func:`transfer_score`.
TRANSFER_REFERENCE = "prox_adam"
