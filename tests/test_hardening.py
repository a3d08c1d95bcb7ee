"""Hardening: bad inputs across the public API fail early, with the right error type
and a message that names what was wrong (the argument, the field or the file).

One table per surface, each row ``(id, call, expected exception, regex of the
message)``: transforms, proximal operators, ``mj.mapa`` and its update,
``mj.skip_nonfinite``, architecture graphs, configs, the loaders
(``mj.load_pretrained``, ``mj.load_meta_params``) given crafted files, and the
CLI (``main([...])`` returns 2 with the reason on stderr).

Crafted files include a pickle whose unpickling would create a marker file:
every loader must reject or ignore it, never unpickle it. ``pickle`` is
imported here only to craft that file; the library never imports it.

Everything is tiny (a two-tensor params tree, a small meta-learner config,
``jax.eval_shape`` instead of running the meta-learner) so the module runs in
seconds.
"""

import hashlib
import json
import os
import pathlib
import pickle
import re
import shutil

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mapa_jax as mj
from mapa_jax import cli, pretrained, prox
from mapa_jax import tasks as mj_tasks
from mapa_jax.mapa import meta_params_shape
from mapa_jax.meta import checkpoint as ckpt
from mapa_jax.meta.config import MetaTrainConfig, preset
from mapa_jax.meta.state import MetaTrainState

CFG = mj.MetaLearnerConfig(lstm_hidden=4, gnn_hidden=4, gnn_rounds=1, window=2)
CFG_ADAM = mj.MetaLearnerConfig(lstm_hidden=4, gnn_hidden=4, gnn_rounds=1, window=2, direction="adam")
PARAMS = {"a": {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}}
PARAMS_OTHER_SHAPES = {"a": {"w": jnp.ones((4, 2)), "b": jnp.zeros(2)}}
PARAMS_OTHER_TREE = {"a": {"w": jnp.ones((3, 2)), "b": jnp.zeros(2), "c": jnp.zeros(2)}}
STEP = 3  # the checkpoint step the file cases write


def _zeros_meta(config):
    """Meta-params of ``config`` without running an initializer (zeros, right shapes)."""
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), meta_params_shape(config))


_META = {}


def _meta(config=CFG):
    if config not in _META:
        _META[config] = _zeros_meta(config)
    return _META[config]


def _tx(config=CFG, **kw):
    return mj.mapa(_meta(config), config, **kw)


def _update(tx, grads, params, *, init_params=None, **kw):
    """``tx.update`` on a state from ``tx.init(init_params)``, all abstract (trace only)."""
    init_params = params if init_params is None else init_params

    def run():
        return tx.update(grads, tx.init(init_params), params, **kw)

    return jax.eval_shape(run)


def _prox_update(tx, params, init_params):
    return jax.eval_shape(lambda: tx.update(params, tx.init(init_params), params))


# --------------------------------------------------------------------------
# In-memory inputs: transforms, operators, mapa, guard, graphs, configs.

