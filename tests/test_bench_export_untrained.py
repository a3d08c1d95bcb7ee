"""benchmarks/export_untrained.py writes loadable untrained learners of both scale-free parameterizations."""

import dataclasses
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import mapa_jax as mj

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_export_untrained_writes_learners_that_load_and_start_at_the_base_step(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("export_untrained", ROOT / "benchmarks" / "export_untrained.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(tmp_path)]) == 0 and len(capsys.readouterr().out.split()) == 8
    assert mod.main([]) == 2
    params = {"w": jnp.full((4, 3), 0.5), "b": jnp.zeros(3)}
    for name in mod.PARAMETERIZATIONS:
        meta, config = mj.load_pretrained(f"untrained_{name}", directory=str(tmp_path))
        assert config.parameterization == name and config.direction == "adam"
        eta = float(mj.proximal_parameters(mj.mapa(meta, config).init(params))["eta"]["w"])
        # the heads' kernel starts near zero: the factor on the base step is near 1
        base = 1e-6 * np.sqrt(1 - config.b2) / (1 - config.b1) if name == "distance" else config.base_step * 0.5
        assert abs(eta / base - 1) < 0.1, (name, eta, base)
    for steps in mod.GROWTH_STEPS:
        held_meta, held = mj.load_pretrained(f"untrained_distance_g{steps}", directory=str(tmp_path))
        assert held == dataclasses.replace(config, distance_growth_steps=steps)
        jax.tree.map(np.testing.assert_array_equal, held_meta, meta)  # the same weights
