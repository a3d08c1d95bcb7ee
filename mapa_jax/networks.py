"""Flax modules of the MAPA meta-learner: architecture GNN, trajectory LSTM, FiLM, heads.

Paper mapping (000_2d7d8b054c4bbeae.txt, Section IV):

* :class:`ArchitectureGNN`: Eq. 8-10. Node and edge features are embedded, then
  K rounds of message passing: messages ``m = MLP2([h_sender || e])`` (Eq. 9),
  summed at the receiver and combined ``h <- LayerNorm(h + MLP2([h || sum m]))``
  (Eq. 8; the residual and layer norm are ours, for stable training). Messages
  travel both ways along each edge, with a direction bit on the edge, so a layer
  hears from its inputs and from its consumers. ``e_A`` is the mean of the final
  node states (Eq. 10).
* :class:`MetaLearner`: per tensor, an LSTM over the features of
  :mod:`mapa_jax.features` (Eq. 19; shared weights, layer norm on the output),
  FiLM (Eq. 20) whose ``gamma, beta`` come from ``[e_A || h_node || static]``,
  so that tensors of one network get different parameters, and the bounded
  heads of Eq. 21-23. With ``film_heads`` the same conditioning input also
  shifts the three head outputs directly (ours; see
  :class:`~mapa_jax.config.MetaLearnerConfig`).

The conditioning (GNN + FiLM coefficients) runs once per optimizer ``init``;
``step`` runs every update and costs one small LSTM step per tensor.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from mapa_jax.config import MetaLearnerConfig
from mapa_jax.features import NUM_FEATURES

Array = jax.Array

__all__ = ["ArchitectureGNN", "MetaLearner", "NUM_STATIC", "heads_to_params", "static_features"]

NUM_STATIC = 3  # per-tensor static conditioning: prox mask, log size, ndim


def static_features(shapes: Sequence[tuple[int, ...]], prox_mask: Sequence[bool]) -> Array:
    """``(n, NUM_STATIC)`` static description of each tensor for the FiLM input."""
    rows = [
        [float(m), math.log1p(math.prod(s)) / 15.0, len(s) / 4.0]
        for s, m in zip(shapes, prox_mask)
    ]
    return jnp.asarray(rows, jnp.float32).reshape(len(rows), NUM_STATIC)


class _MLP(nn.Module):
    features: Sequence[int]

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for i, f in enumerate(self.features):
            x = nn.Dense(f)(x)
            if i < len(self.features) - 1:
                x = nn.gelu(x)
        return x


class ArchitectureGNN(nn.Module):
    """Message passing over an architecture graph; returns node states and ``e_A``."""

    hidden: int = 128
    rounds: int = 3

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple) -> tuple[Array, Array]:
        nodes = jnp.asarray(graph.nodes, jnp.float32)
        n_nodes = nodes.shape[0]
        h = nn.LayerNorm()(nn.Dense(self.hidden)(nodes))
        edges = jnp.asarray(graph.edges, jnp.float32)
        n_edges = edges.shape[0]
        # Both directions, with a direction bit: forward 0, backward 1.
        direction = jnp.concatenate([jnp.zeros((n_edges, 1)), jnp.ones((n_edges, 1))])
        e = nn.Dense(self.hidden)(jnp.concatenate([jnp.concatenate([edges, edges]), direction], -1))
        senders = jnp.concatenate([graph.senders, graph.receivers])
        receivers = jnp.concatenate([graph.receivers, graph.senders])
        for k in range(self.rounds):
            m = _MLP((self.hidden, self.hidden), name=f"message_{k}")(
                jnp.concatenate([h[senders], e], -1)
            )
            agg = jraph.segment_sum(m, receivers, num_segments=n_nodes)
            h = nn.LayerNorm(name=f"norm_{k}")(
                h + _MLP((self.hidden, self.hidden), name=f"update_{k}")(jnp.concatenate([h, agg], -1))
            )
        return h, jnp.mean(h, axis=0)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class MetaLearner(nn.Module):
    """The MAPA meta-learner. ``condition`` once per init, ``step`` every update."""

    config: MetaLearnerConfig

    def setup(self) -> None:
        c = self.config
        if c.use_architecture:
            self.gnn = ArchitectureGNN(c.gnn_hidden, c.gnn_rounds)
            # FiLM starts close to the identity (gamma ~ 1, beta ~ 0).
            self.film = nn.Dense(
                2 * c.lstm_hidden,
                kernel_init=nn.initializers.variance_scaling(0.01, "fan_in", "normal"),
                name="film",
            )
            if c.film_heads:
                # Starts at zero: the first outputs are still the configured init_*.
                self.head_shift = nn.Dense(3, kernel_init=nn.initializers.zeros, use_bias=False, name="head_shift")
        self.input_norm = nn.LayerNorm(name="input_norm")
        self.lstm = nn.OptimizedLSTMCell(c.lstm_hidden, name="lstm")
        self.output_norm = nn.LayerNorm(name="output_norm")
        # "relative" and "distance" start at the base step: tanh(0) = 0, a factor of 1.
        eta_bias = _logit(c.init_eta) if c.parameterization == "paper" else 0.0
        bias = jnp.array([eta_bias, _inverse_softplus(c.init_lam), _logit(c.init_tau)])
        self.heads = nn.Dense(
            3,
            kernel_init=nn.initializers.normal(1e-2),
            bias_init=lambda *_: bias,
            name="heads",
        )

    def condition(
        self, graph: jraph.GraphsTuple | None, leaf_nodes: Array, static: Array
    ) -> tuple[Array, Array, Array]:
        """FiLM coefficients ``(gamma, beta)``, each ``(n_tensors, lstm_hidden)``,
        and the head shift ``(n_tensors, 3)`` (zeros without ``film_heads``).

        Args:
          graph: the architecture graph (ignored without ``use_architecture``).
          leaf_nodes: ``(n_tensors,)`` node index of each tensor's module.
          static: ``(n_tensors, NUM_STATIC)`` from :func:`static_features`.
        """
        n = static.shape[0]
        hidden = self.config.lstm_hidden
        if not self.config.use_architecture:
            return jnp.ones((n, hidden)), jnp.zeros((n, hidden)), jnp.zeros((n, 3))
        node_states, e_arch = self.gnn(graph)
        cond = jnp.concatenate(
            [jnp.broadcast_to(e_arch, (n, e_arch.shape[-1])), node_states[leaf_nodes], static], -1
        )
        film = self.film(cond)
        shift = self.head_shift(cond) if self.config.film_heads else jnp.zeros((n, 3))
        return 1.0 + film[:, :hidden], film[:, hidden:], shift

    def step(
        self, carry: tuple[Array, Array], features: Array, gamma: Array, beta: Array, shift: Array
    ) -> tuple[tuple[Array, Array], Array]:
        """One LSTM step for all tensors; returns the new carry and raw head outputs (n, 3)."""
        carry, h = self.lstm(carry, self.input_norm(features))
        h = gamma * self.output_norm(h) + beta
        return carry, self.heads(h) + shift

    def __call__(self, graph, leaf_nodes, static, features):
        """Runs ``condition`` and one ``step`` (used to initialize all parameters)."""
        gamma, beta, shift = self.condition(graph, leaf_nodes, static)
        n = features.shape[0]
        zeros = jnp.zeros((n, self.config.lstm_hidden))
        return self.step((zeros, zeros), features, gamma, beta, shift)


def heads_to_params(
    raw: Array,
    config: MetaLearnerConfig,
    eta_base: Optional[Array] = None,
    scale: Optional[Array] = None,
) -> tuple[Array, Array, Array]:
    """The heads' raw outputs ``(..., 3)`` as ``(eta, lam, tau)`` (see ``MetaLearnerConfig.parameterization``).

    ``"paper"`` (Eq. 21-23): ``eta = sigmoid * eta_max``, ``lam = softplus``,
    ``tau = sigmoid * tau_max``. ``"relative"`` and ``"distance"``: ``eta = eta_base *
    exp(eta_range * tanh)``, ``lam = softplus``, ``tau = sigmoid * tau_max *
    scale``, with ``eta_base`` and ``scale`` (the tensors' base steps and own
    scales, shaped like ``raw[..., 0]``) required.
    """
    if config.parameterization == "paper":
        eta = jax.nn.sigmoid(raw[..., 0]) * config.eta_max
        lam = jax.nn.softplus(raw[..., 1])
        tau = jax.nn.sigmoid(raw[..., 2]) * config.tau_max
        return eta, lam, tau
    lam = jax.nn.softplus(raw[..., 1])
    if eta_base is None or scale is None:
        raise ValueError(f"heads_to_params: parameterization={config.parameterization!r} needs eta_base and scale.")
    eta = eta_base * jnp.exp(config.eta_range * jnp.tanh(raw[..., 0]))
    tau = jax.nn.sigmoid(raw[..., 2]) * config.tau_max * scale
    return eta, lam, tau


def dummy_inputs(
    node_features: int, edge_features: int, num_features: int = NUM_FEATURES
) -> tuple[jraph.GraphsTuple, Array, Array, Array]:
    """A two-node graph and matching inputs, to initialize parameters."""
    graph = jraph.GraphsTuple(
        nodes=jnp.zeros((2, node_features)),
        edges=jnp.zeros((1, edge_features)),
        senders=jnp.array([0]),
        receivers=jnp.array([1]),
        n_node=jnp.array([2]),
        n_edge=jnp.array([1]),
        globals=jnp.zeros((1, 1)),
    )
    return graph, jnp.array([0, 1]), jnp.zeros((2, NUM_STATIC)), jnp.zeros((2, num_features))
