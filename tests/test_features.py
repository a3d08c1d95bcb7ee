"""Tests for the meta-learner's input features (mapa_jax/features.py): the loss
features without a value, and the sampled per-tensor statistics."""

import jax
import jax.numpy as jnp
import numpy as np

from mapa_jax import features


def test_without_value_the_loss_features_are_masked():
    n, k = 3, 4
    kw = dict(stats=jnp.ones((n, len(features.STATS))), sizes=jnp.full((n,), 10.0),
              history=jnp.zeros((k, n, features.HISTORY_SIZE)), loss_history=jnp.zeros(k),
              loss_first=jnp.float32(0), count=jnp.int32(3), prev_eta=jnp.full((n,), 1e-3),
              prev_lam=jnp.full((n,), 1e-3), prev_tau=jnp.full((n,), 1e-2),
              prox_mask=jnp.ones(n), eta_max=0.01, tau_max=0.1)
    f_none, _, lh = features.trajectory_features(loss=None, **kw)
    f_loss, _, lh2 = features.trajectory_features(loss=jnp.float32(5.0), **kw)
    cols = [features.FEATURE_NAMES.index(c) for c in ("has_loss", "loss_vs_window", "loss_slope", "loss_vs_first")]
    np.testing.assert_array_equal(f_none[:, cols], 0.0)
    assert np.all(f_loss[:, cols[0]] == 1.0)
    np.testing.assert_array_equal(lh, kw["loss_history"])  # not polluted
    assert float(lh2[-1]) == 5.0
    assert np.all(np.isfinite(f_none)) and f_none.shape == (n, features.NUM_FEATURES)


def test_sample_is_evenly_spaced_contiguous_blocks_and_exact_for_small_tensors():
    small = jnp.arange(100.0)
    np.testing.assert_array_equal(features.sample(small, 128), np.concatenate([np.arange(100.0), np.zeros(28)]))
    n, blocks = features.SAMPLE_SIZE, features.SAMPLE_BLOCKS
    big = jnp.arange(250 * 811, dtype=jnp.float32).reshape(250, 811)  # not a multiple of the block
    s = np.asarray(features.sample(big, n)).reshape(blocks, n // blocks)
    np.testing.assert_array_equal(np.diff(s, axis=1), 1.0)  # each block is contiguous
    starts = s[:, 0]
    assert starts[0] == 0 and len(set(np.diff(starts))) == 1  # evenly spaced
    assert starts[-1] + n // blocks > 0.9 * big.size  # spans the tensor
    # The statistics of a large tensor estimate the exact ones.
    g = jax.random.normal(jax.random.key(0), (300, 400)) * 0.5
    p = jax.random.normal(jax.random.key(1), (300, 400)) + 0.3 * g
    stats = features.tensor_statistics([g], [p], jnp.array([0.5]))[0]
    exact = [jnp.mean(jnp.abs(g)), jnp.mean(p * p), jnp.mean(g * p), jnp.mean(g * g), jnp.mean(jnp.abs(p) < 0.5)]
    np.testing.assert_allclose(stats, np.asarray(exact), rtol=0.05, atol=0.03)  # ~4 standard errors
