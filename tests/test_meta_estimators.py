"""Tests for the evolution-strategy meta-gradient estimators (ES, PES) against exact meta-gradients."""

import dataclasses

import jax
import numpy as np
import pytest
from conftest import flat as _flat

import mapa_jax as mj
from mapa_jax import tasks
from mapa_jax.meta import unroll
from mapa_jax.meta.config import preset
from mapa_jax.meta.estimators import (
    ESTIMATORS,
    AdaptedBackprop,
    EvolutionStrategies,
    PersistentEvolutionStrategies,
    PESState,
    make_estimator,
)
from mapa_jax.meta.state import MetaTrainer

TINY_CFG = mj.MetaLearnerConfig(direction="adam", lstm_hidden=4, gnn_hidden=4, gnn_rounds=1, window=2)
H, PAIRS, SIGMA = 2, 1000, 1e-3
# Each check is a two-sided z-test of a mean over PAIRS independent estimates at |z| < 5: under the
# normal approximation a correct estimator fails one with probability 5.7e-7 (four checks: < 3e-6).
Z = 5.0


def _z(samples, exact):
    samples = np.asarray(samples, np.float64)
    return (samples.mean() - exact) / (samples.std(ddof=1) / np.sqrt(len(samples)))


def _projections(estimates, exact):
    """z-scores of the estimates projected on the exact gradient's direction and on a random one."""
    g = _flat(exact)
    rand = np.random.default_rng(0).standard_normal(g.size)
    out = []
    for u in (g / np.linalg.norm(g), rand / np.linalg.norm(rand)):
        proj = np.concatenate([np.asarray(x).reshape(PAIRS, -1) for x in jax.tree.leaves(estimates)], 1) @ u
        out.append((_z(proj, float(g @ u)), proj.mean(), float(g @ u)))
    return out


def test_pes_is_unbiased_for_the_exact_meta_gradient_through_both_truncations_and_es_for_one():
    with jax.enable_x64(True):
        task = tasks.get_task(tasks.TINY_TASK)  # deterministic: the minibatch keys do not matter
        meta = mj.init_meta_params(jax.random.key(0), TINY_CFG)
        spec = unroll.UnrollSpec(horizon=H, objective="final", checkpoint=None)
        exact_spec = dataclasses.replace(spec, second_order=True)  # through the inner gradients too
        state0 = unroll.init_inner_state(meta, TINY_CFG, task, jax.random.key(1))

        def exact(state, horizon):
            s = dataclasses.replace(exact_spec, horizon=horizon)
            return jax.grad(lambda m: unroll.truncated_unroll(m, TINY_CFG, task, state, s)[0])(meta)

        # PES: the second truncation's estimate, for the loss after 2H steps of the meta-params.
        pes = PersistentEvolutionStrategies(TINY_CFG, spec, sigma=SIGMA)
        keys = jax.random.split(jax.random.key(2), (PAIRS, 2))

        @jax.jit
        def pes_second(keys):
            def one(k):
                st = pes.init(meta, task, jax.random.key(1))
                first = pes.estimate(meta, st, task, k[0])
                return pes.estimate(meta, first.inner, task, k[1]).meta_grad
            return jax.vmap(one)(keys)

        for z, got, want in _projections(pes_second(keys), exact(state0, 2 * H)):
            assert abs(z) < Z, (z, got, want)

        # ES: one truncation from a given state, against the exact gradient of that truncation.
        es = EvolutionStrategies(TINY_CFG, spec, sigma=SIGMA)
        es_grads = jax.jit(jax.vmap(lambda k: es.estimate(meta, state0, task, k).meta_grad))(keys[:, 0])
        for z, got, want in _projections(es_grads, exact(state0, H)):
            assert abs(z) < Z, (z, got, want)


def test_pes_meta_training_resumes_bit_exactly_with_its_persistent_pairs(tmp_path):
    from mapa_jax.meta import checkpoint as ckpt

    assert {"tbptt", "es", "pes"} <= set(ESTIMATORS)
    cfg = preset("smoke", tasks=tasks.TINY_TASK, estimator="pes", meta_steps=4, replay_size=2,
                 checkpoint_every=1, checkpoint_policy=None)
    d = str(tmp_path / "run")
    a = mj.meta_train(cfg, checkpoint_dir=d, seed=0, progress=False, devices=1)
    assert all(np.isfinite(r["meta_loss"]) for r in a.metrics) and max(r["inner_step"] for r in a.metrics) > cfg.horizon
    trainer = MetaTrainer(cfg, devices=1)
    st, _ = ckpt.restore_state(
        d, lambda m: trainer.abstract_state(tuple(m["buffer_tasks"]), tuple(m["baselines"])), step=2)
    assert st.buffer and all(isinstance(b, PESState) for b in st.buffer)
    while st.step < cfg.meta_steps:
        st, _ = trainer.meta_update(st)
    np.testing.assert_array_equal(_flat(st.meta_params), _flat(a.meta_params))


def test_bad_es_settings_and_states_are_clear_errors():
    spec = unroll.UnrollSpec(horizon=2)
    for cls in (EvolutionStrategies, PersistentEvolutionStrategies):
        for bad in (0.0, -1.0, float("nan"), "0.1"):
            with pytest.raises(ValueError, match=r"sigma must be a finite number > 0"):
                cls(TINY_CFG, spec, sigma=bad)
        with pytest.raises(TypeError, match="config must be a MetaLearnerConfig"):
            cls("config", spec)
    with pytest.raises(ValueError, match=r"unknown meta-gradient estimator 'pess'; known: \['es', 'm-l2o', 'pes', 'tbptt'\]"):
        make_estimator("pess", TINY_CFG, spec)
    task = tasks.get_task(tasks.TINY_TASK)
    meta = mj.init_meta_params(jax.random.key(0), TINY_CFG)
    plain = unroll.init_inner_state(meta, TINY_CFG, task, jax.random.key(1))
    with pytest.raises(TypeError, match="the trajectory must be the PESState its init returned"):
        PersistentEvolutionStrategies(TINY_CFG, spec).estimate(meta, plain, task, jax.random.key(2))



