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


def flat(tree):
    """All leaves of ``tree`` as one flat numpy array (for bit-exact comparisons)."""
    import numpy as np

    return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(tree)])


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One full smoke-preset run (about a minute), shared by the meta-training
    and CLI tests that inspect its outputs: (result, checkpoint dir, seconds)."""
    import time

    import mapa_jax as mj

    d = tmp_path_factory.mktemp("smoke")
    t0 = time.perf_counter()
    # One device, like the CLI subprocesses of the kill-and-resume test.
    result = mj.meta_train("smoke", checkpoint_dir=str(d), seed=0, progress=False, devices=1)
    return result, str(d), time.perf_counter() - t0


# The comparison of the evaluation tests: the 20-parameter quadratic, T = 20,
# two seeds, tiny grids (lr 0.1 drives the quadratic far lower in 20 steps
# than lr 1e-4, which barely moves it).
EVAL_T = 20
EVAL_SEEDS = (0, 1)
EVAL_GRID = {"prox_adam": {"learning_rate": (1e-2,), "l1": (1e-4,)},
             "pgd": {"learning_rate": (1e-4, 1e-1), "l1": (1e-5,)}}


@pytest.fixture(scope="session")
def eval_result():
    """``compare`` of the smoke learner at meta-params other than its random
    initialization (a stand-in for a trained one) on the tiny task:
    (result, task, meta_params, config)."""
    import mapa_jax as mj
    from mapa_jax import evaluation, tasks
    from mapa_jax.meta.config import PRESETS

    config = PRESETS["smoke"].meta_learner
    task = tasks.get_task(tasks.TINY_TASK)
    meta = mj.init_meta_params(jax.random.key(7), config)
    return evaluation.compare(meta, config, [task], list(EVAL_SEEDS), EVAL_T, grid=EVAL_GRID), task, meta, config
