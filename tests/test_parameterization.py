"""Tests for the "relative" parameterization (a learned factor on a scale-free base
step) and the horizon features (``mapa(..., total_steps=T)``)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import flat as _flat

import mapa_jax as mj
from mapa_jax import features
from mapa_jax.proximal_update import distance_direction, init_distance_state

SMALL = dict(lstm_hidden=16, gnn_hidden=8, gnn_rounds=2, window=4)
REL = dict(parameterization="relative", **SMALL)


def _problem():
    k = jax.random.split(jax.random.key(0), 4)
    params = {"w1": jax.random.normal(k[0], (5, 6)) * 0.7, "b1": jnp.zeros(6),
              "w2": jax.random.normal(k[1], (6, 2)) * 0.2, "b2": jnp.zeros(2)}
    x, y = jax.random.normal(k[2], (16, 5)), jax.random.normal(k[3], (16, 2))

    def loss(p):
        return jnp.mean((jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"] - y) ** 2)

    return params, loss


def _heads_at_init(meta_params):
    """The untrained learner exactly: the heads' kernel at zero, so their output is their bias."""
    heads = dict(meta_params["params"]["heads"], kernel=jnp.zeros_like(meta_params["params"]["heads"]["kernel"]))
    return {"params": {**meta_params["params"], "heads": heads}}


def test_untrained_relative_adam_is_adam_times_base_step_times_the_tensor_scale_in_float64():
    cfg = mj.MetaLearnerConfig(direction="adam", operator="none", **REL)
    meta = _heads_at_init(mj.init_meta_params(jax.random.key(1), cfg))
    params, loss = _problem()
    tx = mj.mapa(meta, cfg)
    state = tx.init(params)
    step = jax.jit(lambda p, s: tx.update(jax.grad(loss)(p), s, p))
    ref = {k: np.asarray(v, np.float64) for k, v in params.items()}
    mu = {k: np.zeros_like(v) for k, v in ref.items()}
    nu = {k: np.zeros_like(v) for k, v in ref.items()}
    p = params
    for t in range(1, 6):
        g = {k: np.asarray(v, np.float64) for k, v in jax.grad(loss)(p).items()}
        # The documented base step: s = max(rms(p), 0.1 * mean of the nonzero rms, 1e-3).
        rms = {k: np.sqrt(np.mean(v * v)) for k, v in ref.items()}
        nonzero = [r for r in rms.values() if r > 0]
        floor = max(0.1 * sum(nonzero) / len(nonzero), 1e-3)
        for k in ref:
            mu[k] = 0.9 * mu[k] + 0.1 * g[k]
            nu[k] = 0.999 * nu[k] + 0.001 * g[k] ** 2
            direction = (mu[k] / (1 - 0.9**t)) / (np.sqrt(nu[k] / (1 - 0.999**t)) + 1e-8)
            ref[k] = ref[k] - cfg.base_step * max(rms[k], floor) * direction
        u, state = step(p, state)
        p = optax.apply_updates(p, u)
        for k in ref:
            np.testing.assert_allclose(np.asarray(p[k], np.float64), ref[k], rtol=2e-5, atol=1e-7, err_msg=f"{k} {t}")
    eta = mj.proximal_parameters(state)["eta"]
    assert float(eta["w1"]) == pytest.approx(cfg.base_step * np.sqrt(np.mean(np.asarray(p["w1"]) ** 2)), rel=1e-2)


def test_relative_steps_scale_with_the_parameterization():
    """At the base step, rescaling a tensor (and its gradient inversely, as a reparameterization does)
    rescales its step alike. (The learned factor sees log-scale features, which are not invariant: the
    meta-training augmentation of rescaled tasks is what teaches it to ignore them.)"""
    cfg = mj.MetaLearnerConfig(direction="adam", operator="none", **REL)
    meta = _heads_at_init(mj.init_meta_params(jax.random.key(2), cfg))
    params, loss = _problem()
    tx = mj.mapa(meta, cfg)
    g = jax.grad(loss)(params)
    u, _ = tx.update(g, tx.init(params), params)
    c = 100.0
    scaled = dict(params, w1=params["w1"] * c)
    g_scaled = dict(g, w1=g["w1"] / c)
    u2, _ = tx.update(g_scaled, tx.init(scaled), scaled)
    np.testing.assert_allclose(np.asarray(u2["w1"]) / c, np.asarray(u["w1"]), rtol=2e-3, atol=1e-9)


