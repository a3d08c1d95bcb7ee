"""Test-wide setup: 8 simulated CPU devices (set before JAX's backend starts).

Single-device code runs on the first device as usual; the sharding tests use
all eight.
"""

import jax

jax.config.update("jax_num_cpu_devices", 8)
