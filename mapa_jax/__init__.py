"""mapa_jax: meta-learned adaptive proximal optimization for JAX and optax.

Public API (see README.md)::

    import mapa_jax as mj
    mj.prox.huber_shrinkage(x, tau, lam, eta)      # proximal operators
    tx = mj.prox_adam(1e-3, l1=1e-4)               # proximal optimizers (optax)
    meta = mj.init_meta_params(key, mj.MetaLearnerConfig())
    tx = mj.mapa(meta)                              # the learned proximal optimizer
    tx = mj.skip_nonfinite(optax.adamw(1e-3))       # skip steps with non-finite gradients
    tx = mj.safeguarded(tx, smooth, step_size=1 / L, l1=lam)  # convergent on convex composite problems
"""

from mapa_jax import prox
from mapa_jax.architecture import architecture_graph
from mapa_jax.config import MetaLearnerConfig, learned_optimizer_config
from mapa_jax.guard import SkipNonfiniteState, skip_nonfinite
from mapa_jax.mapa import MapaState, init_meta_params, mapa, proximal_parameters
from mapa_jax.safeguard import SafeguardedState, safeguarded
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

from mapa_jax.pretrained import load_pretrained

__version__ = "0.1.0.dev0"

# Meta-training needs the 'train' extra (orbax, datasets); imported on first use.
_LAZY = {
    "meta_train": ("mapa_jax.meta.train", "meta_train"),
    "MetaTrainConfig": ("mapa_jax.meta.train", "MetaTrainConfig"),
    "load_meta_params": ("mapa_jax.meta.checkpoint", "load_meta_params"),
    "adapt": ("mapa_jax.meta.adapt", "adapt"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'mapa_jax' has no attribute {name!r}")


__all__ = [
    "prox",
    "architecture_graph",
    "MetaLearnerConfig",
    "learned_optimizer_config",
    "MapaState",
    "init_meta_params",
    "mapa",
    "proximal_parameters",
    "load_pretrained",
    "meta_train",
    "MetaTrainConfig",
    "load_meta_params",
    "adapt",
    "proximal_gradient",
    "prox_adam",
    "prox_rmsprop",
    "prox_step",
    "default_mask",
    "ProximalGradientState",
    "ProxAdamState",
    "ProxRMSPropState",
    "ProxStepState",
    "skip_nonfinite",
    "SkipNonfiniteState",
    "safeguarded",
    "SafeguardedState",
]
