"""Evaluation of a meta-learner: MAPA against tuned baselines on held-out seeds, one concept per module.

* :mod:`~mapa_jax.evaluation.runner`: :func:`run_seeds`, the one runner
  (an optimizer on a task for T steps, a jitted ``vmap`` over seeds;
  :data:`EVAL_SEED_OFFSET`, :data:`SPARSITY_THRESHOLD`);
* :mod:`~mapa_jax.evaluation.baselines`: the registry of baselines
  (:class:`Baseline`: a factory and a grid; :func:`register_baseline`,
  :func:`get_baseline`; :data:`DEFAULT_BASELINES`, :data:`TRANSFER_REFERENCE`);
* :mod:`~mapa_jax.evaluation.protocol`: the paper's comparison protocol
  (:func:`compare`, :func:`select_best`) and :func:`report` over task families;
* :mod:`~mapa_jax.evaluation.stats`: numbers across tasks (:func:`mean_ranks`,
  :func:`wins`, :func:`paired`, :func:`performance`, :func:`transfer_score`);
* :mod:`~mapa_jax.evaluation.sharpness`: :func:`pga_sharpness`, the loss's
  largest increase within an L2 ball (:data:`RADII`), by projected gradient ascent;
* :mod:`~mapa_jax.evaluation.markdown`: markdown tables (:func:`markdown_report`)
  and plain JSON.

The command line (``mapa evaluate``, ``benchmarks/evaluate_meta.py``) is
:func:`mapa_jax.cli.evaluate`.
"""

from mapa_jax.evaluation.baselines import (
    BASELINES,
    DEFAULT_BASELINES,
    MAPA_RANDOM_INIT,
    TRANSFER_REFERENCE,
    ZERO_CONFIG_BASELINES,
    Baseline,
    baseline_names,
    get_baseline,
    register_baseline,
)
from mapa_jax.evaluation.protocol import (
    LONG_HORIZON_FACTOR,
    QUICK,
    MapaFactory,
    compare,
    default_steps,
    report,
    select_best,
)
from mapa_jax.evaluation.markdown import jsonable, markdown_report
from mapa_jax.evaluation.sharpness import RADII, pga_sharpness
from mapa_jax.evaluation.runner import EVAL_SEED_OFFSET, SPARSITY_THRESHOLD, run_seeds
from mapa_jax.evaluation.stats import (
    TRANSFER_DEFINITION,
    aggregate,
    mean_ranks,
    paired,
    performance,
    transfer_score,
    wins,
)

__all__ = [
    "EVAL_SEED_OFFSET", "SPARSITY_THRESHOLD", "run_seeds",
    "Baseline", "BASELINES", "DEFAULT_BASELINES", "ZERO_CONFIG_BASELINES", "MAPA_RANDOM_INIT", "TRANSFER_REFERENCE",
    "register_baseline", "get_baseline", "baseline_names",
    "MapaFactory", "compare", "select_best", "report", "QUICK", "LONG_HORIZON_FACTOR", "default_steps",
    "mean_ranks", "wins", "paired", "performance", "TRANSFER_DEFINITION", "transfer_score", "aggregate",
    "markdown_report", "jsonable", "RADII", "pga_sharpness",
]
