"""Test-wide setup, before JAX's backend starts.

* 8 simulated CPU devices: single-device code runs on the first device as
  usual; the sharding tests use all eight. Subprocesses get the same setting
  through JAX_NUM_CPU_DEVICES, so that their numerics match this process.
* A persistent compilation cache shared by the test processes (and their
  subprocesses): meta-training tests compile the same programs many times.
"""

import os
import tempfile

import jax
import pytest

os.environ["JAX_NUM_CPU_DEVICES"] = "8"
jax.config.update("jax_num_cpu_devices", 8)

_CACHE = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "mapa_jax_test_jax_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def unroll_mapa(meta_params, config, params, loss_fn, steps):
    """``loss_fn`` after ``steps`` MAPA steps from ``params`` (a function of
    ``meta_params`` to differentiate: the meta-gradient tests' inner loop)."""
    import optax

    import mapa_jax as mj

    tx = mj.mapa(meta_params, config)
    p, s = params, tx.init(params)
    for _ in range(steps):
        loss, g = jax.value_and_grad(loss_fn)(p)
        u, s = tx.update(g, s, p, value=loss)
        p = optax.apply_updates(p, u)
    return loss_fn(p)


@pytest.fixture
def unrolled_loss():
    """:func:`unroll_mapa`, for tests that differentiate a short MAPA run."""
    return unroll_mapa
