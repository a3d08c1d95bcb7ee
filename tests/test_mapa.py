"""Tests for the MAPA transform (mapa_jax.mapa); its features and configuration have their own files."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mapa_jax as mj
from mapa_jax import features
from mapa_jax.mapa import conditioning

SMALL = dict(lstm_hidden=16, gnn_hidden=8, gnn_rounds=2, window=4)


class MLP(nn.Module):
    widths: tuple = (8, 8, 1)

    @nn.compact
    def __call__(self, x):
        for i, w in enumerate(self.widths):
            x = nn.Dense(w)(x)
            if i < len(self.widths) - 1:
                x = nn.relu(x)
        return x


def _problem(widths=(8, 8, 1), dtype=jnp.float32):
    model = MLP(widths)
    x = jax.random.normal(jax.random.key(0), (32, 3))
    y = jnp.sin(x[:, :1])
    params = model.init(jax.random.key(1), x)["params"]
    params = jax.tree.map(lambda p: p.astype(dtype), params)

    def loss_fn(p):
        return jnp.mean((model.apply({"params": p}, x).astype(jnp.float32) - y) ** 2)

    return model, params, loss_fn


def _tx(direction="sgd", operator="huber", seed=0, **kw):
    cfg = mj.MetaLearnerConfig(direction=direction, operator=operator, **{**SMALL, **kw})
    return mj.mapa(mj.init_meta_params(jax.random.key(seed), cfg), cfg), cfg


def _train(tx, params, loss_fn, steps, jit=True):
    def step(p, s):
        loss, g = jax.value_and_grad(loss_fn)(p)
        u, s = tx.update(g, s, p, value=loss)
        return optax.apply_updates(p, u), s, loss

    step = jax.jit(step) if jit else step
    s = tx.init(params)
    for _ in range(steps):
        params, s, loss = step(params, s)
    return params, s, loss


class TestTransform(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_and_no_jit_agree(self):
        _, params, loss_fn = _problem()
        for direction in ("sgd", "adam"):
            tx, _ = _tx(direction)
            s = tx.init(params)
            loss, g = jax.value_and_grad(loss_fn)(params)
            u_ref, s_ref = jax.jit(tx.update)(g, s, params, value=loss)
            u, s2 = self.variant(lambda g, s, p, l: tx.update(g, s, p, value=l))(g, s, params, loss)
            chex.assert_trees_all_close(u, u_ref, rtol=1e-5, atol=1e-7)
            chex.assert_trees_all_close(s2, s_ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("direction", ["sgd", "adam"])
@pytest.mark.parametrize("operator", ["paper", "huber", "soft_threshold", "elastic_net", "none"])
def test_every_direction_and_operator_trains_and_keeps_structure(direction, operator):
    _, params, loss_fn = _problem()
    tx, _ = _tx(direction, operator, eta_max=0.1)
    s0 = tx.init(params)
    new, s1, _ = _train(tx, params, loss_fn, 30)
    chex.assert_trees_all_equal_structs(s0, s1)
    chex.assert_trees_all_equal_shapes_and_dtypes(s0, s1)
    chex.assert_trees_all_equal_shapes_and_dtypes(new, params)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(s1))  # arrays only
    assert float(loss_fn(new)) < float(loss_fn(params))


def test_sgd_direction_is_eq14_with_the_emitted_parameters():
    _, params, loss_fn = _problem()
    tx, cfg = _tx("sgd", "huber")
    s = tx.init(params)
    g = jax.grad(loss_fn)(params)
    u, s1 = tx.update(g, s, params, value=jnp.float32(1.0))
    pp = mj.proximal_parameters(s1)
    k = params["Dense_0"]["kernel"]
    eta, lam, tau = (float(pp[n]["Dense_0"]["kernel"]) for n in ("eta", "lam", "tau"))
    z = np.asarray(k, np.float64) - eta * np.asarray(g["Dense_0"]["kernel"], np.float64)
    c = eta * lam
    want = np.where(np.abs(z) <= tau + c, z / (1 + c / tau), z - c * np.sign(z))
    np.testing.assert_allclose(k + u["Dense_0"]["kernel"], want, rtol=1e-5, atol=1e-7)
    # biases are not proximal by default: a plain step
    b_eta = float(pp["eta"]["Dense_0"]["bias"])
    np.testing.assert_allclose(u["Dense_0"]["bias"], -b_eta * g["Dense_0"]["bias"], rtol=1e-5, atol=1e-9)


def test_learned_optimizer_baseline_has_no_gnn_and_no_prox():
    cfg = mj.learned_optimizer_config(**SMALL)
    meta = mj.init_meta_params(jax.random.key(0), cfg)
    assert not any("gnn" in jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(meta))
    _, params, loss_fn = _problem()
    tx = mj.mapa(meta, cfg)
    g = jax.grad(loss_fn)(params)
    u, s = tx.update(g, tx.init(params), params)
    eta = mj.proximal_parameters(s)["eta"]
    chex.assert_trees_all_close(u, jax.tree.map(lambda e, g: -e * g, eta, g), rtol=1e-6)


def test_works_in_optax_chain_and_masked():
    _, params, loss_fn = _problem()
    tx, _ = _tx()
    chained = optax.chain(optax.clip_by_global_norm(1.0), tx)
    new, s, _ = _train(chained, params, loss_fn, 5)
    assert float(loss_fn(new)) < float(loss_fn(params))
    assert isinstance(mj.proximal_parameters(s)["eta"], dict)
    mask = {"Dense_0": {"kernel": True, "bias": True}, "Dense_1": {"kernel": True, "bias": True},
            "Dense_2": {"kernel": False, "bias": False}}
    masked = optax.masked(tx, mask)
    g = jax.grad(loss_fn)(params)
    u, s = jax.jit(masked.update)(g, masked.init(params), params)
    chex.assert_trees_all_equal(u["Dense_2"], g["Dense_2"])  # optax.masked passes these through
    assert not np.allclose(u["Dense_0"]["kernel"], g["Dense_0"]["kernel"])
    assert len(jax.tree.leaves(mj.proximal_parameters(s)["eta"])) == 4  # masked-out tensors have none


def test_works_with_flax_nnx_optimizer_and_value():
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(3, 8, rngs=rngs)
            self.b = nnx.Linear(8, 1, rngs=rngs)

        def __call__(self, x):
            return self.b(nnx.relu(self.a(x)))

    model = Model(nnx.Rngs(0))
    tx, _ = _tx(eta_max=0.1)
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(0), (32, 3))
    y = jnp.sin(x[:, :1])

    @nnx.jit
    def step(m, o):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(m)
        o.update(m, grads, value=loss)
        return loss

    losses = [float(step(model, opt)) for _ in range(30)]
    assert losses[-1] < losses[0]
    state = mj.proximal_parameters(opt.opt_state)
    assert float(state["eta"]["a"]["kernel"]) > 0


def test_outputs_stay_within_bounds_for_extreme_inputs():
    _, params, _ = _problem()
    tx, cfg = _tx("sgd", "huber", eta_max=0.02, tau_max=0.3)
    s = tx.init(params)
    for scale, value in [(1e30, 1e30), (1e-30, 1e-30), (0.0, 0.0), (-1e20, -1e20)]:
        g = jax.tree.map(lambda p: jnp.full_like(p, scale), params)
        p = jax.tree.map(lambda p: jnp.full_like(p, -scale), params)
        _, s = tx.update(g, s, p, value=jnp.float32(value))
        pp = mj.proximal_parameters(s)
        for e in jax.tree.leaves(pp["eta"]):
            assert 0.0 <= float(e) <= 0.02
        for t in jax.tree.leaves(pp["tau"]):
            assert 0.0 <= float(t) <= 0.3
        for lam in jax.tree.leaves(pp["lam"]):
            assert 0.0 <= float(lam) and np.isfinite(float(lam))
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(s))


def test_meta_gradient_of_unrolled_loss_is_finite_and_nonzero(unrolled_loss):
    _, params, loss_fn = _problem()
    for direction in ("sgd", "adam"):
        cfg = mj.MetaLearnerConfig(direction=direction, **SMALL)
        meta = mj.init_meta_params(jax.random.key(0), cfg)
        grads = jax.jit(jax.grad(lambda m: unrolled_loss(m, cfg, params, loss_fn, 5)))(meta)
        leaves = jax.tree.leaves(grads)
        assert all(np.all(np.isfinite(x)) for x in leaves)
        assert sum(float(jnp.sum(jnp.abs(x))) for x in leaves) > 0
        gnn = [x for p, x in jax.tree_util.tree_leaves_with_path(grads) if "gnn" in jax.tree_util.keystr(p)]
        assert any(float(jnp.abs(x).sum()) > 0 for x in gnn), "no gradient reaches the GNN"


def test_non_finite_step_gives_zero_update_and_is_counted():
    _, params, loss_fn = _problem()
    for direction in ("sgd", "adam"):
        tx, _ = _tx(direction)
        update = jax.jit(lambda g, s, p, v: tx.update(g, s, p, value=v))
        s = tx.init(params)
        loss, g = jax.value_and_grad(loss_fn)(params)
        _, s = update(g, s, params, loss)
        bad = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), g)
        for grads, value in [(bad, loss), (g, jnp.float32(jnp.inf))]:
            u, s_bad = update(grads, s, params, value)
            assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(u))
            assert int(s_bad.notfinite_count) == int(s.notfinite_count) + 1
            chex.assert_trees_all_equal(s_bad._replace(notfinite_count=s.notfinite_count), s)
            s = s_bad
        u, s_next = update(g, s, params, loss)
        assert int(s_next.count) == 2
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(u))
        assert any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(u))


def test_bfloat16_params_keep_their_dtype():
    _, params, loss_fn = _problem(dtype=jnp.bfloat16)
    for direction in ("sgd", "adam"):
        tx, _ = _tx(direction)
        new, s, _ = _train(tx, params, loss_fn, 3)
        chex.assert_trees_all_equal_shapes_and_dtypes(new, params)
        if direction == "adam":
            chex.assert_trees_all_equal_shapes_and_dtypes(s.mu, params)


def test_state_holds_at_most_one_float_per_param_for_sgd_and_two_for_adam():
    """Per-parameter state: none for sgd, Adam's two moments for adam; the rest
    (window, LSTM, FiLM) is per tensor and does not grow with tensor size."""
    cfg_kw = dict(window=20, lstm_hidden=16, gnn_hidden=8)
    for direction, limit in (("sgd", 0), ("adam", 2)):
        sizes = {}
        for width in (64, 512):
            _, params, _ = _problem(widths=(width, width, 1))
            n = sum(x.size for x in jax.tree.leaves(params))
            tx, _ = _tx(direction, **cfg_kw)
            s = tx.init(params)
            floats = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(s)) / 4
            sizes[width] = (n, floats - limit * n)
        assert sizes[64][1] == sizes[512][1], sizes  # beyond `limit` floats/param: per-tensor only
        n_tensors = 6
        assert sizes[512][1] <= n_tensors * (20 * features.HISTORY_SIZE + 4 * 16 + 3) + 64, sizes


def test_conditioning_equals_the_film_init_stores_and_is_differentiable_in_meta_params():
    _, params, _ = _problem()
    cfg = mj.MetaLearnerConfig(film_heads=True, **SMALL)
    meta = mj.init_meta_params(jax.random.key(0), cfg)
    graph = mj.architecture_graph(params)
    only_out = jax.tree.map(lambda p: p.ndim >= 2, params)
    only_out["Dense_0"]["kernel"] = False
    for g, mask in ((None, only_out), (None, None), (graph, None)):
        film = mj.mapa(meta, cfg, g, mask=mask).init(params).film
        got = conditioning(meta, cfg, g, params, mask=mask)
        jax.tree.map(np.testing.assert_array_equal, got, film)
    jitted = jax.jit(lambda m: conditioning(m, cfg, graph, params))(meta)  # as in a meta-training unroll
    chex.assert_trees_all_close(jitted, got, rtol=1e-5, atol=1e-6)
    assert got[0].shape == (6, SMALL["lstm_hidden"]) and got[2].shape == (6, 3)

    def objective(m):
        gamma, beta, shift = conditioning(m, cfg, None, params)
        return jnp.sum(gamma**2) + jnp.sum(beta) + jnp.sum(shift)

    grads = jax.grad(objective)(meta)
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(x)) for x in leaves)
    gnn = [x for p, x in jax.tree_util.tree_leaves_with_path(grads) if "gnn" in jax.tree_util.keystr(p)]
    assert any(float(jnp.abs(x).sum()) > 0 for x in gnn), "no gradient reaches the GNN"
    with pytest.raises(TypeError, match="config must be a MetaLearnerConfig"):
        conditioning(meta, None, None, params)
    with pytest.raises(ValueError, match="do not match the config"):
        conditioning({"params": {}}, cfg, None, params)


def test_architecture_embedding_runs_at_init_not_per_step():
    _, params, loss_fn = _problem()
    tx, _ = _tx()
    s = tx.init(params)
    g = jax.grad(loss_fn)(params)
    hlo = jax.jit(lambda g, s, p: tx.update(g, s, p)).lower(g, s, params).as_text()
    assert "scatter" not in hlo  # message passing (segment_sum) is a scatter-add
    init_hlo = jax.jit(tx.init).lower(params).as_text()
    assert "scatter" in init_hlo


# ------------------------------------------------------------------ bad input


def test_meta_params_for_another_config_are_rejected():
    cfg_a = mj.MetaLearnerConfig(**SMALL)
    cfg_b = mj.MetaLearnerConfig(**{**SMALL, "lstm_hidden": 32})
    meta_a = mj.init_meta_params(jax.random.key(0), cfg_a)
    with pytest.raises(ValueError, match="built for another config"):
        mj.mapa(meta_a, cfg_b)
    with pytest.raises(ValueError, match="do not match the config"):
        mj.mapa(meta_a, mj.learned_optimizer_config(**SMALL))
    with pytest.raises(TypeError, match="MetaLearnerConfig"):
        mj.mapa(meta_a, {"lstm_hidden": 16})


def test_graph_that_does_not_match_params_is_rejected():
    _, params, _ = _problem(widths=(8, 8, 1))
    _, other, _ = _problem(widths=(8, 1))
    cfg = mj.MetaLearnerConfig(**SMALL)
    tx = mj.mapa(mj.init_meta_params(jax.random.key(0), cfg), cfg, graph=mj.architecture_graph(other))
    with pytest.raises(ValueError, match="nodes"):
        tx.init(params)


def test_update_without_params_raises():
    _, params, loss_fn = _problem()
    tx, _ = _tx()
    with pytest.raises(ValueError, match="needs params"):
        tx.update(jax.grad(loss_fn)(params), tx.init(params), None)


def test_unguarded_mode_skips_the_full_pass_but_still_skips_a_non_finite_loss():
    _, params, loss_fn = _problem()
    cfg = mj.MetaLearnerConfig(**SMALL)
    tx = mj.mapa(mj.init_meta_params(jax.random.key(0), cfg), cfg, skip_nonfinite=False)
    loss, g = jax.value_and_grad(loss_fn)(params)
    s = tx.init(params)
    hlo = jax.jit(lambda g, s, p: tx.update(g, s, p, value=loss)).lower(g, s, params).as_text()
    guarded = mj.mapa(mj.init_meta_params(jax.random.key(0), cfg), cfg)
    hlo_guarded = jax.jit(lambda g, s, p: guarded.update(g, s, p, value=loss)).lower(g, s, params).as_text()
    assert hlo.count("reduce") < hlo_guarded.count("reduce")  # no per-tensor full sums
    u, s1 = tx.update(g, s, params, value=jnp.float32(jnp.nan))
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(u))
    assert int(s1.notfinite_count) == 1


def test_guard_catches_a_nan_outside_the_sample_and_does_not_change_finite_steps():
    params = {"w": jnp.ones((200, 300)) * 0.1, "b": jnp.zeros((300,))}
    g = jax.tree.map(lambda x: jnp.full_like(x, 0.01), params)
    cfg = mj.MetaLearnerConfig(**SMALL)
    meta = mj.init_meta_params(jax.random.key(0), cfg)
    guarded, unguarded = mj.mapa(meta, cfg), mj.mapa(meta, cfg, skip_nonfinite=False)
    s = guarded.init(params)
    u_g, s_g = jax.jit(guarded.update)(g, s, params)
    u_u, s_u = jax.jit(unguarded.update)(g, s, params)
    chex.assert_trees_all_equal((u_g, s_g), (u_u, s_u))  # the check changes nothing on finite steps
    # An entry the subsample does not see (the sample of w is 64 blocks of 64
    # from a 60000-entry tensor; entry 100 lies between the first two blocks).
    sample = np.asarray(features.sample(jnp.arange(params["w"].size, dtype=jnp.float32), features.SAMPLE_SIZE))
    assert 100 not in sample
    bad = {"w": g["w"].reshape(-1).at[100].set(jnp.inf).reshape(g["w"].shape), "b": g["b"]}
    u, s1 = jax.jit(guarded.update)(bad, s, params)
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(u))
    assert int(s1.notfinite_count) == 1
    u, s1 = jax.jit(unguarded.update)(bad, s, params)  # unguarded: documented to let it through
    assert int(s1.notfinite_count) == 0 and not np.all(np.isfinite(np.asarray(u["w"])))