IN_MEMORY = [
    # transforms.py
    ("prox_adam-lr-string", lambda: mj.prox_adam("1e-3"), TypeError, r"prox_adam: learning_rate must be a number"),
    ("prox_adam-lr-vector", lambda: mj.prox_adam(jnp.ones(3)), ValueError,
     r"learning_rate must be a scalar or an optax schedule, got shape \(3,\)"),
    ("prox_adam-b1-string", lambda: mj.prox_adam(1e-3, b1="0.9"), TypeError, r"prox_adam: b1 must be a number"),
    ("prox_adam-b2-one", lambda: mj.prox_adam(1e-3, b2=1.0), ValueError, r"prox_adam: b2 must be in \[0, 1\)"),
    ("prox_adam-eps-string", lambda: mj.prox_adam(1e-3, eps="x"), TypeError, r"prox_adam: eps must be a number > 0"),
    ("prox_rmsprop-decay", lambda: mj.prox_rmsprop(1e-3, decay=1.5), ValueError, r"prox_rmsprop: decay must be in"),
    ("pgd-l1-negative", lambda: mj.proximal_gradient(0.1, l1=-1.0), ValueError, r"proximal_gradient: l1 must be >= 0"),
    ("pgd-prox-not-callable", lambda: mj.proximal_gradient(0.1, prox=3), TypeError, r"prox must be a callable"),
    ("pgd-prox-and-l1", lambda: mj.proximal_gradient(0.1, l1=0.1, prox=lambda x, s: x), ValueError,
     r"either prox= or l1="),
    ("pgd-update-without-params", lambda: mj.proximal_gradient(0.1).update(PARAMS, None, None), ValueError,
     r"proximal_gradient needs params"),
    ("pgd-mask-not-bools", lambda: _prox_update(mj.proximal_gradient(0.1, l1=0.1, mask={"a": {"w": 1.0, "b": 0.0}}),
                                                PARAMS, PARAMS), ValueError, r"mask leaves must be bools"),
    ("prox_adam-state-other-shapes", lambda: _prox_update(mj.prox_adam(1e-3), PARAMS_OTHER_SHAPES, PARAMS),
     ValueError, r"prox_adam.update: the optimizer state was built for other params.*"
                 r"state\.mu\['a'\]\['w'\] has shape \(3, 2\) but the param has shape \(4, 2\)"),
    ("prox_rmsprop-state-other-tree", lambda: _prox_update(mj.prox_rmsprop(1e-3), PARAMS_OTHER_TREE, PARAMS),
     ValueError, r"prox_rmsprop.update: the optimizer state was built for other params.*state\.nu has tree"),
    ("prox_adam-state-of-another-optimizer",
     lambda: mj.prox_adam(1e-3).update(PARAMS, optax.sgd(0.1).init(PARAMS), PARAMS), TypeError,
     r"prox_adam.update: state must be the ProxAdamState"),
    ("pgd-int-params", lambda: mj.proximal_gradient(0.1).update({"w": jnp.ones(2, jnp.int32)}, None,
                                                                {"w": jnp.ones(2, jnp.int32)}),
     TypeError, r"param \['w'\] has dtype int32"),
    # prox.py
    ("soft_threshold-threshold-string", lambda: prox.soft_threshold(jnp.ones(2), "a"), TypeError,
     r"soft_threshold: threshold must be a number or array"),
    ("soft_threshold-x-string", lambda: prox.soft_threshold("abc", 0.1), TypeError,
     r"soft_threshold: x must be a floating-point array"),
    ("huber-eta-negative", lambda: prox.huber_shrinkage(jnp.ones(2), 0.1, 0.1, eta=-1.0), ValueError,
     r"huber_shrinkage: eta must be >= 0"),
    ("huber-x-int", lambda: prox.huber_shrinkage(jnp.ones(2, jnp.int32), 0.1, 0.1), TypeError,
     r"huber_shrinkage: x must be a floating-point array, got dtype int32"),
    ("elastic_net-l1-nan", lambda: prox.elastic_net(jnp.ones(2), float("nan"), 0.0), ValueError,
     r"elastic_net: l1 must be >= 0, got nan"),
    ("smoothed-lam-bool", lambda: prox.smoothed_shrinkage(jnp.ones(2), 0.1, True), TypeError,
     r"smoothed_shrinkage: lam must be a number or array"),
    ("group_lasso-strength-vector", lambda: prox.group_lasso(jnp.ones(2), jnp.ones(2)), ValueError,
     r"strength must be a scalar"),
    # mapa.py: the transform
    ("mapa-config-dict", lambda: mj.mapa(_meta(), CFG.to_dict()), TypeError,
     r"mapa: config must be a MetaLearnerConfig"),
    ("mapa-meta-params-other-config", lambda: mj.mapa({"params": {k: v for k, v in _meta()["params"].items()
                                                                  if k != "film"}}, CFG),
     ValueError, r"meta_params do not match the config .*missing \[\"\['params'\]\['film'\]"),
    ("mapa-skip_nonfinite-string", lambda: _tx(skip_nonfinite="no"), TypeError,
     r"mapa: skip_nonfinite must be True or False, got str 'no'"),
    ("mapa-total_steps-zero", lambda: _tx(total_steps=0), ValueError, r"mapa: total_steps must be a positive integer"),
    ("mapa-graph-string", lambda: jax.eval_shape(_tx(graph="g").init, PARAMS), TypeError,
     r"mapa: graph must be a jraph.GraphsTuple, got str"),
    ("mapa-graph-other-architecture",
     lambda: jax.eval_shape(_tx(graph=mj.architecture_graph({"d0": {"kernel": jnp.ones((2, 2))},
                                                             "d1": {"kernel": jnp.ones((2, 2))}})).init, PARAMS),
     ValueError, r"graph has 2 nodes but params has 1 modules"),
    ("mapa-init-no-arrays", lambda: jax.eval_shape(_tx().init, {}), ValueError, r"mapa: params has no arrays"),
    ("init_meta_params-key-int", lambda: mj.init_meta_params(0, CFG), TypeError,
     r"init_meta_params: key must be a JAX PRNG key"),
    ("proximal_parameters-no-state", lambda: mj.proximal_parameters({"a": 1}), TypeError,
     r"proximal_parameters: no MapaState in dict"),
    # mapa.py: update
    ("mapa-value-vector", lambda: _update(_tx(), PARAMS, PARAMS, value=jnp.ones(3)), ValueError,
     r"mapa.update: value must be a scalar \(the loss\), got an array of shape \(3,\)"),
    ("mapa-value-string", lambda: _update(_tx(), PARAMS, PARAMS, value="1.0"), TypeError,
     r"mapa.update: value must be a scalar \(the loss\): a real number or a 0-d array, got str '1.0'"),
    ("mapa-value-list", lambda: _update(_tx(), PARAMS, PARAMS, value=[1.0]), TypeError,
     r"mapa.update: value must be a scalar .* got list"),
    ("mapa-value-bool", lambda: _update(_tx(), PARAMS, PARAMS, value=True), TypeError,
     r"mapa.update: value must be a scalar .* got dtype bool"),
    ("mapa-state-other-tree", lambda: _update(_tx(), PARAMS_OTHER_TREE, PARAMS_OTHER_TREE, init_params=PARAMS),
     ValueError, r"mapa.update: the optimizer state was built for other params .*state\.eta has tree structure"),
    ("mapa-adam-state-other-shapes",
     lambda: _update(_tx(CFG_ADAM), PARAMS_OTHER_SHAPES, PARAMS_OTHER_SHAPES, init_params=PARAMS), ValueError,
     r"mapa.update: the optimizer state was built for other params .*state\.mu\['a'\]\['w'\] has shape \(3, 2\)"),
    ("mapa-state-not-a-MapaState", lambda: _tx().update(PARAMS, {"count": 0}, PARAMS), TypeError,
     r"mapa.update: state must be the MapaState that init\(params\) returned, got dict"),
    ("mapa-update-without-params", lambda: _tx().update(PARAMS, None), ValueError, r"mapa needs params"),
    ("mapa-grads-other-shapes", lambda: _update(_tx(), PARAMS_OTHER_SHAPES, PARAMS), ValueError,
     r"mapa: update \['a'\]\['w'\] has shape \(4, 2\) but the param has shape \(3, 2\)"),
    # guard.py
    ("skip_nonfinite-function", lambda: mj.skip_nonfinite(optax.adam), TypeError,
     r"skip_nonfinite: tx must be an optax.GradientTransformation, got function"),
    ("skip_nonfinite-inner-state", lambda: mj.skip_nonfinite(optax.sgd(0.1)).update(
        PARAMS, optax.sgd(0.1).init(PARAMS), PARAMS), TypeError,
     r"skip_nonfinite.update: state must be the SkipNonfiniteState"),
    # architecture.py
    ("graph-empty", lambda: mj.architecture_graph({}), ValueError, r"no array leaves"),
    ("graph-string-leaf", lambda: mj.architecture_graph({"layer": {"kernel": "abc"}}), TypeError,
     r"'layer/kernel' is a str, expected an array"),
    ("graph-not-callable", lambda: mj.architecture_graph(PARAMS, jnp.ones(3)), TypeError, r"not callable"),
    ("graph-fn-without-params", lambda: mj.architecture_graph(lambda p, x: x, None, jnp.ones(3)), ValueError,
     r"needs params"),
    # config.py
    ("config-window-string", lambda: mj.MetaLearnerConfig(window="4"), ValueError,
     r"MetaLearnerConfig.window must be an integer >= 1, got '4'"),
    ("config-eta_max-bool", lambda: mj.MetaLearnerConfig(eta_max=True), ValueError,
     r"MetaLearnerConfig.eta_max must be a finite number > 0, got True"),
    ("config-b1-bool", lambda: mj.MetaLearnerConfig(b1=False), ValueError, r"MetaLearnerConfig.b1 must be in"),
    ("config-operator", lambda: mj.MetaLearnerConfig(operator="l0"), ValueError,
     r"MetaLearnerConfig.operator must be one of"),
    ("config-parameterization-unknown", lambda: mj.MetaLearnerConfig(parameterization="prodigy"), ValueError,
     r"MetaLearnerConfig.parameterization must be one of"),
    ("config-distance-sgd", lambda: mj.MetaLearnerConfig(parameterization="distance", direction="sgd"), ValueError,
     r'parameterization="distance" needs direction="adam"'),
    ("config-distance_sample-negative", lambda: mj.MetaLearnerConfig(distance_sample=-1), ValueError,
     r"MetaLearnerConfig.distance_sample must be an integer >= 0 .*, got -1"),
    ("config-distance_growth_steps-negative", lambda: mj.MetaLearnerConfig(distance_growth_steps=-1), ValueError,
     r"MetaLearnerConfig.distance_growth_steps must be an integer >= 0 .*, got -1"),
    ("config-from_dict-none", lambda: mj.MetaLearnerConfig.from_dict(None), TypeError,
     r"MetaLearnerConfig.from_dict: d must be a dict"),
    ("config-from_dict-unknown", lambda: mj.MetaLearnerConfig.from_dict({"lstm_size": 3}), ValueError,
     r"unknown fields \['lstm_size'\]"),
    # meta/config.py
    ("train-curriculum-string", lambda: MetaTrainConfig(curriculum_fraction="0.5"), ValueError,
     r"MetaTrainConfig.curriculum_fraction must be a number in \[0, 1\], got '0.5'"),
    ("train-baseline_decay-string", lambda: MetaTrainConfig(baseline_decay="0.9"), ValueError,
     r"MetaTrainConfig.baseline_decay must be a number in \[0, 1\)"),
    ("train-meta_lr-bool", lambda: MetaTrainConfig(meta_lr=True), ValueError, r"MetaTrainConfig.meta_lr must be"),
    ("train-meta_learner-dict", lambda: MetaTrainConfig(meta_learner={}), ValueError,
     r"MetaTrainConfig.meta_learner must be a MetaLearnerConfig"),
    ("train-from_dict-no-meta_learner", lambda: MetaTrainConfig.from_dict({"meta_steps": 3}), ValueError,
     r"MetaTrainConfig.from_dict: the field 'meta_learner'.* is missing"),
    ("train-from_dict-list", lambda: MetaTrainConfig.from_dict([1]), TypeError,
     r"MetaTrainConfig.from_dict: d must be a dict"),
    ("train-horizon-zero", lambda: MetaTrainConfig(horizon=0), ValueError, r"horizon must be an integer >= 1"),
    ("train-augment-negative", lambda: MetaTrainConfig(augment_log_range=-1.0), ValueError,
     r"MetaTrainConfig.augment_log_range"),
    ("augment-scales-log_range-string", lambda: mj_tasks.sample_scales(jax.random.key(0), PARAMS, "1"), ValueError,
     r"log_range"),
    ("family-unknown", lambda: mj_tasks.family("reinforce"), KeyError, r"unknown task family 'reinforce'"),
    ("preset-unknown", lambda: preset("nope"), ValueError, r"unknown preset 'nope'"),
    ("preset-unknown-override", lambda: preset("smoke", bogus=1), ValueError,
     r"preset\('smoke'\): unknown MetaTrainConfig fields \['bogus'\]"),
]


