"""Meta-training: how a MAPA meta-learner is trained, one concept per module.

* :mod:`~mapa_jax.meta.config`: :class:`~mapa_jax.meta.config.MetaTrainConfig` and the named presets;
* :mod:`~mapa_jax.meta.unroll`: inner trajectories (:class:`~mapa_jax.meta.unroll.InnerState`) and the
  checkpointed, truncated ``lax.scan`` unroll, set by one :class:`~mapa_jax.meta.unroll.UnrollSpec`;
* :mod:`~mapa_jax.meta.estimators`: the meta-gradient estimator interface
  (:class:`~mapa_jax.meta.estimators.GradientEstimator`) and truncated backpropagation, its first member;
* :mod:`~mapa_jax.meta.sharding`: the meta-step of any estimator on one device
  and over a device mesh (``shard_map``; ``pmap`` too);
* :mod:`~mapa_jax.meta.state`: :class:`~mapa_jax.meta.state.MetaTrainState` and the meta-update;
* :mod:`~mapa_jax.meta.checkpoint`: that state on disk (orbax, JSON; no pickle);
* :mod:`~mapa_jax.meta.train`: the loop (:func:`~mapa_jax.meta.train.meta_train`), logs and plots.

Evaluation of a trained learner is :mod:`mapa_jax.evaluation`.
"""