def _train_horizon(meta, cfg, params, loss, total_steps, steps):
    """``params`` after ``steps`` MAPA steps told ``total_steps`` (with the loss value each step)."""
    tx = mj.mapa(meta, cfg, total_steps=total_steps)
    p, s = params, tx.init(params)
    for _ in range(steps):
        value, g = jax.value_and_grad(loss)(p)
        u, s = tx.update(g, s, p, value=value)
        p = optax.apply_updates(p, u)
    return p


def test_total_steps_jits_differentiates_reaches_progress_one_and_runs_past_the_end():
    cfg = mj.MetaLearnerConfig(direction="adam", horizon_aware=True, **REL)
    meta = mj.init_meta_params(jax.random.key(3), cfg)
    params, loss = _problem()
    assert features.progress(0, 4) == pytest.approx(0.25)
    assert features.progress(3, 4) == 1.0 and features.progress(9, 4) == 1.0

    def final_loss(meta, total_steps, steps=6):
        return loss(_train_horizon(meta, cfg, params, loss, total_steps, steps))

    with_t = jax.jit(jax.value_and_grad(lambda m: final_loss(m, 4)))(meta)  # 6 steps of a 4-step horizon
    without = jax.jit(jax.value_and_grad(lambda m: final_loss(m, None)))(meta)
    for value, grad in (with_t, without):
        flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(grad)])
        assert np.isfinite(float(value)) and np.all(np.isfinite(flat)) and np.any(flat != 0)
    assert float(with_t[0]) != float(without[0])  # the horizon features reach the learner


def test_total_steps_as_a_traced_array_is_the_integer_and_zero_is_not_known():
    """Meta-training passes T as a traced int32 scalar: the same steps as the Python int, and 0 as None."""
    cfg = mj.MetaLearnerConfig(direction="adam", horizon_aware=True, **REL)
    meta = mj.init_meta_params(jax.random.key(4), cfg)
    params, loss = _problem()

    def final(meta, total_steps, steps=3):
        return _train_horizon(meta, cfg, params, loss, total_steps, steps)

    traced = jax.jit(final)
    for t in (2, 5):
        np.testing.assert_allclose(_flat(traced(meta, jnp.int32(t))), _flat(final(meta, t)), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(_flat(traced(meta, jnp.int32(0))), _flat(final(meta, None)), rtol=1e-6, atol=1e-8)
    assert not np.allclose(_flat(final(meta, 2)), _flat(final(meta, None)), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("bad", [jnp.float32(3.0), jnp.array([3, 4], jnp.int32)], ids=["float", "vector"])
def test_total_steps_array_must_be_an_integer_scalar(bad):
    cfg = mj.MetaLearnerConfig(horizon_aware=True, **REL)
    with pytest.raises(ValueError, match="total_steps as an array must be an integer scalar"):
        mj.mapa(mj.init_meta_params(jax.random.key(0), cfg), cfg, total_steps=bad)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "100"])
def test_total_steps_must_be_a_positive_integer(bad):
    cfg = mj.MetaLearnerConfig(horizon_aware=True, **REL)
    with pytest.raises(ValueError, match="total_steps must be a positive integer"):
        mj.mapa(mj.init_meta_params(jax.random.key(0), cfg), cfg, total_steps=bad)


def test_total_steps_needs_a_horizon_aware_learner_and_the_options_are_validated():
    cfg = mj.MetaLearnerConfig(**SMALL)
    with pytest.raises(ValueError, match="horizon_aware=False"):
        mj.mapa(mj.init_meta_params(jax.random.key(0), cfg), cfg, total_steps=100)
    for kw, match in [(dict(parameterization="sigmoid"), "parameterization must be one of"),
                      (dict(base_step=0.0), "base_step must be a finite number > 0"),
                      (dict(eta_range=float("nan")), "eta_range must be a finite number > 0"),
                      (dict(horizon_aware=1), "horizon_aware must be a bool")]:
        with pytest.raises(ValueError, match=match):
            mj.MetaLearnerConfig(**kw)
    # Meta-params of a learner without the horizon features do not fit one with them.
    with pytest.raises(ValueError, match="another config"):
        mj.mapa(mj.init_meta_params(jax.random.key(0), cfg), mj.MetaLearnerConfig(horizon_aware=True, **SMALL))


