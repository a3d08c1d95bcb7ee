"""Tests for the Flax meta-learner modules (mapa_jax.networks)."""

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np

import mapa_jax as mj
from mapa_jax import networks


class MLP(nn.Module):
    widths: tuple

    @nn.compact
    def __call__(self, x):
        for w in self.widths[:-1]:
            x = nn.relu(nn.Dense(w)(x))
        return nn.Dense(self.widths[-1])(x)


class ResMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(16)(x)
        for _ in range(2):
            x = x + nn.Dense(16)(nn.relu(nn.Dense(16)(x)))
        return nn.Dense(1)(x)


def _gnn():
    gnn = networks.ArchitectureGNN(hidden=16, rounds=3)
    g = mj.architecture_graph(MLP((8, 8, 1)).init(jax.random.key(0), jnp.ones((1, 3)))["params"])
    return gnn, gnn.init(jax.random.key(42), g)


def _embed(gnn, gnn_params, graph):
    return gnn.apply(gnn_params, graph)


def _graph(model, seed=0):
    x = jnp.ones((2, 3))
    params = model.init(jax.random.key(seed), x)["params"]
    return mj.architecture_graph(model.apply, {"params": params}, x)


def test_embedding_is_the_same_for_two_inits_of_one_architecture():
    gnn, gp = _gnn()
    a = _embed(gnn, gp, _graph(MLP((32, 32, 1)), seed=0))[1]
    b = _embed(gnn, gp, _graph(MLP((32, 32, 1)), seed=1))[1]
    np.testing.assert_array_equal(a, b)


def test_embedding_differs_between_architectures():
    gnn, gp = _gnn()
    graphs = [_graph(MLP((32, 32, 1))), _graph(MLP((64, 1))), _graph(ResMLP())]
    embs = [np.asarray(_embed(gnn, gp, g)[1]) for g in graphs]
    for i in range(len(embs)):
        for j in range(i + 1, len(embs)):
            assert np.max(np.abs(embs[i] - embs[j])) > 1e-3, (i, j)


def _permute(graph: jraph.GraphsTuple, perm: np.ndarray) -> jraph.GraphsTuple:
    """The same graph with node i renamed perm[i] (edges relabelled, order shuffled)."""
    inv = np.empty_like(perm)
    inv[perm] = np.arange(len(perm))
    nodes = np.asarray(graph.nodes)[inv]
    senders = perm[np.asarray(graph.senders)]
    receivers = perm[np.asarray(graph.receivers)]
    e_order = np.random.default_rng(0).permutation(len(senders))
    return graph._replace(
        nodes=jnp.asarray(nodes),
        senders=jnp.asarray(senders[e_order]),
        receivers=jnp.asarray(receivers[e_order]),
        edges=jnp.asarray(np.asarray(graph.edges)[e_order]),
    )


def test_embedding_does_not_depend_on_node_order():
    gnn, gp = _gnn()
    g = _graph(ResMLP())
    perm = np.random.default_rng(1).permutation(int(g.n_node[0]))
    h, e = _embed(gnn, gp, g)
    h_p, e_p = _embed(gnn, gp, _permute(g, perm))
    np.testing.assert_allclose(e, e_p, rtol=1e-5, atol=1e-6)
    # node i became node perm[i]: its state moved with it
    np.testing.assert_allclose(np.asarray(h_p)[perm], h, rtol=1e-5, atol=1e-6)


def test_heads_respect_their_bounds():
    cfg = mj.MetaLearnerConfig(eta_max=0.05, tau_max=0.2)
    raw = jnp.array([[-1e30, -1e30, -1e30], [0.0, 0.0, 0.0], [1e30, 1e30, 1e30]])
    eta, lam, tau = networks.heads_to_params(raw, cfg)
    assert np.all((eta >= 0) & (eta <= 0.05))
    assert np.all((tau >= 0) & (tau <= 0.2))
    assert np.all(lam >= 0)
    np.testing.assert_allclose(eta[1], 0.025)
    np.testing.assert_allclose(tau[1], 0.1)


def test_initial_outputs_follow_the_configured_head_biases():
    cfg = mj.MetaLearnerConfig(lstm_hidden=8, gnn_hidden=8, init_eta=0.25, init_lam=1e-2, init_tau=0.5)
    meta = mj.init_meta_params(jax.random.key(0), cfg)
    bias = meta["params"]["heads"]["bias"]
    eta, lam, tau = networks.heads_to_params(bias, cfg)
    np.testing.assert_allclose([eta / cfg.eta_max, lam, tau / cfg.tau_max], [0.25, 1e-2, 0.5], rtol=1e-5)


def test_film_gives_tensors_of_one_network_different_conditioning():
    cfg = mj.MetaLearnerConfig(lstm_hidden=8, gnn_hidden=8)
    meta = mj.init_meta_params(jax.random.key(0), cfg)
    params = MLP((8, 8, 1)).init(jax.random.key(0), jnp.ones((1, 3)))["params"]
    tx = mj.mapa(meta, cfg)
    gamma, beta, shift = tx.init(params).film
    # kernels of different layers get different FiLM coefficients
    assert np.max(np.abs(np.asarray(beta[1]) - np.asarray(beta[3]))) > 0


def test_film_heads_start_at_the_configured_outputs_and_shift_each_tensor():
    cfg = mj.MetaLearnerConfig(lstm_hidden=8, gnn_hidden=8, film_heads=True)
    meta = mj.init_meta_params(jax.random.key(0), cfg)
    plain = mj.init_meta_params(jax.random.key(0), dataclasses.replace(cfg, film_heads=False))
    params = MLP((8, 8, 1)).init(jax.random.key(0), jnp.ones((1, 3)))["params"]
    # zero at init: the same first outputs as without the shift
    state = mj.mapa(meta, cfg).init(params)
    np.testing.assert_array_equal(state.film[2], 0.0)
    ref = mj.mapa(plain, dataclasses.replace(cfg, film_heads=False)).init(params)
    for name in ("eta", "lam", "tau"):
        chex.assert_trees_all_close(getattr(state, name), getattr(ref, name))
    # a nonzero kernel moves each tensor's raw outputs by its own conditioning
    kernel = meta["params"]["head_shift"]["kernel"]
    meta = {"params": {**meta["params"], "head_shift": {"kernel": jnp.ones_like(kernel)}}}
    shift = np.asarray(mj.mapa(meta, cfg).init(params).film[2])
    assert shift.shape == (len(jax.tree.leaves(params)), 3)
    assert np.ptp(shift[:, 0]) > 0


def test_film_heads_receive_a_meta_gradient(unrolled_loss):
    cfg = mj.MetaLearnerConfig(lstm_hidden=8, gnn_hidden=8, film_heads=True, direction="adam")
    meta = mj.init_meta_params(jax.random.key(0), cfg)
    model = MLP((8, 8, 1))
    params = model.init(jax.random.key(0), jnp.ones((1, 3)))["params"]
    x = jax.random.normal(jax.random.key(1), (32, 3))
    y = jnp.sum(x, -1, keepdims=True)

    def loss_fn(p):
        return jnp.mean((model.apply({"params": p}, x) - y) ** 2)

    grad = jax.grad(lambda m: unrolled_loss(m, cfg, params, loss_fn, 3))(meta)["params"]["head_shift"]["kernel"]
    assert np.all(np.isfinite(grad)) and float(jnp.abs(grad).sum()) > 0
