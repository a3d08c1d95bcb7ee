"""MAPA as an optax transform: ``mapa(meta_params, config) -> GradientTransformationExtraArgs``.

One update, top to bottom (see :func:`mapa`):

    grads, params, loss
      -> per-tensor statistics (one pass over g and p) and windowed features
      -> one LSTM step per tensor, FiLM-conditioned on the architecture
      -> (eta, lambda, tau) per tensor (Eq. 21-23)
      -> direction: g (Eq. 14) or Adam's m_hat / d
      -> z = p - eta * direction; p_new = prox(z) on masked tensors
      -> updates p_new - p

The architecture graph, its GNN embedding and the FiLM coefficients are
computed once, in ``init`` (:func:`conditioning`); the state stores the
coefficients.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax

from mapa_jax import architecture, features, networks
from mapa_jax import prox as prox_lib
from mapa_jax.config import MetaLearnerConfig
from mapa_jax.proximal_update import (
    DISTANCE_D0,
    MaskOrFn,
    adam_direction,
    as_compute_dtype,
    check_params,
    check_state_matches,
    check_state_type,
    distance_direction,
    gradients_finite,
    init_distance_state,
    proximal_updates,
    resolve_mask,
)

Array = jax.Array

__all__ = [
    "MapaState",
    "mapa",
    "init_meta_params",
    "meta_params_shape",
    "check_meta_params",
    "conditioning",
    "proximal_parameters",
]


class MapaState(NamedTuple):
    """State of :func:`mapa`; arrays only (safe under jit, scan, checkpoint).

    Attributes:
      count: finite steps taken.
      notfinite_count: steps skipped because gradients or loss were not finite.
      lstm: ``(c, h)``, each ``(n_tensors, lstm_hidden)``.
      film: ``(gamma, beta, shift)``: the architecture conditioning, computed
        at init; ``gamma, beta`` are ``(n_tensors, lstm_hidden)``, ``shift``
        ``(n_tensors, 3)`` (zeros unless ``config.film_heads``).
      history: ``(window, n_tensors, HISTORY_SIZE)`` per-tensor statistics of
        the last steps (never copies of tensors).
      loss_history: ``(window,)`` last losses.
      loss_first: the first loss seen.
      eta, lam, tau: trees shaped like params with one scalar per tensor: the
        proximal parameters of the last step (:func:`proximal_parameters`).
      mu, nu: Adam moments for ``direction="adam"``; empty tuples otherwise.
        For ``parameterization="distance"``, ``nu`` is the pair (second
        moment, :class:`~mapa_jax.proximal_update.DistanceState`: the
        Prodigy-style distance estimate; with ``config.distance_sample > 0``
        its ``params0`` and ``grad_sum`` hold only each tensor's subsample);
        kept inside ``nu`` so that the state of every other configuration
        has the layout of earlier versions (checkpoints written before still
        restore).
    """

    count: Array
    notfinite_count: Array
    lstm: tuple[Array, Array]
    film: tuple[Array, Array, Array]
    history: Array
    loss_history: Array
    loss_first: Array
    eta: Any
    lam: Any
    tau: Any
    mu: Any
    nu: Any


def _check_value(value: Any, where: str) -> None:
    """``value`` (the loss) must be None or a real scalar: a number or a 0-d array.

    Runs at trace time only (types, dtypes and shapes are static). Raises
    ``TypeError`` for a non-number (a string, a list, a bool) and
    ``ValueError`` for an array that is not 0-d.
    """
    if value is None:
        return
    if isinstance(value, (str, bytes)) or not isinstance(value, (int, float, np.ndarray, np.generic, jax.Array)):
        raise TypeError(
            f"{where}: value must be a scalar (the loss): a real number or a 0-d array, "
            f"got {type(value).__name__} {value!r:.60}."
        )
    dtype = jnp.result_type(value)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(
            f"{where}: value must be a scalar (the loss): a real number or a 0-d array, got dtype {dtype}."
        )
    if jnp.ndim(value) != 0:
        raise ValueError(
            f"{where}: value must be a scalar (the loss), got an array of shape {jnp.shape(value)}."
        )


def _check_key(key: Any, where: str) -> None:
    """``key`` must be a JAX PRNG key: ``jax.random.key(seed)`` or raw ``uint32`` key data (``jax.random.PRNGKey``)."""
    if isinstance(key, jax.Array):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.ndim == 0:
            return
        if key.dtype == jnp.uint32 and key.ndim == 1:  # raw key data (jax.random.PRNGKey)
            return
    raise TypeError(
        f"{where}: key must be a JAX PRNG key such as jax.random.key(0), got {type(key).__name__} "
        f"{getattr(key, 'dtype', '')}{list(jnp.shape(key)) if hasattr(key, 'shape') else ''}: {key!r:.60}."
    )


def _model(config: MetaLearnerConfig) -> networks.MetaLearner:
    return networks.MetaLearner(config)


def init_meta_params(key: Array, config: MetaLearnerConfig = MetaLearnerConfig()) -> Any:
    """Random meta-learner parameters for ``config`` (a pytree of float32 arrays).

    Raises:
      TypeError: ``key`` is not a JAX PRNG key, or ``config`` not a
        :class:`MetaLearnerConfig`.
    """
    if not isinstance(config, MetaLearnerConfig):
        raise TypeError(f"init_meta_params: config must be a MetaLearnerConfig, got {type(config).__name__}.")
    _check_key(key, "init_meta_params")
    inputs = networks.dummy_inputs(architecture.num_node_features(), architecture.num_edge_features(),
                                   features.num_features(config.horizon_aware))
    return _model(config).init(key, *inputs)


@functools.lru_cache(maxsize=32)
def meta_params_shape(config: MetaLearnerConfig) -> Any:
    """The tree of ``jax.ShapeDtypeStruct`` that :func:`init_meta_params` returns for ``config``.

    Computed once per config (no parameters are initialized): what restoring a
    checkpoint and checking meta-params against a config need.
    """
    if not isinstance(config, MetaLearnerConfig):
        raise TypeError(f"meta_params_shape: config must be a MetaLearnerConfig, got {type(config).__name__}.")
    return jax.eval_shape(lambda: init_meta_params(jax.random.key(0), config))


def check_meta_params(meta_params: Any, config: MetaLearnerConfig) -> None:
    """Raises ValueError, naming the first mismatch, if meta_params were not built for config."""
    expected = meta_params_shape(config)
    exp_def, got_def = jax.tree.structure(expected), jax.tree.structure(meta_params)
    if exp_def != got_def:
        exp_paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(expected)}
        got_paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(meta_params)}
        missing, extra = sorted(exp_paths - got_paths), sorted(got_paths - exp_paths)
        raise ValueError(
            "meta_params do not match the config (were they built for another config?): "
            f"missing {missing[:5]}, unexpected {extra[:5]}."
        )
    for (path, e), g in zip(jax.tree_util.tree_leaves_with_path(expected), jax.tree.leaves(meta_params)):
        if jnp.shape(g) != e.shape:
            raise ValueError(
                f"meta_params{jax.tree_util.keystr(path)} has shape {jnp.shape(g)} but the config "
                f"needs {e.shape} (were they built for another config?)."
            )


def conditioning(
    meta_params: Any,
    config: MetaLearnerConfig,
    graph: Optional[jraph.GraphsTuple],
    params: optax.Params,
    *,
    mask: MaskOrFn = None,
) -> tuple[Array, Array, Array]:
    """The architecture conditioning ``(gamma, beta, shift)`` that ``mapa(...).init`` stores in ``film``.

    The GNN embedding of the architecture graph and, per tensor, the FiLM
    coefficients of Eq. 20 (and the heads' shift of ``config.film_heads``),
    from the tensor's node state and its static features (shape, prox mask).
    A pure function of ``meta_params``: differentiable in them, so that a
    truncated unroll can recompute the conditioning of a stored state from
    the current meta-params.

    Args:
      meta_params: meta-learner parameters built for ``config`` (may be traced).
      config: the :class:`MetaLearnerConfig`.
      graph: the architecture graph (as in :func:`mapa`); None: derived from
        the params tree.
      params: the optimizee's params (only their tree, shapes and dtypes are
        read).
      mask: the prox mask, as in :func:`mapa` (default: tensors with ``ndim >= 2``).

    Returns:
      ``(gamma, beta, shift)``: ``gamma, beta`` of shape ``(n_tensors,
      lstm_hidden)``, ``shift`` ``(n_tensors, 3)`` (zeros unless
      ``config.film_heads``), float32; equal to ``mapa(meta_params, config,
      graph, mask=mask).init(params).film``.

    Raises:
      TypeError, ValueError: as ``mapa`` and its ``init`` do for a bad config,
        meta_params, graph or params.
    """
    if not isinstance(config, MetaLearnerConfig):
        raise TypeError(f"conditioning: config must be a MetaLearnerConfig, got {type(config).__name__}.")
    check_meta_params(meta_params, config)
    return _conditioning(_model(config), meta_params, graph, params, mask)


def _conditioning(
    model: networks.MetaLearner,
    meta_params: Any,
    graph: Optional[jraph.GraphsTuple],
    params: optax.Params,
    mask: MaskOrFn,
) -> tuple[Array, Array, Array]:
    """:func:`conditioning` once config and meta_params are checked."""
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("mapa: params has no arrays.")
    check_params(params, params, "mapa")
    g = architecture.architecture_graph(params) if graph is None else graph
    if not isinstance(g, jraph.GraphsTuple):
        raise TypeError(f"mapa: graph must be a jraph.GraphsTuple, got {type(g).__name__}.")
    if not isinstance(g.nodes, jax.core.Tracer):
        architecture.check_graph_matches_params(g, params)
    leaf_nodes = jnp.asarray(architecture.module_index(params), jnp.int32)
    prox_mask = resolve_mask(mask, params, "mapa")
    static = networks.static_features([jnp.shape(x) for x in leaves], prox_mask)
    return model.apply(meta_params, g, leaf_nodes, static, method="condition")


def _operator(config: MetaLearnerConfig):
    """The prox(z, (step, lam, tau)) of config.operator; None for "none"."""
    op = config.operator
    if op == "none":
        return None
    if op == "paper":
        return lambda z, a: prox_lib.smoothed_shrinkage(z, a[2], a[1])
    if op == "huber":
        return lambda z, a: prox_lib.huber_shrinkage(z, a[2], a[1], eta=a[0])
    if op == "soft_threshold":
        return lambda z, a: prox_lib.soft_threshold(z, a[0] * a[1])
    return lambda z, a: prox_lib.elastic_net(z, a[0] * a[1], a[0] * a[2])  # elastic_net


def proximal_parameters(state: MapaState) -> dict[str, Any]:
    """The last step's ``{"eta": tree, "lam": tree, "tau": tree}``, one scalar per tensor."""
    if not isinstance(state, MapaState):
        found = _find_mapa_state(state)
        if found is None:
            raise TypeError(f"proximal_parameters: no MapaState in {type(state).__name__}.")
        state = found
    return {"eta": state.eta, "lam": state.lam, "tau": state.tau}


def _find_mapa_state(state: Any) -> Optional[MapaState]:
    """The MapaState inside a chain / masked / MultiSteps state, if any."""
    for node in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, MapaState)):
        if isinstance(node, MapaState):
            return node
    return None


