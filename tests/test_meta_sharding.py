"""Tests for mapa_jax.meta.sharding: the meta-step of any estimator over devices (shard_map, pmap)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mapa_jax as mj
from mapa_jax.meta import sharding, unroll
from mapa_jax.meta.estimators import Estimate, TruncatedBackprop
from mapa_jax.meta.unroll import UnrollSpec
from test_meta_unroll import CFG, KEY, tiny_task


@pytest.fixture(scope="module")
def setup():
    task = tiny_task()
    meta = mj.init_meta_params(jax.random.key(0), CFG)
    return task, meta


def _batch(meta, task, n):
    keys = jax.random.split(jax.random.key(7), n)
    return jax.tree.map(np.asarray, jax.vmap(lambda k: unroll.init_inner_state(meta, CFG, task, k))(keys))


def test_eight_shards_equal_one_device(setup):
    task, meta = setup
    assert jax.device_count() >= 8, "tests/conftest.py asks for 8 CPU devices"
    inner = _batch(meta, task, 8)
    est = TruncatedBackprop(CFG, UnrollSpec(5))
    out = {}
    for n in (1, 8):
        mesh = sharding.make_mesh(n)
        loss, grads, new, _ = sharding.sharded_meta_step(mesh, est, task)(meta, sharding.to_global(mesh, inner), KEY)
        out[n] = (loss, grads, sharding.to_host(new))
    np.testing.assert_allclose(out[1][0], out[8][0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(out[1][1]), jax.tree.leaves(out[8][1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(np.max(np.abs(b))) + 1e-12)
    for a, b in zip(jax.tree.leaves(out[1][2]), jax.tree.leaves(out[8][2])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_device_meta_step_runs_under_pmap(setup):
    task, meta = setup
    inner = _batch(meta, task, 4)
    est = TruncatedBackprop(CFG, UnrollSpec(5))
    mesh = sharding.make_mesh(1)
    ref_loss, ref_grads, _, _ = sharding.sharded_meta_step(mesh, est, task)(meta, sharding.to_global(mesh, inner), KEY)
    per_device = jax.tree.map(lambda x: x.reshape((4, 1) + x.shape[1:]), inner)
    pmapped = jax.pmap(
        lambda mp, inn, k: sharding.device_meta_step(mp, inn, k, estimator=est, task=task, axis_name="i"),
        axis_name="i",
        in_axes=(None, 0, None),
        devices=jax.devices()[:4],
    )
    loss, grads, _, _ = pmapped(meta, per_device, KEY)
    np.testing.assert_allclose(loss[0], ref_loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(a[0], b, rtol=1e-5, atol=1e-6 * float(np.max(np.abs(b))) + 1e-12)




@dataclasses.dataclass(frozen=True)
class NoisyEstimator:
    """A stand-in estimator that uses its key: loss and gradient are draws from it."""

    config: mj.MetaLearnerConfig = CFG
    spec: UnrollSpec = UnrollSpec(1)

    def init(self, meta_params, task, key):
        return unroll.init_inner_state(meta_params, self.config, task, key)

    def estimate(self, meta_params, inner, task, key):
        u = jax.random.uniform(key)
        grad = jax.tree.map(lambda p: jnp.full(p.shape, u, p.dtype), meta_params)
        return Estimate(u, grad, inner._replace(step=inner.step + 1), {"u": u, "key": jax.random.key_data(key)})


def test_the_sharded_step_maps_any_estimator_with_a_key_per_trajectory(setup):
    task, meta = setup
    inner = _batch(meta, task, 8)
    mesh = sharding.make_mesh(4)
    loss, grads, new, aux = sharding.sharded_meta_step(mesh, NoisyEstimator(), task)(
        meta, sharding.to_global(mesh, inner), KEY)
    aux = sharding.to_host(aux)
    assert len({tuple(k) for k in aux["key"]}) == 8  # every trajectory on every device its own key
    np.testing.assert_allclose(loss, np.mean(aux["u"]), rtol=1e-6)
    for g in jax.tree.leaves(grads):  # the gradient averaged over all 8 (pmean across devices)
        np.testing.assert_allclose(np.asarray(g), np.mean(aux["u"]), rtol=1e-6)
    np.testing.assert_array_equal(sharding.to_host(new).step, inner.step + 1)
    other = sharding.sharded_meta_step(mesh, NoisyEstimator(), task)(
        meta, sharding.to_global(mesh, inner), np.asarray(jax.random.key_data(jax.random.key(4))))
    assert float(other[0]) != float(loss)  # a new key, new draws


def test_make_mesh_rejects_more_devices_than_there_are():
    with pytest.raises(ValueError, match="asked for 99 devices"):
        sharding.make_mesh(99)