@pytest.mark.parametrize("call, error, match", [pytest.param(*row[1:], id=row[0]) for row in IN_MEMORY])
def test_bad_input_raises_an_error_naming_it(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --------------------------------------------------------------------------
# Crafted files for the loaders.

class _Marker:
    """Unpickling this creates the marker file: proof that something unpickled it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """A tiny pretrained pair (tiny.msgpack + tiny.json) and a tiny format-2 checkpoint, to copy."""
    root = tmp_path_factory.mktemp("templates")
    pretrained.export(_meta(), CFG, {"produced_by": "test_hardening"}, "tiny", directory=str(root / "pt"))
    state = MetaTrainState(_meta(), np.zeros(1, np.float32), np.zeros(1, np.float32), 0, {}, (), (),
                           np.zeros(2, np.uint32), STEP, 0, 0)
    ckpt.save_state(str(root / "ck"), state, {"seed": 0, "meta_learner": CFG.to_dict()})
    return root


def _copy(templates, tmp_path, what):
    d = tmp_path / what
    shutil.copytree(templates / what, d)
    return d


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip(path, at=0.5):
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def _resign(d):
    """Record the SHA-256 of the (crafted) weights, so that the check after it is the one tested."""
    info = json.loads((d / "tiny.json").read_text())
    info["weights_sha256"] = hashlib.sha256((d / "tiny.msgpack").read_bytes()).hexdigest()
    (d / "tiny.json").write_text(json.dumps(info))


def _edit_json(path, fn):
    path.write_text(json.dumps(fn(json.loads(path.read_text()))))


def _string_leaf(d):
    state = flax.serialization.to_state_dict(_meta())
    state["params"]["film"]["bias"] = "not an array"
    (d / "tiny.msgpack").write_bytes(flax.serialization.msgpack_serialize(state))
    _resign(d)


def _pickle(path, marker):
    path.write_bytes(pickle.dumps(_Marker(str(marker))))


# Each row: (id, craft(dir, marker), expected exception, regex). The pretrained
# directory holds tiny.msgpack and tiny.json.
PRETRAINED_FILES = [
    ("msgpack-truncated", lambda d, m: _truncate(d / "tiny.msgpack"), ValueError,
     r"tiny\.msgpack is corrupt or does not match its provenance: its SHA-256 differs"),
    ("msgpack-truncated-no-checksum",
     lambda d, m: (_truncate(d / "tiny.msgpack"), _edit_json(d / "tiny.json", lambda i: {
         k: v for k, v in i.items() if k != "weights_sha256"})),
     ValueError, r"tiny\.msgpack is corrupt or does not match its config"),
    ("msgpack-bit-flipped", lambda d, m: _flip(d / "tiny.msgpack"), ValueError,
     r"tiny\.msgpack is corrupt .*SHA-256 differs from the weights_sha256 recorded in .*tiny\.json"),
    ("msgpack-wrong-type-list", lambda d, m: ((d / "tiny.msgpack").write_bytes(
        flax.serialization.msgpack_serialize([1, 2, 3])), _resign(d)), ValueError,
     r"tiny\.msgpack is corrupt or does not match its config"),
    ("msgpack-string-leaf", lambda d, m: _string_leaf(d), ValueError,
     r"tiny\.msgpack is corrupt: meta_params\['params'\]\['film'\]\['bias'\] is a str"),
    ("msgpack-is-a-directory", lambda d, m: ((d / "tiny.msgpack").unlink(), (d / "tiny.msgpack").mkdir()),
     ValueError, r"tiny\.msgpack is not a regular file"),
    ("msgpack-missing", lambda d, m: (d / "tiny.msgpack").unlink(), FileNotFoundError,
     r"no pretrained meta-learner 'tiny'.*tiny\.msgpack"),
    ("json-truncated", lambda d, m: _truncate(d / "tiny.json"), ValueError, r"tiny\.json is not valid JSON"),
    ("json-bit-flipped", lambda d, m: _flip(d / "tiny.json", at=0.0), ValueError, r"tiny\.json is not valid JSON"),
    ("json-binary", lambda d, m: (d / "tiny.json").write_bytes(b"\xff\xfe\x00garbage"), ValueError,
     r"tiny\.json is not valid JSON"),
    ("json-a-list", lambda d, m: (d / "tiny.json").write_text("[1, 2]"), ValueError,
     r"tiny\.json must hold a JSON object"),
    ("json-meta_learner-string", lambda d, m: _edit_json(d / "tiny.json", lambda i: {**i, "meta_learner": "abc"}),
     ValueError, r"tiny\.json: no valid meta_learner config"),
    ("json-meta_learner-bad-field", lambda d, m: _edit_json(d / "tiny.json", lambda i: {
        **i, "meta_learner": {**i["meta_learner"], "window": "2"}}),
     ValueError, r"tiny\.json: no valid meta_learner config: MetaLearnerConfig.window"),
    ("json-meta_learner-other-config", lambda d, m: _edit_json(d / "tiny.json", lambda i: {
        **i, "meta_learner": {**i["meta_learner"], "lstm_hidden": 8}}),
     ValueError, r"tiny\.msgpack is corrupt or does not match its config|built for another config"),
    ("json-checksum-wrong-type", lambda d, m: _edit_json(d / "tiny.json", lambda i: {**i, "weights_sha256": 5}),
     ValueError, r"tiny\.json: weights_sha256 must be a hex string"),
    ("pickle-as-msgpack", lambda d, m: _pickle(d / "tiny.msgpack", m), ValueError,
     r"tiny\.msgpack is corrupt"),
    ("pickle-as-msgpack-resigned", lambda d, m: (_pickle(d / "tiny.msgpack", m), _resign(d)), ValueError,
     r"tiny\.msgpack is corrupt or does not match its config"),
    ("pickle-as-json", lambda d, m: _pickle(d / "tiny.json", m), ValueError, r"tiny\.json is not valid JSON"),
    ("pickle-next-to-them", lambda d, m: [_pickle(d / name, m) for name in ("tiny.pkl", "tiny.msgpack.pkl",
                                                                            "default.msgpack", "tiny.pickle")],
     None, None),  # ignored: the pair still loads
]


@pytest.mark.parametrize("craft, error, match", [pytest.param(*row[1:], id=row[0]) for row in PRETRAINED_FILES])
def test_load_pretrained_rejects_crafted_files_clearly_and_never_unpickles(templates, tmp_path, craft, error, match):
    d = _copy(templates, tmp_path, "pt")
    marker = tmp_path / "unpickled.marker"
    craft(d, marker)
    if error is None:
        meta, config = mj.load_pretrained("tiny", directory=str(d))
        assert config == CFG
    else:
        with pytest.raises(error, match=match):
            mj.load_pretrained("tiny", directory=str(d))
    assert not marker.exists(), "a loader unpickled a file"


def _step(d):
    return d / str(STEP)


def _garble_all(directory):
    for root, _, files in os.walk(directory):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "r+b") as fh:
                fh.write(b"\x00garbage\xff" * 8)


def _meta_file(d):
    return _step(d) / "meta" / "metadata"


# The checkpoint directory holds step 3 (items "state" and "meta").
CHECKPOINT_FILES = [
    ("dir-missing", lambda d, m: shutil.rmtree(d), ckpt.CheckpointError, r"no checkpoint directory at .*ck"),
    ("no-complete-step", lambda d, m: shutil.rmtree(_step(d)), ckpt.CheckpointError, r"holds no complete checkpoint"),
    ("meta-truncated", lambda d, m: _truncate(_meta_file(d)), ckpt.CheckpointError,
     r"cannot read the metadata of step 3 in .*ck"),
    ("meta-bit-flipped", lambda d, m: _flip(_meta_file(d), at=0.0), ckpt.CheckpointError,
     r"cannot read the metadata of step 3"),
    ("meta-a-list", lambda d, m: _meta_file(d).write_text("[1]"), ckpt.CheckpointError,
     r"the metadata \(meta/metadata\) of step 3 in .* must be a JSON object, got a list"),
    ("meta-format-string", lambda d, m: _edit_json(_meta_file(d), lambda x: {**x, "format": "2"}),
     ckpt.CheckpointError, r"meta/metadata.*field 'format' must be an integer from 1 to 2 .*got '2'"),
    ("meta-format-future", lambda d, m: _edit_json(_meta_file(d), lambda x: {**x, "format": 99}),
     ckpt.CheckpointError, r"field 'format' must be an integer from 1 to 2 .*got 99"),
    ("meta-meta_learner-string", lambda d, m: _edit_json(_meta_file(d), lambda x: {**x, "meta_learner": "x"}),
     ckpt.CheckpointError, r"metadata has no valid meta_learner config"),
    ("meta-meta_learner-missing", lambda d, m: _edit_json(_meta_file(d), lambda x: {
        k: v for k, v in x.items() if k != "meta_learner"}), ckpt.CheckpointError,
     r"metadata has no valid meta_learner config: 'meta_learner'"),
    ("meta-other-config", lambda d, m: _edit_json(_meta_file(d), lambda x: {
        **x, "meta_learner": {**x["meta_learner"], "lstm_hidden": 8}}), ckpt.CheckpointError,
     r"meta_params of step 3 in .* do not match the config"),
    ("state-metadata-truncated", lambda d, m: _truncate(_step(d) / "state" / "_METADATA"), ckpt.CheckpointError,
     r"the state of checkpoint step 3 in .* do not match the expected structure or are corrupt"),
    ("state-metadata-bit-flipped", lambda d, m: _flip(_step(d) / "state" / "_METADATA", at=0.0),
     ckpt.CheckpointError, r"the state of checkpoint step 3 .* corrupt"),
    ("state-all-files-garbage", lambda d, m: _garble_all(_step(d) / "state"), ckpt.CheckpointError,
     r"the state of checkpoint step 3 .* corrupt"),
    ("state-item-missing", lambda d, m: shutil.rmtree(_step(d) / "state"), ckpt.CheckpointError,
     r"the state of checkpoint step 3"),
    ("pickle-as-meta", lambda d, m: _pickle(_meta_file(d), m), ckpt.CheckpointError,
     r"cannot read the metadata of step 3"),
    ("pickle-as-state-metadata", lambda d, m: _pickle(_step(d) / "state" / "_METADATA", m), ckpt.CheckpointError,
     r"the state of checkpoint step 3 .* corrupt"),
    ("pickle-files-in-the-step", lambda d, m: [_pickle(p, m) for p in (
        d / "state.pkl", _step(d) / "state.pkl", _step(d) / "checkpoint.pkl", _step(d) / "state" / "state.pkl",
        _step(d) / "meta" / "meta.pkl", d / "default.msgpack")], None, None),  # ignored: the step still loads
]


@pytest.mark.parametrize("craft, error, match", [pytest.param(*row[1:], id=row[0]) for row in CHECKPOINT_FILES])
def test_load_meta_params_rejects_crafted_files_clearly_and_never_unpickles(templates, tmp_path, craft, error, match):
    d = _copy(templates, tmp_path, "ck")
    marker = tmp_path / "unpickled.marker"
    craft(d, marker)
    if error is None:
        meta, config = mj.load_meta_params(str(d))
        assert config == CFG
        for a, b in zip(jax.tree.leaves(meta), jax.tree.leaves(_meta())):
            np.testing.assert_array_equal(a, b)
    else:
        with pytest.raises(error, match=match):
            mj.load_meta_params(str(d))
    assert not marker.exists(), "a loader unpickled a file"


def test_the_library_never_imports_pickle():
    root = pathlib.Path(mj.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if any(line.strip().startswith(("import pickle", "from pickle", "import cPickle", "import dill"))
                        for line in p.read_text().splitlines())]
    assert offenders == []


# --------------------------------------------------------------------------
# The command line: exit status 2 and the reason on stderr.

def _no_train_config(templates, tmp_path):
    d = _copy(templates, tmp_path, "ck")
    return ["export", "--checkpoint-dir", str(d), "--out-dir", str(tmp_path / "out")]


def _corrupt_pretrained(templates, tmp_path):
    d = _copy(templates, tmp_path, "pt")
    _flip(d / "tiny.msgpack")
    return ["evaluate", "--pretrained", "tiny", "--pretrained-dir", str(d)]


CLI = [
    ("evaluate-unknown-family", lambda t, p: ["evaluate", "--families", "bogus"], r"unknown task families \['bogus'\]"),
    ("evaluate-unknown-baseline", lambda t, p: ["evaluate", "--baselines", "nope"], r"unknown baselines \['nope'\]"),
    ("evaluate-zero-seeds", lambda t, p: ["evaluate", "--seeds", "0"], r"--seeds and --steps must be >= 1"),
    ("evaluate-negative-first-seed", lambda t, p: ["evaluate", "--first-seed", "-1"], r"--first-seed must be >= 0"),
    ("evaluate-steps-and-long-horizon", lambda t, p: ["evaluate", "--steps", "5", "--long-horizon"],
     r"give --steps or --long-horizon, not both"),
    ("evaluate-seeds-not-an-integer", lambda t, p: ["evaluate", "--seeds", "abc"], r"--seeds: invalid int value"),
    ("evaluate-missing-checkpoint", lambda t, p: ["evaluate", "--checkpoint-dir", str(p / "missing")],
     r"cannot load the meta-learner: no checkpoint directory at .*missing"),
    ("evaluate-unknown-pretrained", lambda t, p: ["evaluate", "--pretrained", "nope", "--pretrained-dir", str(p)],
     r"no pretrained meta-learner 'nope'"),
    ("evaluate-corrupt-pretrained", _corrupt_pretrained, r"cannot load the meta-learner: .*tiny\.msgpack is corrupt"),
    ("meta-train-unknown-preset", lambda t, p: ["meta-train", "--preset", "nope", "--checkpoint-dir", str(p)],
     r"unknown preset 'nope'"),
    ("meta-train-zero-devices", lambda t, p: ["meta-train", "--devices", "0", "--checkpoint-dir", str(p)],
     r"--devices must be >= 1, got 0"),
    ("meta-train-zero-meta-steps", lambda t, p: ["meta-train", "--preset", "smoke", "--meta-steps", "0",
                                                 "--checkpoint-dir", str(p)],
     r"MetaTrainConfig.meta_steps must be an integer >= 1, got 0"),
    ("meta-train-no-checkpoint-dir", lambda t, p: ["meta-train", "--preset", "smoke"],
     r"the following arguments are required: --checkpoint-dir"),
    ("export-missing-checkpoint", lambda t, p: ["export", "--checkpoint-dir", str(p / "missing")],
     r"mapa export: no checkpoint directory at .*missing"),
    ("export-metadata-without-train-config", _no_train_config,
     r"mapa export: the metadata of .* lacks the fields \['train_config'"),
    ("demo-zero-steps", lambda t, p: ["demo", "--steps", "0"], r"mapa demo: --steps must be an integer >= 1"),
    ("demo-out-not-png", lambda t, p: ["demo", "--out", str(p / "x.txt")], r"--out must name a \.png file"),
    ("unknown-command", lambda t, p: ["bogus"], r"invalid choice: 'bogus'"),
]


@pytest.mark.parametrize("argv, match", [pytest.param(*row[1:], id=row[0]) for row in CLI])
def test_cli_exits_2_with_the_reason_on_stderr(templates, tmp_path, capsys, argv, match):
    rc = cli.main(argv(templates, tmp_path))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert re.search(match, err), err
    assert "Traceback" not in err
