"""Configuration of the MAPA meta-learner (one frozen dataclass, validated)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = ["MetaLearnerConfig", "DIRECTIONS", "OPERATORS", "learned_optimizer_config"]

DIRECTIONS = ("sgd", "adam")
# "none" is the generic learned optimizer (no prox): the paper's LearnedOpt baseline.
OPERATORS = ("paper", "huber", "soft_threshold", "elastic_net", "none")


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
      eta_max: upper bound of the step size, ``eta = sigmoid(.) * eta_max``
        (paper: 0.01).
      tau_max: upper bound of the threshold, ``tau = sigmoid(.) * tau_max``
        (paper: 0.1).
      use_architecture: condition on the GNN embedding of the architecture
        through FiLM. False gives the generic learned optimizer (no GNN, no FiLM).
      film_heads: besides FiLM on the LSTM output (Eq. 20), add a per-tensor
        shift computed from the same conditioning input (``e_A``, the tensor's
        node state and its static features) directly to the three head
        outputs, starting at zero. Ours, not the paper's: through FiLM alone an
        architecture reaches eta, lambda and tau only through the product of two
        near-zero initializations (FiLM's and the heads'), so a meta-learner
        learns per-architecture values slowly. Needs ``use_architecture``.
      init_eta: initial ``eta / eta_max`` (sets the head's bias), in (0, 1).
      init_lam: initial ``lam`` (sets the head's bias), > 0.
      init_tau: initial ``tau / tau_max`` (sets the head's bias), in (0, 1).
      b1, b2, eps: Adam moments of the ``"adam"`` direction.
    """

    direction: str = "sgd"
    operator: str = "huber"
    window: int = 20
    lstm_hidden: int = 256
    gnn_hidden: int = 128
    gnn_rounds: int = 3
    eta_max: float = 0.01
    tau_max: float = 0.1
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
        for name in ("window", "lstm_hidden", "gnn_hidden", "gnn_rounds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(name, value, "an integer >= 1")
        for name in ("eta_max", "tau_max", "init_lam", "eps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise bad(name, value, "a finite number > 0")
        for name in ("init_eta", "init_tau"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < 1):
                raise bad(name, value, "in the open interval (0, 1)")
        for name in ("b1", "b2"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise bad(name, value, "in [0, 1)")
        for name in ("use_architecture", "film_heads"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, getattr(self, name), "a bool")
        if self.film_heads and not self.use_architecture:
            raise ValueError("MetaLearnerConfig.film_heads=True needs use_architecture=True (it shifts the "
                             "heads by the architecture conditioning).")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for checkpoints and provenance files)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MetaLearnerConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"MetaLearnerConfig: unknown fields {unknown}.")
        return cls(**d)


def learned_optimizer_config(**overrides: Any) -> MetaLearnerConfig:
    """The generic learned optimizer baseline (the paper's "LearnedOpt" column).

    The same LSTM and features, emitting per-tensor step sizes, with no prox
    (``operator="none"``) and no architecture input (``use_architecture=False``).
    """
    return MetaLearnerConfig(**{"operator": "none", "use_architecture": False, **overrides})