# ------------------------------------------------- the "distance" parameterization


DIST = dict(parameterization="distance", **SMALL)


def _prodigy_reference(params, grads_fn, steps, l1=0.0):
    """Prodigy (Mishchenko and Defazio, 2023; optax.contrib.prodigy's defaults), by hand in numpy float64.

    With ``l1 > 0``, each step is followed by soft-thresholding in Adam's metric: the
    step size of a coordinate is ``d c_t`` over the preconditioner of the gradients' scale,
    ``(sqrt(v) + d' eps) / d`` (the moments carry a factor ``d``).
    """
    b1, b2, eps, d0 = 0.9, 0.999, 1e-8, 1e-6
    b3 = np.sqrt(b2)
    x0 = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x = dict(x0)
    m = {k: np.zeros_like(v) for k, v in x.items()}
    v = {k: np.zeros_like(v) for k, v in x.items()}
    s = {k: np.zeros_like(v) for k, v in x.items()}
    d, r, out = d0, 0.0, []
    for t in range(1, steps + 1):
        g = {k: np.asarray(a, np.float64) for k, a in grads_fn(x).items()}
        dlr = d * np.sqrt(1 - b2**t) / (1 - b1**t)
        r = b3 * r + (d / d0) * dlr * sum(np.vdot(g[k], x0[k] - x[k]) for k in x)
        for k in x:
            s[k] = b3 * s[k] + (d / d0) * dlr * g[k]
            m[k] = b1 * m[k] + (1 - b1) * d * g[k]
            v[k] = b2 * v[k] + (1 - b2) * (d * g[k]) ** 2
        s_norm = sum(np.abs(a).sum() for a in s.values())
        d_new = max(d, r / s_norm) if s_norm > 0 else d
        x = {k: x[k] - dlr * m[k] / (np.sqrt(v[k]) + d_new * eps) for k in x}
        if l1:
            step = {k: dlr * d / (np.sqrt(v[k]) + d_new * eps) for k in x}
            # the default mask: weight matrices only, biases are not shrunk
            x = {k: np.sign(x[k]) * np.maximum(np.abs(x[k]) - l1 * step[k], 0.0) if x[k].ndim > 1 else x[k]
                 for k in x}
        d = d_new
        out.append((dict(x), d))
    return out


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_untrained_distance_learner_is_prodigy_step_for_step_in_float64(jit):
    """Heads at init and no prox: the learner's steps are Prodigy's (hand-computed, and optax's)."""
    with jax.enable_x64(True):
        cfg = mj.MetaLearnerConfig(direction="adam", operator="none", **DIST)
        meta = _heads_at_init(mj.init_meta_params(jax.random.key(1), cfg))
        params, loss = _problem()
        params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        grad = jax.grad(loss)
        steps = 30 if jit else 4  # eager dispatch of every op is slow: a few steps check the same code
        ref = _prodigy_reference(params, lambda x: grad({k: jnp.asarray(a) for k, a in x.items()}), steps)
        tx, opt = mj.mapa(meta, cfg), optax.contrib.prodigy()
        step = (lambda p, s: tx.update(grad(p), s, p))
        step = jax.jit(step) if jit else step
        p, q, s, so = params, params, tx.init(params), opt.init(params)
        for t, (x_ref, d_ref) in enumerate(ref, 1):
            u, s = step(p, s)
            p = optax.apply_updates(p, u)
            uo, so = opt.update(grad(q), so, q)
            q = optax.apply_updates(q, uo)
            np.testing.assert_allclose(float(s.nu[1].d), d_ref, rtol=1e-10, err_msg=f"d at step {t}")
            for k in x_ref:
                np.testing.assert_allclose(np.asarray(p[k]), x_ref[k], rtol=1e-9, atol=1e-12, err_msg=f"{k} {t}")
                np.testing.assert_allclose(np.asarray(p[k]), np.asarray(q[k]), rtol=1e-9, atol=1e-12)
        assert float(s.nu[1].d) > (1e3 if jit else 1.2) * 1e-6  # d grew from d_0: not a trivial comparison


