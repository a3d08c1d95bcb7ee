"""MAPA against tuned proximal baselines on held-out seeds (the paper's Section V protocol).

Per task of each family, from the same initializations and minibatches
(evaluation seeds offset by ``mapa_jax.evaluation.EVAL_SEED_OFFSET``, away
from meta-training's), for T inner steps:

* ``mapa``: the meta-learner under test;
* ``mapa_random_init``: the same configuration at its random initialization;
* ``prox_adam``: lr {1e-2, 3e-3, 1e-3} x l1 {1e-4, 1e-5}, tuned per task;
* ``pgd``: lr {1e-1, 1e-2, 1e-3} x l1 {1e-3, 1e-4, 1e-5}, tuned per task (the
  paper's reg grid; its lr grid {1e-2, 1e-3, 1e-4} moved up a decade, because
  these small tasks need larger plain-gradient steps);
* ``prox_rmsprop``: lr 1e-3, l1 1e-5, untuned ("default hyperparameters");
* what a user would otherwise type: ``adam`` (``optax.adam(1e-3)``) and the
  zero-config ``optax.contrib`` optimizers ``prodigy``, ``schedule_free_adamw``
  (measured at its averaged point, ``schedule_free_eval_params``) and
  ``dadapt_adamw``, at their defaults; ``adamw``: lr {3e-4, 1e-3, 3e-3, 1e-2},
  tuned per task.

Tuned baselines are chosen by validation loss (mean over seeds) and reported on
the test split. Reported per task and method: final test loss and accuracy /
R^2 (mean and std over seeds), steps to 95% of the final reduction of the
training loss, sparsity (fraction of weight entries with |w| < 1e-6), finite
runs; per family: mean rank, MAPA's wins against each method, MAPA's
performance against tuned Proximal Adam; and, with both meta_train and
meta_test, the architecture transfer score (definition in
``mapa_jax/evaluation/stats.py``).

Usage::

    python benchmarks/evaluate_meta.py [--checkpoint-dir DIR | --pretrained NAME]
        [--families meta_train,meta_test] [--seeds 3] [--first-seed 0] [--steps T] [--quick] [--json]

Default source: the shipped ``--pretrained default``. Default T: the default
meta-training preset's ``inner_steps``. ``--quick``: 1 seed, the two smallest
tasks per family, T = 50. Prints markdown tables and, on the last line of
stdout, one JSON object (``--json``: only the JSON). The same code runs as
``mapa evaluate``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from mapa_jax import cli


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="evaluate_meta",
                                     description="MAPA against tuned proximal baselines on held-out seeds")
    cli.add_evaluate_arguments(parser)
    return cli.evaluate(parser.parse_args(argv), prog="evaluate_meta")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
