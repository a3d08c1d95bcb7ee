"""Meta-training: how a MAPA meta-learner is trained, one concept per module.

* :mod:`~mapa_jax.meta.config`: :class:`MetaTrainConfig` and the named presets;
* :mod:`~mapa_jax.meta.unroll`: inner trajectories (:class:`InnerState`) and the
  checkpointed, truncated ``lax.scan`` unroll, set by one :class:`UnrollSpec`;
* :mod:`~mapa_jax.meta.estimators`: the meta-gradient estimator interface
  (:class:`GradientEstimator`) and truncated backpropagation, its first member;
* :mod:`~mapa_jax.meta.sharding`: the meta-step of any estimator on one device
  and over a device mesh (``shard_map``; ``pmap`` too);
* :mod:`~mapa_jax.meta.state`: :class:`MetaTrainState` and the meta-update;
* :mod:`~mapa_jax.meta.checkpoint`: that state on disk (orbax, JSON; no pickle);
* :mod:`~mapa_jax.meta.train`: the loop (:func:`meta_train`), logs and plots.

Evaluation of a trained learner is :mod:`mapa_jax.evaluation`.
"""
