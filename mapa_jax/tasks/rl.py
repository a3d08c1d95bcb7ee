"""Reinforcement-learning tasks: a policy-gradient loss on gymnax classic control.

A held-out *kind* of task (``kind="reinforcement"``): no meta-training family
draws from it, so the learned optimizer has never seen a loss like this one (a
stochastic estimate whose gradient is not the gradient of its value). Everything
runs offline: the environments are gymnax's pure-JAX classic-control dynamics.

Rollouts
    A policy (the zoo's :class:`~mapa_jax.tasks.models.MLP`, tanh by default)
    maps an observation to the logits of a categorical distribution over the
    discrete actions. One episode is ``length`` steps of a ``lax.scan`` calling
    gymnax's ``reset_env``/``step_env`` (no auto-reset); an episode's return
    counts only until its first termination: from then on the state is frozen,
    the actions do not count and the per-step reward is a constant (the
    reward's ``after_termination``). A batch is ``num_episodes`` episodes,
    ``vmap``-ed; :func:`policy_gradient_task`'s ``sample(key)`` returns their
    keys (the batch *is* the randomness: reset states, actions, transitions),
    so minibatches are drawn inside the optimizer's scan like any other task's.

Loss (positive, lower is better, in ``[0, 1]``)
    With per-step rewards in ``[r_lo, r_hi]`` the return ``R`` of ``L`` steps
    lies in ``[R_lo, R_hi] = [L r_lo, L r_hi]``, and the task's value is the
    normalized shortfall of the batch's mean return::

        value = (R_hi - mean_i R_i) / (R_hi - R_lo)              (CartPole: 1 - mean R / L)

    Its gradient is the REINFORCE estimate with reward-to-go ``G_it`` (the
    reward of steps ``t..L-1`` of episode ``i``) and a leave-one-out batch-mean
    baseline (the mean of the other episodes' ``G_jt``; unbiased, unlike a mean
    that includes the episode itself; equal to ``N/(N-1)`` times the deviation
    from the full batch mean), on the steps ``t`` before the first termination::

        A_it = N / (N - 1) * (G_it - mean_j G_jt)
        surrogate = -mean_i sum_t alive_it * sg(A_it) * log pi(a_it | s_it) / (R_hi - R_lo)

    so ``grad surrogate`` estimates ``grad E[value]`` (the advantages are not
    normalized: the scale of the gradient is that of the value). The two are
    combined with the stop-gradient trick::

        loss = sg(value) + (surrogate - sg(surrogate))

    whose forward value is ``value`` and whose gradient is ``grad surrogate``
    (``sg`` = ``jax.lax.stop_gradient``). The optimizer gets both through
    ``jax.value_and_grad(task.loss)``, as on every other task.

Evaluation
    ``evaluate(params, split)`` returns ``{"loss": value, "return": mean R,
    "steps_to_termination": mean steps to the first termination}`` over a
    fixed set of ``eval_episodes`` episodes per split, from keys derived from
    :data:`EVAL_SEED` and the split's index (a different set per split, the
    same on every call), with actions *sampled* from the policy (the
    stochastic policy the loss trains; fixed keys make it deterministic and
    give every optimizer the same episodes: common random numbers).

Rewards (:data:`REWARDS`)
    The registered tasks use dense rewards that a policy cannot max out,
    because the evaluation compares optimizers by ratios of final losses, and
    the environments' own rewards end at a loss of exactly 0 or never leave 1:

    ``("CartPole-v1", "env")``: gymnax's reward, 1 per step until the pole
    falls or the cart leaves the track (then 0): ``R`` in ``[0, L]``. Solved
    too fast to compare: with ``L = 200`` the shipped MAPA and Prodigy reach
    ``R = L`` on every evaluation episode (loss 0.0) within 50 steps.
    ``("CartPole-v1", "balance")``: the same episodes (same terminations),
    with the per-step reward ``1 - ((x / x_max)^2 + (theta / theta_max)^2) / 2``
    (clipped to ``[0, 1]``; ``x_max``, ``theta_max`` the termination
    thresholds): 1 only for a cart at the centre with an upright pole, so the
    loss keeps falling after the pole stays up (about 0.02 after 400 steps of
    Adam 1e-3, 0.002 with 1e-2). ``R`` in ``[0, L]``; the registered CartPole.
    ``("Acrobot-v1", "env")``: gymnax's -1 per step until the tip swings above
    the bar (then 0): ``R`` in ``[-L, 0]``. A random policy never reaches the
    bar in a few hundred steps (0 of 128 episodes of 200 or 500 steps at
    initialization), so every return is ``-L`` and the REINFORCE gradient is
    exactly zero.
    ``("Acrobot-v1", "height")``: the same swing-up on the same dynamics with
    the tip's height ``h = -cos q1 - cos(q1 + q2)`` in ``[-2, 2]`` as
    ``(h + 2) / 4`` in ``[0, 1]`` per step, and 1 per step from reaching the
    bar (gymnax's termination, ``h > 1``) on: ``R`` in ``[0, L]``. The
    registered Acrobot (a loss of about 0.3 after 50 steps; the bar cannot be
    reached at once, so the loss stays well above 0).

    Neither registered return is the environment's own; ``evaluate`` also
    reports ``steps_to_termination``, the mean number of steps up to and
    including the first termination (``L`` if none): CartPole-v1's own return,
    and minus Acrobot-v1's (up to the step that reaches the bar, which
    Acrobot-v1 does not charge).

gymnax is imported when a task is built (``import gymnax`` costs about 2 s),
not when this module is.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jraph

from mapa_jax.architecture import architecture_graph
from mapa_jax.tasks.base import SPLITS, Task
from mapa_jax.tasks.models import MLP
from mapa_jax.tasks.supervised import check_split, count_params

__all__ = ["EVAL_SEED", "KIND", "REWARDS", "Reward", "policy_gradient_task"]

Array = jax.Array

#: ``Task.kind`` of the tasks of this module.
KIND = "reinforcement"

#: Evaluation episodes of split ``s`` come from ``fold_in(key(EVAL_SEED), SPLITS.index(s))``.
EVAL_SEED = 7_000_003


def _acrobot_height(reward: Array, state: Any, params: Any) -> Array:
    """``(h + 2) / 4`` for the tip height ``h = -cos q1 - cos(q1 + q2)``; ignores gymnax's reward."""
    del reward, params
    h = -jnp.cos(state.joint_angle1) - jnp.cos(state.joint_angle1 + state.joint_angle2)
    return (h + 2.0) / 4.0