def test_untrained_distance_learner_soft_thresholds_in_adams_metric_in_float64():
    """The prox step of the distance parameterization is d c_t over Adam's (gradient-scale) preconditioner."""
    with jax.enable_x64(True):
        cfg = mj.MetaLearnerConfig(direction="adam", operator="soft_threshold", init_lam=3e-2, **DIST)
        meta = _heads_at_init(mj.init_meta_params(jax.random.key(1), cfg))
        lam = float(jax.nn.softplus(jnp.asarray(meta["params"]["heads"]["bias"][1], jnp.float64)))
        params, loss = _problem()
        params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        grad = jax.grad(loss)
        grads_fn = lambda x: grad({k: jnp.asarray(a) for k, a in x.items()})  # noqa: E731
        ref, plain = _prodigy_reference(params, grads_fn, 25, l1=lam), _prodigy_reference(params, grads_fn, 25)
        tx = mj.mapa(meta, cfg)
        step = jax.jit(lambda p, s: tx.update(grad(p), s, p))
        p, s = params, tx.init(params)
        for t, (x_ref, _) in enumerate(ref, 1):
            u, s = step(p, s)
            p = optax.apply_updates(p, u)
            for k in x_ref:
                np.testing.assert_allclose(np.asarray(p[k]), x_ref[k], rtol=1e-7, atol=1e-10, err_msg=f"{k} {t}")
        # the threshold acted: some weights are exactly zero, and the run is not Prodigy's
        assert sum(int(np.sum(a == 0)) for k, a in ref[-1][0].items() if k.startswith("w")) > 0
        assert max(np.max(np.abs(ref[-1][0][k] - plain[-1][0][k])) for k in ref[-1][0]) > 1e-4