# ------------------------------------------------- M-L2O: the meta-gradient after adaptation


def _tiny_truncation():
    task = tasks.get_task(tasks.TINY_TASK)
    meta = mj.init_meta_params(jax.random.key(0), TINY_CFG)
    state = unroll.init_inner_state(meta, TINY_CFG, task, jax.random.key(1))
    return task, meta, state, unroll.UnrollSpec(horizon=H, objective="final", checkpoint=None)


def test_m_l2o_first_order_is_the_truncation_gradient_at_the_adapted_meta_params():
    task, meta, state, spec = _tiny_truncation()
    key = jax.random.key(5)
    tbptt = make_estimator("tbptt", TINY_CFG, spec)
    zero = make_estimator("m-l2o", TINY_CFG, spec, adapt_steps=0).estimate(meta, state, task, key)
    ref = tbptt.estimate(meta, state, task, key)
    np.testing.assert_allclose(_flat(zero.meta_grad), _flat(ref.meta_grad), rtol=1e-6, atol=1e-9)
    # One first-order step: theta_1 = theta - lr g(theta), then the plain truncation gradient at theta_1.
    lr = 0.5
    one = make_estimator("m-l2o", TINY_CFG, spec, adapt_steps=1, adapt_lr=lr).estimate(meta, state, task, key)
    theta1 = jax.tree.map(lambda p, g: p - lr * g, meta, ref.meta_grad)
    at1 = tbptt.estimate(theta1, state, task, key)
    np.testing.assert_allclose(float(one.meta_loss), float(at1.meta_loss), rtol=1e-5)
    np.testing.assert_allclose(_flat(one.meta_grad), _flat(at1.meta_grad), rtol=1e-4, atol=1e-8)
    assert float(one.meta_loss) < float(ref.meta_loss)  # the adaptation step helped this truncation
    np.testing.assert_array_equal(np.asarray(one.inner.step), np.asarray(state.step) + H)


def test_m_l2o_second_order_matches_finite_differences_in_float64():
    with jax.enable_x64(True):
        task, meta, state, spec = _tiny_truncation()
        # Inner gradients differentiated too (second_order): every derivative is then exact, as the
        # finite differences of the same function are.
        spec = dataclasses.replace(spec, second_order=True)
        est = AdaptedBackprop(TINY_CFG, spec, adapt_steps=1, adapt_lr=0.5, first_order=False)
        out = jax.jit(lambda m: est.estimate(m, state, task, jax.random.key(0)))(meta)
        direction = jax.tree.map(lambda x: jax.random.normal(jax.random.key(7), x.shape, x.dtype), meta)

        def f(t):
            mp = jax.tree.map(lambda p, d: p + t * d, meta, direction)
            return float(jax.jit(lambda m: unroll.truncated_unroll(est.adapted(m, state, task), TINY_CFG, task,
                                                                  state, spec)[0])(mp))

        # The tiny task computes in float32 (its data and init are float32): a step of 1e-3 keeps the
        # rounding error of the difference near 3e-5 of the derivative.
        eps = 1e-3
        fd = (f(eps) - f(-eps)) / (2 * eps)
        np.testing.assert_allclose(float(_flat(out.meta_grad) @ _flat(direction)), fd, rtol=5e-3)
        first = AdaptedBackprop(TINY_CFG, spec, adapt_steps=1, adapt_lr=0.5).estimate(meta, state, task,
                                                                                       jax.random.key(0))
        assert not np.allclose(_flat(first.meta_grad), _flat(out.meta_grad), rtol=1e-3)  # the second-order term


@pytest.mark.parametrize("kw, match", [
    (dict(adapt_steps=-1), r"adapt_steps must be an integer >= 0"),
    (dict(adapt_lr=0.0), r"adapt_lr must be a finite number > 0"),
    (dict(first_order=1), r"first_order must be True or False"),
])
def test_bad_m_l2o_options_are_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        make_estimator("m-l2o", TINY_CFG, unroll.UnrollSpec(horizon=2), **kw)
    with pytest.raises(ValueError, match=r"make_estimator: 'tbptt' has no options \['adapt_steps'\]"):
        make_estimator("tbptt", TINY_CFG, unroll.UnrollSpec(horizon=2), adapt_steps=1)


def test_meta_train_config_passes_the_estimator_options():
    cfg = preset("smoke", tasks=tasks.TINY_TASK, estimator="m-l2o", adapt_steps=2, adapt_lr=0.01)
    est = MetaTrainer(cfg, devices=1).estimator
    assert isinstance(est, AdaptedBackprop) and (est.adapt_steps, est.adapt_lr) == (2, 0.01)
    pes = MetaTrainer(dataclasses.replace(cfg, estimator="pes", es_sigma=0.05), devices=1).estimator
    assert isinstance(pes, PersistentEvolutionStrategies) and pes.sigma == 0.05
    assert preset("smoke").estimator_options == {}
    for field, bad, match in (("adapt_steps", -1, "an integer >= 0"), ("es_sigma", 0.0, "a finite number > 0"),
                              ("adapt_lr", float("inf"), "a finite number > 0")):
        with pytest.raises(ValueError, match=rf"MetaTrainConfig\.{field} must be {match}"):
            preset("smoke", **{field: bad})
