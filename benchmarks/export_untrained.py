"""Writes the untrained learners (heads at initialization) as pretrained files, for `mapa evaluate`.

The default preset's meta-learner with each scale-free parameterization,
meta-params drawn with ``jax.random.key(0)``, nothing trained:

* ``untrained_relative``: ``parameterization="relative"`` (Adam with a step of
  ``base_step`` = 1% of each tensor's RMS, times a learned factor);
* ``untrained_distance``: ``parameterization="distance"`` (Prodigy's distance
  estimate times a learned factor, and the Huber prox);
* ``untrained_distance_g100`` and ``untrained_distance_g250``: the same weights
  with ``distance_growth_steps`` 100 and 250 (``d`` held after that step: the
  same learner up to it).

    python benchmarks/export_untrained.py DIR
    mapa evaluate --pretrained untrained_distance --pretrained-dir DIR \\
        --families meta_test,sequence,rl --seeds 2 \\
        --baselines adam,prodigy,schedule_free_adamw,dadapt_adamw,adamw,prox_adam

The README's "Scale-free base steps" tables come from these two commands
(``--long-horizon`` for T = 1000).
"""

from __future__ import annotations

import dataclasses
import sys

import jax

import mapa_jax as mj
from mapa_jax import pretrained
from mapa_jax.meta.config import PRESETS

PARAMETERIZATIONS = ("relative", "distance")
GROWTH_STEPS = (100, 250)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    for name in PARAMETERIZATIONS:
        config = dataclasses.replace(PRESETS["default"].meta_learner, parameterization=name)
        meta_params = mj.init_meta_params(jax.random.key(0), config)
        info = {"note": f"untrained {name} learner: the default preset's meta-learner at initialization"}
        for path in pretrained.export(meta_params, config, info, f"untrained_{name}", argv[0]):
            print(path)
        for steps in GROWTH_STEPS if name == "distance" else ():
            held = dataclasses.replace(config, distance_growth_steps=steps)
            held_info = {"note": f"{info['note']}, d held after step {steps}"}
            for path in pretrained.export(meta_params, held, held_info, f"untrained_distance_g{steps}", argv[0]):
                print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