def test_distance_estimate_never_decreases_and_a_nonfinite_step_leaves_it_unchanged():
    cfg = mj.MetaLearnerConfig(direction="adam", **DIST)
    meta = mj.init_meta_params(jax.random.key(2), cfg)
    params, loss = _problem()
    tx = mj.mapa(meta, cfg)
    s = tx.init(params)
    step = jax.jit(lambda g, s, p, v: tx.update(g, s, p, value=v))
    p, ds = params, []
    for _ in range(15):
        v, g = jax.value_and_grad(loss)(p)
        u, s = step(g, s, p, v)
        p = optax.apply_updates(p, u)
        ds.append(float(s.nu[1].d))
    assert all(b >= a for a, b in zip(ds, ds[1:])) and ds[-1] > ds[0]
    bad = jax.tree.map(lambda a: a.at[(0,) * a.ndim].set(jnp.nan), jax.grad(loss)(p))
    u, s2 = step(bad, s, p, loss(p))
    assert all(float(jnp.max(jnp.abs(a))) == 0.0 for a in jax.tree.leaves(u))
    for a, b in zip(jax.tree.leaves(s2.nu), jax.tree.leaves(s.nu)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(s2.notfinite_count) == 1


def test_distance_needs_the_adam_direction():
    with pytest.raises(ValueError, match='parameterization="distance" needs direction="adam"'):
        mj.MetaLearnerConfig(direction="sgd", parameterization="distance")
    with pytest.raises(ValueError, match="parameterization must be one of"):
        mj.MetaLearnerConfig(parameterization="prodigy")


# ------------------------------------------- the sampled distance estimate (distance_sample > 0)


def _regression(shape=(300, 200)):
    """A small tanh regression whose kernel has more elements than the samples below."""
    k = jax.random.split(jax.random.key(4), 4)
    params = {"w": jax.random.normal(k[0], shape) * 0.05, "b": jnp.zeros(shape[1]),
              "v": jax.random.normal(k[1], (shape[1], 3)) * 0.1}
    x, y = jax.random.normal(k[2], (64, shape[0])), jax.random.normal(k[3], (64, 3))

    def loss(p):
        return jnp.mean((jnp.tanh(x @ p["w"] + p["b"]) @ p["v"] - y) ** 2)

    return params, loss


def _distance_run(params, loss, steps, jit=True, **kw):
    """(d after each step, final params, final state) of the distance learner (meta-params at init)."""
    cfg = mj.MetaLearnerConfig(direction="adam", **DIST, **kw)
    tx = mj.mapa(mj.init_meta_params(jax.random.key(5), cfg), cfg)
    step = lambda p, s: tx.update(jax.grad(loss)(p), s, p)  # noqa: E731
    step = jax.jit(step) if jit else step
    p, s, ds = params, tx.init(params), []
    for _ in range(steps):
        u, s = step(p, s)
        p = optax.apply_updates(p, u)
        ds.append(float(s.nu[1].d))
    return np.array(ds), p, s


def test_sampled_distance_estimate_is_the_exact_one_where_every_tensor_fits_in_the_sample():
    params, loss = _problem()  # the largest tensor has 30 elements
    exact_d, exact_p, exact_s = _distance_run(params, loss, 8)
    d, p, s = _distance_run(params, loss, 8, distance_sample=30)
    np.testing.assert_array_equal(d, exact_d)
    for k in p:
        np.testing.assert_array_equal(np.asarray(p[k]), np.asarray(exact_p[k]), err_msg=k)
    for a, b in zip(jax.tree.leaves(s.nu[1]), jax.tree.leaves(exact_s.nu[1])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert exact_d[-1] > 2 * exact_d[0]  # d grew (4.7x): not a trivial comparison


def test_sampled_distance_estimate_tracks_the_exact_one_and_keeps_only_the_samples():
    params, loss = _regression()  # a (300, 200) kernel, a (200, 3) one and a bias of 200: a sample of 256
    exact_d, _, exact_s = _distance_run(params, loss, 20)
    d, _, s = _distance_run(params, loss, 20, distance_sample=256)
    # Measured (CPU, float32): d / exact d in [1, 1.27] over these 20 steps (the default huber
    # prox; 1.33 by step 40); without a prox (operator="none", Prodigy's steps) in [0.9993, 1]
    # over 20 steps and [0.998, 1.003] over 40. The bound leaves room over the 1.27.
    ratio = d / exact_d
    assert np.all((2 / 3 < ratio) & (ratio < 1.5)), ratio
    assert not np.array_equal(d, exact_d)  # it is an estimate from the samples, not the exact sums
    assert np.all(np.diff(d) >= 0) and d[-1] > 100 * d[0]  # d grew ~290x
    # Memory: the two large tensors keep 256 elements each; the bias (200 <= 256) is kept whole.
    for dist in (s.nu[1].params0, s.nu[1].grad_sum):
        assert {k: a.shape for k, a in dist.items()} == {"w": (256,), "b": (200,), "v": (256,)}
    assert {k: a.shape for k, a in exact_s.nu[1].params0.items()} == {k: a.shape for k, a in params.items()}
    # A state of another sample size is refused at trace time.
    cfg = mj.MetaLearnerConfig(direction="adam", distance_sample=256, **DIST)
    tx = mj.mapa(mj.init_meta_params(jax.random.key(5), cfg), cfg)
    with pytest.raises(ValueError, match="another sample size"):
        tx.update(jax.grad(loss)(params), exact_s, params)


def test_sampled_distance_estimate_is_the_same_with_and_without_jit():
    params, loss = _regression((40, 30))  # 1200 and 90 elements against a sample of 128
    runs = [_distance_run(params, loss, 5, jit=jit, distance_sample=128) for jit in (False, True)]
    (d_eager, p_eager, _), (d_jit, p_jit, _) = runs
    np.testing.assert_allclose(d_eager, d_jit, rtol=1e-6)
    for k in p_jit:  # last-bit differences move a few weights near the prox's threshold by ~5e-7
        np.testing.assert_allclose(np.asarray(p_eager[k]), np.asarray(p_jit[k]), rtol=1e-6, atol=2e-6, err_msg=k)
    assert d_jit[-1] > d_jit[0]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "4096"])
def test_distance_sample_must_be_a_nonnegative_integer(bad):
    with pytest.raises(ValueError, match=r"MetaLearnerConfig.distance_sample must be an integer >= 0"):
        mj.MetaLearnerConfig(direction="adam", parameterization="distance", distance_sample=bad)


def test_a_config_saved_before_distance_sample_loads_with_the_exact_estimate():
    old = mj.MetaLearnerConfig(direction="adam", parameterization="distance").to_dict()
    del old["distance_sample"]
    assert mj.MetaLearnerConfig.from_dict(old).distance_sample == 0


# ------------------------------------------- distance_growth_steps: d held after a number of steps


