"""Configuration of the MAPA meta-learner (one frozen dataclass, validated)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

__all__ = ["MetaLearnerConfig", "DIRECTIONS", "OPERATORS", "PARAMETERIZATIONS", "learned_optimizer_config"]

DIRECTIONS = ("sgd", "adam")
# "none" is the generic learned optimizer (no prox): the paper's LearnedOpt baseline.
OPERATORS = ("paper", "huber", "soft_threshold", "elastic_net", "none")
# How the heads' outputs become (eta, lam, tau): the paper's fixed bounds
# (Eq. 21-23) or a learned factor on a scale-free base step.
PARAMETERIZATIONS = ("paper", "relative", "distance")


@dataclasses.dataclass(frozen=True)
class MetaLearnerConfig:
    """Architecture and output bounds of the MAPA meta-learner.

    Attributes:
      direction: ``"sgd"``, the paper's Eq. 14 (``z = p - eta * g``), or
        ``"adam"``, an Adam-preconditioned direction with the learned per-tensor
        step (``z = p - eta * m_hat / d``, prox step ``eta / d``).
      operator: the prox applied to ``z``: ``"paper"`` (Eq. 12 as printed:
        ``smoothed_shrinkage(z, tau, lam)``), ``"huber"`` (the corrected
        operator, ``huber_shrinkage(z, tau, lam, eta=step)``),
        ``"soft_threshold"`` (threshold ``step * lam``), ``"elastic_net"``
        (``l1 = step * lam``, ``l2 = step * tau``) or ``"none"`` (no prox).
      window: number k of recent steps whose per-tensor statistics feed the
        features (paper: 20).
      lstm_hidden: LSTM hidden units (paper: 256).
      gnn_hidden: GNN hidden size (paper: 128).
      gnn_rounds: message-passing rounds K (paper: 3).
      parameterization: how the three head outputs ``(h_eta, h_lam, h_tau)``
        become the proximal parameters of a tensor.

        ``"paper"`` (Eq. 21-23): ``eta = sigmoid(h_eta) * eta_max``,
        ``lam = softplus(h_lam)``, ``tau = sigmoid(h_tau) * tau_max``: one
        fixed step-size range for every task.

        ``"relative"``: a bounded learned factor on a scale-free base step,
        ``eta = b * exp(eta_range * tanh(h_eta))`` with the base ``b =
        base_step * s`` for the ``"adam"`` direction (whose direction is of
        unit scale) and ``b = base_step * s / rms(g)`` for ``"sgd"``
        (normalized gradient steps), where ``s = max(rms(p), 0.1 * mean over
        tensors of rms(p), 1e-3)`` is the tensor's own scale (the floor
        serves tensors that start at zero, such as biases); the threshold is
        relative too, ``tau = sigmoid(h_tau) * tau_max * s``; ``lam =
        softplus(h_lam)`` as in the paper. At initialization (``h_eta = 0``)
        the step is the base step: each step moves a tensor by about
        ``base_step`` of its RMS, whatever the parameterization of the
        model, and meta-training learns factors within ``exp(+-eta_range)``.
        ``rms`` comes from the same subsample as the features' statistics.

        ``"distance"`` (``direction="adam"`` only): the base step is a
        Prodigy-style estimate of the distance to the solution (Mishchenko and
        Defazio, 2023), one scalar ``d`` for the whole model, ``eta = d * c *
        exp(eta_range * tanh(h_eta))`` with ``c`` Adam's bias correction; the
        moments are weighted by ``d`` as in Prodigy, and ``d`` starts at
        ``1e-6`` and only grows. With the heads at zero and
        ``operator="none"`` the learner's steps are
        ``optax.contrib.prodigy()``'s (tested in float64); the learned factor
        and the prox act on top. ``tau`` is relative to each tensor's scale
        as with ``"relative"``. The state holds two more floats per parameter
        (the initial parameters and Prodigy's weighted gradient sum); the
        estimate is a statistic of the trajectory, not differentiated
        through in meta-training. See ``distance_sample`` for a cheaper,
        approximate estimate.
      distance_sample: ``"distance"``: how many elements of each tensor the
        distance estimate reads. 0 (the default): all of them, Prodigy's
        ``d`` exactly; the estimate then reduces ``<g, x_0 - x>`` and
        ``||s||_1`` over every parameter each step and keeps two floats per
        parameter. ``n > 0``: at most ``n`` per tensor, the same subsample
        as the features' statistics (evenly spaced contiguous blocks; all of a
        tensor of at most ``n`` elements), each tensor's sampled sums scaled
        by its size over its sample's: an approximation of Prodigy's ``d``
        (exact where every tensor has at most ``n`` elements) whose cost and
        state are ``O(n)`` per tensor, not per parameter
        (``features.SAMPLE_SIZE``, 4096, is a natural choice). Unused by the
        other parameterizations.
      distance_growth_steps: ``"distance"``: ``d`` may grow during the first
        this many steps only and is held after them; 0 (the default): it may
        grow at every step, as in Prodigy. At long horizons the estimate can
        keep growing after the model has converged (on a policy-gradient task,
        whose optimum is at infinite weights, or with the prox; README,
        Benchmarks), and the step grows with it until training collapses.
      distance_factor_after_growth: ``"distance"`` with ``distance_growth_steps
        = N > 0``: the learned factor on eta acts only after step ``N``; during
        the first ``N`` steps eta is the base step ``d c`` (Prodigy's, factor
        1) while ``d`` grows, and after them ``d`` is held and eta is ``d c``
        times the learned factor. False (the default): the factor acts from
        the first step, and a factor below 1 also slows ``d``'s growth (the
        estimate grows only as fast as the iterates move), which compounds.
        ``lam`` and ``tau`` are learned from the first step either way.
      eta_max: ``"paper"``: upper bound of the step size, ``eta = sigmoid(.) *
        eta_max`` (paper: 0.01). Unused by ``"relative"`` and ``"distance"``.
      tau_max: upper bound of the threshold, ``tau = sigmoid(.) * tau_max``
        (paper: 0.1); with ``"relative"`` and ``"distance"``, as a fraction of the tensor's scale.
      base_step: ``"relative"``: the base step as a fraction of a tensor's RMS.
      eta_range: ``"relative"``, ``"distance"``: the learned factor lies in
        ``[exp(-eta_range), exp(eta_range)]`` (default: a decade each way).
      horizon_aware: two more features, whether the length of training is
        known and the fraction of it done (``mapa(..., total_steps=T)``), so
        that a learner can learn warm-up and decay shapes that stretch with
        the run. Without ``total_steps`` both are 0: the learner then sees only
        horizon-free features.
      use_architecture: condition on the GNN embedding of the architecture
        through FiLM. False gives the generic learned optimizer (no GNN, no FiLM).
      film_heads: besides FiLM on the LSTM output (Eq. 20), add a per-tensor
        shift computed from the same conditioning input (``e_A``, the tensor's
        node state and its static features) directly to the three head
        outputs, starting at zero. Ours, not the paper's: through FiLM alone an
        architecture reaches eta, lambda and tau only through the product of two
        near-zero initializations (FiLM's and the heads'), so a meta-learner
        learns per-architecture values slowly. Needs ``use_architecture``.
      init_eta: ``"paper"``: initial ``eta / eta_max`` (sets the head's bias),
        in (0, 1). ``"relative"`` and ``"distance"`` start at factor 1 (the base step).
      init_lam: initial ``lam`` (sets the head's bias), > 0.
      init_tau: initial ``tau / tau_max`` (sets the head's bias), in (0, 1).
      b1, b2, eps: Adam moments of the ``"adam"`` direction.

    Raises:
      ValueError: naming the field, for a value of the wrong type (a string,
        or a bool where a number is expected) or out of range.
    """

    direction: str = "sgd"
    operator: str = "huber"
    window: int = 20
    lstm_hidden: int = 256
    gnn_hidden: int = 128
    gnn_rounds: int = 3
    parameterization: str = "paper"
    distance_sample: int = 0
    distance_growth_steps: int = 0
    distance_factor_after_growth: bool = False
    eta_max: float = 0.01
    tau_max: float = 0.1
    base_step: float = 1e-2
    eta_range: float = math.log(10.0)
    horizon_aware: bool = False
    use_architecture: bool = True
    film_heads: bool = False
    init_eta: float = 0.5
    init_lam: float = 1e-3
    init_tau: float = 0.1
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        def bad(field: str, value: Any, expected: str) -> ValueError:
            return ValueError(f"MetaLearnerConfig.{field} must be {expected}, got {value!r}.")

        if self.direction not in DIRECTIONS:
            raise bad("direction", self.direction, f"one of {DIRECTIONS}")
        if self.operator not in OPERATORS:
            raise bad("operator", self.operator, f"one of {OPERATORS}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise bad("parameterization", self.parameterization, f"one of {PARAMETERIZATIONS}")
        if self.parameterization == "distance" and self.direction != "adam":
            raise ValueError(f'MetaLearnerConfig.parameterization="distance" needs direction="adam" (its base '
                             f'step scales Adam\'s direction), got direction={self.direction!r}.')
        for name in ("window", "lstm_hidden", "gnn_hidden", "gnn_rounds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(name, value, "an integer >= 1")
        for name, zero in (("distance_sample", "the exact estimate"), ("distance_growth_steps", "no limit")):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad(name, value, f"an integer >= 0 (0: {zero})")
        for name in ("eta_max", "tau_max", "init_lam", "eps", "base_step", "eta_range"):
            value = getattr(self, name)
            if not (_is_real(value) and math.isfinite(value) and value > 0):
                raise bad(name, value, "a finite number > 0")
        for name in ("init_eta", "init_tau"):
            value = getattr(self, name)
            if not (_is_real(value) and 0 < value < 1):
                raise bad(name, value, "in the open interval (0, 1)")
        for name in ("b1", "b2"):
            value = getattr(self, name)
            if not (_is_real(value) and 0 <= value < 1):
                raise bad(name, value, "in [0, 1)")
        for name in ("use_architecture", "film_heads", "horizon_aware", "distance_factor_after_growth"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, getattr(self, name), "a bool")
        if self.distance_factor_after_growth and not (self.parameterization == "distance"
                                                      and self.distance_growth_steps > 0):
            raise ValueError(
                "MetaLearnerConfig.distance_factor_after_growth=True needs parameterization=\"distance\" and "
                f"distance_growth_steps > 0 (the step after which the factor acts), got parameterization="
                f"{self.parameterization!r}, distance_growth_steps={self.distance_growth_steps!r}."
            )
        if self.film_heads and not self.use_architecture:
            raise ValueError("MetaLearnerConfig.film_heads=True needs use_architecture=True (it shifts the "
                             "heads by the architecture conditioning).")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for checkpoints and provenance files)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MetaLearnerConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error.

        Raises:
          TypeError: ``d`` is not a dict.
          ValueError: an unknown field, or a field with a bad value (the
            message names it).
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"MetaLearnerConfig.from_dict: d must be a dict of fields, got {type(d).__name__} "
                            f"{d!r:.60}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"MetaLearnerConfig: unknown fields {unknown}.")
        return cls(**d)


def _is_real(value: Any) -> bool:
    """A real number (int or float, not a bool or a string)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def learned_optimizer_config(**overrides: Any) -> MetaLearnerConfig:
    """The generic learned optimizer baseline (the paper's "LearnedOpt" column).

    The same LSTM and features, emitting per-tensor step sizes, with no prox
    (``operator="none"``) and no architecture input (``use_architecture=False``).
    """
    return MetaLearnerConfig(**{"operator": "none", "use_architecture": False, **overrides})