def mapa(
    meta_params: Any,
    config: MetaLearnerConfig = MetaLearnerConfig(),
    graph: Optional[jraph.GraphsTuple] = None,
    *,
    mask: MaskOrFn = None,
    skip_nonfinite: bool = True,
    total_steps: Optional[int] = None,
) -> optax.GradientTransformationExtraArgs:
    """The MAPA optimizer: a meta-learned proximal update (paper Eq. 7, 14).

    .. math:: p_{t+1} = \\mathrm{prox}_{\\eta_t h_{\\lambda_t,\\tau_t}}(p_t - \\eta_t d_t)

    with ``(eta, lam, tau)`` emitted per tensor and per step by the meta-learner
    from the recent trajectory and the architecture, ``d_t`` the gradient
    (``direction="sgd"``) or Adam's preconditioned direction (``"adam"``, where
    the prox step is ``eta / (sqrt(v_hat) + eps)`` per coordinate).

    Args:
      meta_params: meta-learner parameters (:func:`init_meta_params`, a
        checkpoint, or ``load_pretrained``). May be traced (meta-training
        differentiates through this transform).
      config: the :class:`MetaLearnerConfig` the meta_params were built for.
      graph: the architecture graph (``mj.architecture_graph(apply_fn, params,
        *inputs)`` for the traced graph with skips and activations). None:
        derived from the params tree at ``init``.
      mask: which tensors get the prox (as in :func:`mapa_jax.proximal_gradient`);
        default: tensors with ``ndim >= 2``. Unmasked tensors take ``-eta * d``.
      skip_nonfinite: check every gradient entry (one extra read of the
        gradients, a plain sum per tensor) and turn a step with a non-finite
        gradient or loss into a zero update. False skips that pass: only a
        non-finite loss or sampled entry (the features' subsample) skips a
        step, and other non-finite entries reach the parameters as with plain
        optax optimizers (``optax.apply_if_finite`` guards them at the same
        cost as the check). The features never wait for the check. See
        ``benchmarks/overhead.py`` for what the pass costs.
      total_steps: the length of training, when known, for a learner with
        ``config.horizon_aware``: its features then include the fraction of
        training done, ``min((step + 1) / total_steps, 1)`` (1 at the last
        step; a run longer than ``total_steps`` keeps going with the fraction
        at 1). None: both horizon features are 0 (the learner sees only
        horizon-free features). A learner without ``horizon_aware`` has no
        such features, and giving it ``total_steps`` is an error. An integer
        0-d ``jax.Array`` (traced or not) is accepted too, so that one
        compiled program serves trajectories of different lengths (as
        meta-training runs them); a value <= 0 there means "not known" (both
        horizon features 0), as with None.

    Returns:
      An ``optax.GradientTransformationExtraArgs``. ``update(grads, state,
      params, *, value=None)`` needs params; ``value`` (the loss) feeds the loss
      features, which are masked without it. A step whose gradients or loss are
      not finite gives a zero update, leaves the state as it was and counts in
      ``state.notfinite_count``.

    Raises:
      TypeError: ``config`` is not a :class:`MetaLearnerConfig`; ``skip_nonfinite``
        is not a bool. ``init``: a ``graph`` that is not a ``jraph.GraphsTuple``,
        params that are not floating point. ``update``: ``value`` that is not
        a real number or 0-d array (a string, a list, a bool); a ``state`` that
        is not the :class:`MapaState` ``init`` returned.
      ValueError: ``meta_params`` not built for ``config``; a bad
        ``total_steps``. ``init``: params without arrays, a graph or mask that
        does not match the params. ``update``: no params, or gradients shaped
        unlike them; ``value`` with a shape other than ``()``; a state built
        for other params (its tree structure, or with ``direction="adam"`` its
        moments' shapes, differ from the params'). With ``direction="sgd"``
        the state holds one scalar per tensor, so a state for params of the
        same tree structure but other shapes is not detected.
    """
    if not isinstance(config, MetaLearnerConfig):
        raise TypeError(f"mapa: config must be a MetaLearnerConfig, got {type(config).__name__}.")
    check_meta_params(meta_params, config)
    if not isinstance(skip_nonfinite, (bool, np.bool_)):
        raise TypeError(f"mapa: skip_nonfinite must be True or False, got {type(skip_nonfinite).__name__} "
                        f"{skip_nonfinite!r}.")
    if total_steps is not None:
        if isinstance(total_steps, jax.Array):  # meta-training's per-trajectory T (may be traced)
            if total_steps.shape != () or not jnp.issubdtype(total_steps.dtype, jnp.integer):
                raise ValueError(f"mapa: total_steps as an array must be an integer scalar, got shape "
                                 f"{total_steps.shape} dtype {total_steps.dtype}.")
        elif isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)) or total_steps < 1:
            raise ValueError(f"mapa: total_steps must be a positive integer or None, got {total_steps!r}.")
        if not config.horizon_aware:
            raise ValueError(
                "mapa: total_steps was given but the config has horizon_aware=False: this learner has no "
                "horizon features (it was trained without them); leave total_steps=None."
            )
    model = _model(config)
    operator = _operator(config)
    relative = config.parameterization in ("relative", "distance")
    distance = config.parameterization == "distance"
    k = config.window
    adam = config.direction == "adam"

    def init_fn(params: optax.Params) -> MapaState:
        gamma, beta, shift = _conditioning(model, meta_params, graph, params, mask)
        n = len(jax.tree.leaves(params))
        zeros = jnp.zeros((n, config.lstm_hidden), jnp.float32)
        # Before any step the outputs are the heads' response to a zero LSTM state.
        raw = model.apply(meta_params, beta, method=lambda m, h: m.heads(h)) + shift
        if relative:  # the scales of the initial params (no gradient yet: the adam direction's base)
            leaves = jax.tree.leaves(params)
            scale = features.tensor_scale(features.tensor_statistics(leaves, leaves, jnp.zeros(n)))
            if distance:  # the first step's base: d_0 times the bias correction at t = 1
                base = jnp.full((n,), DISTANCE_D0 * np.sqrt(1.0 - config.b2) / (1.0 - config.b1), jnp.float32)
            else:
                base = config.base_step * scale
            eta, lam, tau = networks.heads_to_params(raw, config, base, scale)
        else:
            eta, lam, tau = networks.heads_to_params(raw, config)
        treedef = jax.tree.structure(params)
        moments = optax.tree.zeros_like(params) if adam else ()
        return MapaState(
            count=jnp.zeros([], jnp.int32),
            notfinite_count=jnp.zeros([], jnp.int32),
            lstm=(zeros, jnp.zeros_like(zeros)),
            film=(gamma, beta, shift),
            history=jnp.zeros((k, n, features.HISTORY_SIZE), jnp.float32),
            loss_history=jnp.zeros((k,), jnp.float32),
            loss_first=jnp.zeros([], jnp.float32),
            eta=treedef.unflatten(list(eta)),
            lam=treedef.unflatten(list(lam)),
            tau=treedef.unflatten(list(tau)),
            mu=moments,
            nu=(jax.tree.map(jnp.copy, moments), init_distance_state(params, config.distance_sample)) if distance
            else jax.tree.map(jnp.copy, moments),
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        check_params(updates, params, "mapa")
        # Trace-time checks only (types, tree structures, shapes): no device work.
        _check_value(value, "mapa.update")
        check_state_type(state, MapaState, "mapa.update")
        check_state_matches(state.eta, params, "mapa.update", "state.eta", shapes=False)
        if adam:
            check_state_matches(state.mu, params, "mapa.update", "state.mu")
        treedef = jax.tree.structure(params)
        g_leaves = treedef.flatten_up_to(updates)
        p_leaves = treedef.flatten_up_to(params)
        prox_mask = resolve_mask(mask, params, "mapa")
        prev_eta = jnp.stack(treedef.flatten_up_to(state.eta))
        prev_lam = jnp.stack(treedef.flatten_up_to(state.lam))
        prev_tau = jnp.stack(treedef.flatten_up_to(state.tau))

        # 1. Per-tensor statistics from a subsample. They are sanitized on
        # their own (a non-finite sampled entry or loss zeroes them: NaNs would
        # poison meta-gradients through the `where`s below even on discarded
        # steps), so that the meta-learner's work does not wait for the full
        # finiteness pass and can run alongside it.
        stats = features.tensor_statistics(g_leaves, p_leaves, prev_tau)
        finite = jnp.all(jnp.isfinite(stats))
        if value is not None:
            value = jnp.asarray(value, jnp.float32)
            finite = finite & jnp.isfinite(value)
            value = jnp.where(finite, value, 0.0)
        stats = jnp.where(finite, stats, 0.0)
        if skip_nonfinite:
            finite = finite & gradients_finite(g_leaves)

        # 2. Features over the window, 3. LSTM step with FiLM, 4. bounded heads.
        sizes = jnp.asarray([float(np.prod(jnp.shape(p))) for p in p_leaves], jnp.float32)
        if distance:  # the base step: Prodigy's distance estimate (one scalar for the model)
            scale = features.tensor_scale(stats)
            mu, nu, dist, d_base, numer, denom = distance_direction(
                updates, params, state.mu, *state.nu, state.count + 1,
                b1=config.b1, b2=config.b2, eps=config.eps, keep=finite, sample_size=config.distance_sample,
                growth_steps=config.distance_growth_steps,
            )
            nu = (nu, dist)
            eta_base = jnp.broadcast_to(d_base, scale.shape)
            eta_bound, tau_bound = eta_base * np.exp(config.eta_range), config.tau_max * scale
        elif relative:  # the base step and the bounds, from each tensor's own scale
            scale = features.tensor_scale(stats)
            eta_base = config.base_step * scale
            if not adam:  # normalized gradient steps
                rms_g = jnp.sqrt(stats[:, features.STATS.index("mean_sq_grad")])
                eta_base = eta_base / jnp.maximum(rms_g, 1e-30)
            eta_bound, tau_bound = eta_base * np.exp(config.eta_range), config.tau_max * scale
        else:
            eta_bound, tau_bound = config.eta_max, config.tau_max
        progress = has_horizon = None
        if total_steps is not None:
            has_horizon = jnp.asarray(total_steps) > 0  # an array's value <= 0: the length is not known
            progress = jnp.where(has_horizon, features.progress(state.count, jnp.maximum(total_steps, 1)), 0.0)
        feats, history, loss_history = features.trajectory_features(
            stats=stats,
            sizes=sizes,
            history=state.history,
            loss_history=state.loss_history,
            loss_first=state.loss_first,
            count=state.count,
            loss=value,
            prev_eta=prev_eta,
            prev_lam=prev_lam,
            prev_tau=prev_tau,
            prox_mask=jnp.asarray(prox_mask, jnp.float32),
            eta_max=eta_bound,
            tau_max=tau_bound,
            horizon_aware=config.horizon_aware,
            progress=progress,
            has_horizon=has_horizon,
        )
        lstm, raw = model.apply(meta_params, state.lstm, feats, *state.film, method="step")
        if relative:
            eta, lam, tau = networks.heads_to_params(raw, config, eta_base, scale)
            if config.distance_factor_after_growth:  # the base step while d may grow, then the factor on it
                eta = jnp.where(state.count + 1 > config.distance_growth_steps, eta, eta_base)
        else:
            eta, lam, tau = networks.heads_to_params(raw, config)

        # 5. Direction, 6. prox step on masked tensors.
        if distance:
            denom = treedef.flatten_up_to(denom)
            moves = [-e * m / d for e, m, d in zip(eta, treedef.flatten_up_to(numer), denom)]
            steps = [(e / d, l, ta) for e, d, l, ta in zip(eta, denom, lam, tau)]
        elif adam:
            # The moments are selected here (keep=finite, not with the rest of
            # the state below) so that the update reads the stored moments: one pass.
            mu, nu, m_hat, denom = adam_direction(
                updates, state.mu, state.nu, state.count + 1, b1=config.b1, b2=config.b2, eps=config.eps,
                keep=finite,
            )
            denom = treedef.flatten_up_to(denom)
            moves = [-e * m / d for e, m, d in zip(eta, treedef.flatten_up_to(m_hat), denom)]
            steps = [(e / d, l, ta) for e, d, l, ta in zip(eta, denom, lam, tau)]
        else:
            mu, nu = state.mu, state.nu
            moves = [-e * as_compute_dtype(g) for e, g in zip(eta, g_leaves)]
            steps = list(zip(eta, lam, tau))
        out = proximal_updates(treedef.unflatten(moves), params, steps, prox_mask, operator)

        # 7. A non-finite step changes nothing but the counter.
        out = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), out)

        def keep(new, old):  # in the state's dtypes (float32 statistics, also for float64 params)
            return jax.tree.map(lambda a, b: jnp.where(finite, a, b).astype(b.dtype), new, old)

        new_state = MapaState(
            count=state.count + finite.astype(jnp.int32),
            notfinite_count=state.notfinite_count + (~finite).astype(jnp.int32),
            lstm=keep(lstm, state.lstm),
            film=state.film,
            history=keep(history, state.history),
            loss_history=keep(loss_history, state.loss_history),
            loss_first=keep(features.first_loss(state.loss_first, state.count, value), state.loss_first),
            eta=keep(treedef.unflatten(list(eta)), state.eta),
            lam=keep(treedef.unflatten(list(lam)), state.lam),
            tau=keep(treedef.unflatten(list(tau)), state.tau),
            mu=mu,
            nu=nu,
        )
        return out, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