def _cartpole_balance(reward: Array, state: Any, params: Any) -> Array:
    """``1 - ((x / x_max)^2 + (theta / theta_max)^2) / 2``, clipped to ``[0, 1]``; ignores gymnax's reward."""
    del reward
    off = (state.x / params.x_threshold) ** 2 + (state.theta / params.theta_threshold_radians) ** 2
    return jnp.clip(1.0 - 0.5 * off, 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Reward:
    """The per-step reward of a task and its bounds (see the module docstring).

    Attributes:
      low, high: bounds of the per-step reward (``R`` lies in ``[L low, L high]``).
      after_termination: the per-step reward from the first termination on.
      transform: ``(gymnax reward, next state, env params) -> reward``; None: gymnax's reward.
      description: one line for ``Task.info["reward_description"]``.
    """

    low: float
    high: float
    after_termination: float
    transform: Callable[[Array, Any, Any], Array] | None = None
    description: str = ""


#: The rewards known per ``(gymnax env id, reward name)``.
REWARDS: dict[tuple[str, str], Reward] = {
    ("CartPole-v1", "env"): Reward(0.0, 1.0, 0.0, None, "gymnax's: 1 per step until termination"),
    ("CartPole-v1", "balance"): Reward(0.0, 1.0, 0.0, _cartpole_balance,
                                       "1 - ((x / x_max)^2 + (theta / theta_max)^2) / 2 per step until termination"),
    ("Acrobot-v1", "env"): Reward(-1.0, 0.0, 0.0, None, "gymnax's: -1 per step until the tip is above the bar"),
    ("Acrobot-v1", "height"): Reward(0.0, 1.0, 1.0, _acrobot_height,
                                     "tip height (h + 2) / 4 per step, 1 from reaching the bar on"),
}


def _architecture_name(widths: Sequence[int], activation: str) -> str:
    """``policy_mlp_tanh_2x32`` (equal widths) or ``policy_mlp_tanh_64x32``, as the zoo names MLPs."""
    widths = tuple(int(w) for w in widths)
    shape = f"{len(widths)}x{widths[0]}" if len(set(widths)) == 1 else "x".join(map(str, widths))
    return f"policy_mlp_{activation}_{shape}"


def policy_gradient_task(
    name: str,
    env_id: str,
    *,
    reward: str = "env",
    widths: Sequence[int] = (32, 32),
    activation: str = "tanh",
    length: int = 200,
    num_episodes: int = 16,
    eval_episodes: int = 32,
    info: Mapping[str, Any] | None = None,
) -> Task:
    """A :class:`Task`: REINFORCE on a gymnax environment with a discrete action space.

    Args:
      name: the task's name (``"cartpole/policy_mlp_tanh_2x32"``).
      env_id: a gymnax environment id with a key in :data:`REWARDS`.
      reward: the reward's name (``"env"``: gymnax's own).
      widths, activation: the policy MLP's hidden widths and activation.
      length: ``L``, the steps of every episode (at most the env's ``max_steps_in_episode``).
      num_episodes: ``N >= 2``, the episodes of one training batch (``sample``).
      eval_episodes: the episodes of each split's fixed evaluation set.
      info: extra entries for ``Task.info``.

    Returns:
      The task: ``init(key)`` the policy's ``"params"``; ``sample(key)`` the
      ``(N,)`` keys of a batch of episodes; ``loss(params, keys)`` the
      stop-gradient combination of the module docstring (value in ``[0, 1]``);
      ``evaluate(params, split)`` ``{"loss", "return", "steps_to_termination"}``
      on the split's fixed episodes. ``info`` adds ``"surrogate"``
      (``(params, keys) -> scalar``, the REINFORCE surrogate whose gradient
      ``loss`` has) and ``"episodes"`` (``(params, keys) -> (log_probs,
      rewards, alive)``, each ``(N, L)``).

    Raises:
      ValueError: for an unknown ``(env_id, reward)``, an env without discrete
        actions, ``length`` out of ``[1, max_steps_in_episode]``,
        ``num_episodes < 2`` or ``eval_episodes < 1``.
    """
    if (env_id, reward) not in REWARDS:
        raise ValueError(f"policy_gradient_task: unknown (env_id, reward) {(env_id, reward)!r}; "
                         f"known: {sorted(REWARDS)}.")
    spec = REWARDS[(env_id, reward)]
    import gymnax  # local: about 2 s to import, needed only once a task is built

    env, env_params = gymnax.make(env_id)
    space = env.action_space(env_params)
    if not hasattr(space, "n"):
        raise ValueError(f"policy_gradient_task: {env_id} has no discrete action space ({type(space).__name__}).")
    max_steps = int(env_params.max_steps_in_episode)
    if not isinstance(length, int) or not 1 <= length <= max_steps:
        raise ValueError(f"policy_gradient_task: length must be an integer in [1, {max_steps}] "
                         f"({env_id}'s max_steps_in_episode), got {length!r}.")
    if not isinstance(num_episodes, int) or num_episodes < 2:
        raise ValueError(f"policy_gradient_task: num_episodes must be an integer >= 2 "
                         f"(leave-one-out baseline), got {num_episodes!r}.")
    if not isinstance(eval_episodes, int) or eval_episodes < 1:
        raise ValueError(f"policy_gradient_task: eval_episodes must be an integer >= 1, got {eval_episodes!r}.")

    num_actions = int(space.n)
    policy = MLP(tuple(widths), num_actions, activation)
    obs_shape = tuple(env.observation_space(env_params).shape)
    example = jnp.zeros((1, *obs_shape), jnp.float32)
    r_lo, r_hi = length * spec.low, length * spec.high
    scale = r_hi - r_lo

    def init(key: Array) -> Any:
        return policy.init(key, example)["params"]

    def episode(params: Any, key: Array) -> tuple[Array, Array, Array]:
        """One episode: ``(log pi(a_t | s_t), r_t, alive_t)``, each ``(L,)``."""
        k_reset, k_steps = jax.random.split(key)
        obs, state = env.reset_env(k_reset, env_params)

        def step(carry, k):
            obs, state, alive = carry
            k_act, k_env = jax.random.split(k)
            logits = policy.apply({"params": params}, obs[None].astype(jnp.float32))[0]
            action = jax.random.categorical(k_act, logits)
            log_prob = jax.nn.log_softmax(logits)[action]
            obs_next, state_next, r, done, _ = env.step_env(k_env, state, action, env_params)
            if spec.transform is not None:
                r = spec.transform(r, state_next, env_params)
            r = jnp.where(alive, jnp.asarray(r, jnp.float32), spec.after_termination)
            # Frozen after the first termination (no auto-reset): finite inputs, no credit.
            obs_next, state_next = jax.tree.map(lambda new, old: jnp.where(alive, new, old),
                                                (obs_next, state_next), (obs, state))
            return (obs_next, state_next, jnp.logical_and(alive, jnp.logical_not(done))), (log_prob, r, alive)

        _, (log_probs, rewards, alive) = jax.lax.scan(step, (obs, state, jnp.bool_(True)),
                                                      jax.random.split(k_steps, length))
        return log_probs, rewards, alive.astype(jnp.float32)

    def episodes(params: Any, keys: Array) -> tuple[Array, Array, Array]:
        """``N`` episodes: ``(log_probs, rewards, alive)``, each ``(N, L)``."""
        return jax.vmap(episode, in_axes=(None, 0))(params, keys)

    def _value(returns: Array) -> Array:
        return (r_hi - jnp.mean(returns)) / scale

    def _value_and_surrogate(params: Any, keys: Array) -> tuple[Array, Array]:
        log_probs, rewards, alive = episodes(params, keys)
        to_go = jnp.cumsum(rewards[:, ::-1], axis=1)[:, ::-1]
        n = to_go.shape[0]
        advantage = jax.lax.stop_gradient(n / (n - 1) * (to_go - jnp.mean(to_go, axis=0)))
        surrogate = -jnp.mean(jnp.sum(alive * advantage * log_probs, axis=1)) / scale
        return _value(jnp.sum(rewards, axis=1)), surrogate

    def sample(key: Array) -> Array:
        return jax.random.split(key, num_episodes)

    def surrogate(params: Any, keys: Array) -> Array:
        return _value_and_surrogate(params, keys)[1]

    def loss(params: Any, keys: Array) -> Array:
        value, sur = _value_and_surrogate(params, keys)
        return jax.lax.stop_gradient(value) + (sur - jax.lax.stop_gradient(sur))

    @jax.jit
    def _evaluate(params: Any, index: Array) -> dict[str, Array]:
        keys = jax.random.split(jax.random.fold_in(jax.random.key(EVAL_SEED), index), eval_episodes)
        _, rewards, alive = episodes(params, keys)
        returns = jnp.sum(rewards, axis=1)
        return {"loss": _value(returns), "return": jnp.mean(returns),
                "steps_to_termination": jnp.mean(jnp.sum(alive, axis=1))}

    def evaluate(params: Any, split: str) -> dict[str, Array]:
        check_split(split)
        return _evaluate(params, SPLITS.index(split))  # the split's index is traced: one program for all

    abstract = jax.eval_shape(init, jax.random.key(0))

    @functools.cache
    def graph() -> jraph.GraphsTuple:
        return architecture_graph(policy.apply, {"params": abstract}, example)

    full_info = {"group": env_id, "env": env_id, "reward": reward, "reward_description": spec.description,
                 "return_bounds": (r_lo, r_hi), "length": length, "num_episodes": num_episodes,
                 "batch_size": num_episodes, "eval_episodes": eval_episodes, "observation_shape": obs_shape,
                 "num_actions": num_actions, "architecture": _architecture_name(widths, activation),
                 "metrics": ("loss", "return", "steps_to_termination"), "stochastic": True, "novelty": (("kind", KIND),),
                 "model": policy, "surrogate": surrogate, "episodes": episodes}
    full_info.update(info or {})
    return Task(name=name, kind=KIND, init=init, sample=sample, loss=loss, evaluate=evaluate,
                graph=graph, num_params=count_params(abstract), info=full_info)
