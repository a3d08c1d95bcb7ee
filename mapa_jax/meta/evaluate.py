"""Deprecated: the evaluation moved to :mod:`mapa_jax.evaluation` (this alias goes in the next release).

``from mapa_jax.meta import evaluate`` and ``mapa_jax.meta.evaluate.NAME``
keep working for the names that still exist (with a ``DeprecationWarning``
naming where they live now). Names that were removed fail with an
``AttributeError`` that names their replacement:

* ``run``, ``evaluate``, ``summarize``, ``mapa_factory`` (a second runner):
  :func:`mapa_jax.evaluation.run_seeds` with
  :class:`mapa_jax.evaluation.MapaFactory`, and :func:`mapa_jax.evaluation.compare`;
* ``add_arguments``, ``run_from_args``, ``main`` (the command line):
  :func:`mapa_jax.cli.add_evaluate_arguments` and :func:`mapa_jax.cli.evaluate`.
"""

from __future__ import annotations

import warnings
from typing import Any

from mapa_jax import evaluation as _evaluation

_MOVED = {name: f"mapa_jax.evaluation.{name}" for name in _evaluation.__all__}
_MOVED["_jsonable"] = "mapa_jax.evaluation.jsonable"
_REMOVED = {
    "run": "mapa_jax.evaluation.run_seeds (one runner for one or many seeds)",
    "evaluate": "mapa_jax.evaluation.run_seeds (one runner for one or many seeds)",
    "summarize": "mapa_jax.evaluation.compare (per-method summaries over seeds)",
    "mapa_factory": "mapa_jax.evaluation.MapaFactory(config), with the meta-params as run_seeds' hparams",
    "add_arguments": "mapa_jax.cli.add_evaluate_arguments",
    "run_from_args": "mapa_jax.cli.evaluate",
    "main": "mapa_jax.cli.evaluate (or `mapa evaluate`)",
}

warnings.warn("mapa_jax.meta.evaluate is deprecated; import mapa_jax.evaluation instead.",
              DeprecationWarning, stacklevel=2)


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(f"mapa_jax.meta.evaluate.{name} is deprecated; use {_MOVED[name]}.",
                      DeprecationWarning, stacklevel=2)
        target = _MOVED[name].rsplit(".", 1)[1]
        return getattr(_evaluation, target)
    if name in _REMOVED:
        raise AttributeError(f"mapa_jax.meta.evaluate.{name} was removed; use {_REMOVED[name]}.")
    raise AttributeError(f"module 'mapa_jax.meta.evaluate' has no attribute {name!r} "
                         "(the evaluation is mapa_jax.evaluation).")
