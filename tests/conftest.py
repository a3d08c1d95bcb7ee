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