def test_distance_growth_steps_holds_d_after_them_and_changes_nothing_before():
    params, loss = _problem()
    free_d, free_p, _ = _distance_run(params, loss, 12)
    held_d, held_p, _ = _distance_run(params, loss, 12, distance_growth_steps=5)
    np.testing.assert_array_equal(held_d[:5], free_d[:5])  # the same steps, bit for bit, up to step 5
    assert np.all(held_d[5:] == held_d[4]) and free_d[-1] > 1.5 * free_d[4]  # then held, where Prodigy's grows
    assert not np.allclose(np.asarray(held_p["w1"]), np.asarray(free_p["w1"]))  # so the steps differ


@pytest.mark.parametrize("bad", [-1, 2.0, False])
def test_distance_growth_steps_must_be_a_nonnegative_integer(bad):
    with pytest.raises(ValueError, match=r"MetaLearnerConfig.distance_growth_steps must be an integer >= 0"):
        mj.MetaLearnerConfig(direction="adam", parameterization="distance", distance_growth_steps=bad)


def test_distance_direction_names_a_bad_growth_steps():
    params = {"w": jnp.ones(3)}
    zeros = jax.tree.map(jnp.zeros_like, params)
    with pytest.raises(ValueError, match=r"distance_direction: growth_steps must be an integer >= 0 \(0: no limit\)"):
        distance_direction(params, params, zeros, zeros, init_distance_state(params), jnp.asarray(1),
                           b1=0.9, b2=0.999, eps=1e-8, growth_steps=-1)


# ------------------------------------------- distance_factor_after_growth: the learned factor after d is held


def _eta_head_biased(meta_params, bias):
    """The heads' kernel at zero and the eta head's bias at ``bias``: a factor exp(eta_range tanh(bias))."""
    heads = _heads_at_init(meta_params)["params"]["heads"]
    heads = dict(heads, bias=heads["bias"].at[0].set(bias))
    return {"params": {**meta_params["params"], "heads": heads}}


def test_distance_factor_after_growth_leaves_the_first_steps_at_the_base_step():
    params, loss = _problem()
    cfg = mj.MetaLearnerConfig(direction="adam", distance_growth_steps=3, distance_factor_after_growth=True, **DIST)
    meta = mj.init_meta_params(jax.random.key(5), cfg)
    runs = []
    for bias in (0.0, 1.0):  # factor 1, and exp(eta_range * tanh(1)) = 5.8
        tx = mj.mapa(_eta_head_biased(meta, bias), cfg)
        step = jax.jit(lambda p, s, tx=tx: tx.update(jax.grad(loss)(p), s, p))
        p, s, ps, etas = params, tx.init(params), [], []
        for _ in range(5):
            u, s = step(p, s)
            p = optax.apply_updates(p, u)
            ps.append(p)
            etas.append(float(mj.proximal_parameters(s)["eta"]["w1"]))
        runs.append((ps, np.array(etas)))
    (unit_p, unit_eta), (big_p, big_eta) = runs
    for t in range(3):  # steps 1-3: the same step, bit for bit, whatever the factor
        jax.tree.map(np.testing.assert_array_equal, big_p[t], unit_p[t])
    factor = np.exp(cfg.eta_range * np.tanh(1.0))
    np.testing.assert_allclose(big_eta[3:] / unit_eta[3:], factor, rtol=1e-5)  # steps 4-5: d held, times the factor
    assert not np.allclose(np.asarray(big_p[4]["w1"]), np.asarray(unit_p[4]["w1"]))


@pytest.mark.parametrize("kw", [dict(parameterization="distance"), dict(parameterization="relative",
                                                                       distance_growth_steps=5)])
def test_distance_factor_after_growth_needs_the_distance_parameterization_and_growth_steps(kw):
    with pytest.raises(ValueError, match=r"distance_factor_after_growth=True needs parameterization=\"distance\" "
                                         r"and distance_growth_steps > 0"):
        mj.MetaLearnerConfig(direction="adam", distance_factor_after_growth=True, **kw)
    with pytest.raises(ValueError, match=r"MetaLearnerConfig.distance_factor_after_growth must be a bool"):
        mj.MetaLearnerConfig(direction="adam", parameterization="distance", distance_growth_steps=5,
                             distance_factor_after_growth=1)
