"""mapa_jax: meta-learned adaptive proximal optimization for JAX and optax.

Public API (see README.md)::

    import mapa_jax as mj
    mj.prox.huber_shrinkage(x, tau, lam, eta)      # proximal operators
    tx = mj.prox_adam(1e-3, l1=1e-4)               # proximal optimizers (optax)
    meta = mj.init_meta_params(key, mj.MetaLearnerConfig())
    tx = mj.mapa(meta)                              # the learned proximal optimizer
"""

from mapa_jax import prox
from mapa_jax.architecture import architecture_graph
from mapa_jax.config import MetaLearnerConfig, learned_optimizer_config
from mapa_jax.mapa import MapaState, init_meta_params, mapa, proximal_parameters
from mapa_jax.transforms import (
    ProxAdamState,
    ProximalGradientState,
    ProxRMSPropState,
    ProxStepState,
    default_mask,
    prox_adam,
    prox_rmsprop,
    prox_step,
    proximal_gradient,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "prox",
    "architecture_graph",
    "MetaLearnerConfig",
    "learned_optimizer_config",
    "MapaState",
    "init_meta_params",
    "mapa",
    "proximal_parameters",
    "proximal_gradient",
    "prox_adam",
    "prox_rmsprop",
    "prox_step",
    "default_mask",
    "ProximalGradientState",
    "ProxAdamState",
    "ProxRMSPropState",
    "ProxStepState",
]
