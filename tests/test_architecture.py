"""Tests for mapa_jax.architecture: model -> jraph.GraphsTuple."""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest
from flax import nnx

from mapa_jax import architecture
from mapa_jax.architecture import (ACTIVATIONS, EDGE_KINDS, NODE_FEATURES, NODE_KINDS,
                                   architecture_graph, check_graph_matches_params,
                                   graph_matches_params, module_index, module_paths)

KEY = jax.random.key(0)
X = jnp.ones((1, 3))


# ----------------------------------------------------------------------- helpers


def _col(name: str) -> int:
  return NODE_FEATURES.index(name)


def kinds(graph: jraph.GraphsTuple) -> list[str]:
  nodes = np.asarray(graph.nodes)
  return [NODE_KINDS[i] for i in nodes[:, :len(NODE_KINDS)].argmax(1)]


def activations(graph: jraph.GraphsTuple) -> list[str]:
  nodes = np.asarray(graph.nodes)
  return [ACTIVATIONS[i] for i in nodes[:, _col("act_relu"):].argmax(1)]


def edges(graph: jraph.GraphsTuple) -> set[tuple[int, int, str]]:
  kinds_ = np.asarray(graph.edges).argmax(1)
  return {(int(s), int(r), EDGE_KINDS[k])
          for s, r, k in zip(np.asarray(graph.senders), np.asarray(graph.receivers), kinds_)}


def named_edges(graph: jraph.GraphsTuple, params) -> set[tuple[str, str, str]]:
  names = module_paths(params)
  return {(names[s], names[r], k) for s, r, k in edges(graph)}


def by_name(graph: jraph.GraphsTuple, params, column: str) -> dict[str, float]:
  return dict(zip(module_paths(params), np.asarray(graph.nodes)[:, _col(column)].tolist()))


class MLP(nn.Module):
  act: Callable = nn.relu
  width: int = 4

  @nn.compact
  def __call__(self, x):
    x = self.act(nn.Dense(self.width)(x))
    x = self.act(nn.Dense(self.width)(x))
    return nn.Dense(2)(x)


class ResMLP(nn.Module):

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Dense(4, name="inp")(x))
    h = h + nn.Dense(4, name="b2")(nn.relu(nn.Dense(4, name="b1")(h)))
    return nn.Dense(2, name="out")(nn.relu(h))


class ResCNN(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    y = nn.relu(nn.Conv(4, (3, 3))(x))
    y = nn.Conv(4, (3, 3))(y)
    x = nn.relu(x + y)
    x = nn.max_pool(x, (2, 2), (2, 2))
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


def _init(model: nn.Module, x=X):
  """Abstract variables (ShapeDtypeStruct leaves): the graph needs shapes only."""
  return jax.eval_shape(model.init, KEY, x)


def _traced(model: nn.Module, x=X, key=KEY, abstract=True):
  """Traced graph and variables; abstract (shape-only) params unless told otherwise."""
  variables = jax.eval_shape(model.init, key, x) if abstract else model.init(key, x)
  return architecture_graph(model.apply, variables, x), variables


# ------------------------------------------------------------------------ layout


def test_feature_layout_constants_are_one_source_of_truth():
  assert architecture.num_node_features() == len(NODE_FEATURES) == 19
  assert architecture.num_edge_features() == len(EDGE_KINDS) == 2
  assert len(set(NODE_FEATURES)) == len(NODE_FEATURES)
  graph, _ = _traced(MLP())
  assert graph.nodes.shape == (3, architecture.num_node_features())
  assert graph.edges.shape == (2, architecture.num_edge_features())


def test_graph_has_jraph_dtypes_and_single_graph_shapes():
  graph, _ = _traced(MLP())
  assert graph.nodes.dtype == jnp.float32 and graph.edges.dtype == jnp.float32
  assert graph.senders.dtype == jnp.int32 and graph.receivers.dtype == jnp.int32
  assert graph.globals.shape == (1, 1)
  np.testing.assert_array_equal(graph.n_node, [3])
  np.testing.assert_array_equal(graph.n_edge, [2])
  # usable by jraph utilities
  assert jraph.batch([graph, graph]).n_node.tolist() == [3, 3]


# ---------------------------------------------------------------------- structure


def test_mlp_params_only_graph_is_a_chain_of_sequential_edges():
  params = _init(MLP())
  graph = architecture_graph(params)
  assert edges(graph) == {(0, 1, "sequential"), (1, 2, "sequential")}
  assert kinds(graph) == ["dense"] * 3
  np.testing.assert_allclose(np.asarray(graph.nodes)[:, _col("depth")], [0.0, 0.5, 1.0])


def test_mlp_traced_graph_is_a_chain_of_sequential_edges():
  graph, _ = _traced(MLP())
  assert edges(graph) == {(0, 1, "sequential"), (1, 2, "sequential")}
  np.testing.assert_allclose(np.asarray(graph.nodes)[:, _col("depth")], [0.0, 0.5, 1.0])


def test_mlp_node_features_are_fan_in_fan_out_and_param_count():
  graph, _ = _traced(MLP(width=5))
  nodes = np.asarray(graph.nodes)
  np.testing.assert_allclose(np.expm1(nodes[:, _col("log_fan_in")]), [3, 5, 5], rtol=1e-5)
  np.testing.assert_allclose(np.expm1(nodes[:, _col("log_fan_out")]), [5, 5, 2], rtol=1e-5)
  np.testing.assert_allclose(np.expm1(nodes[:, _col("log_spatial")]), [1, 1, 1], rtol=1e-5)
  np.testing.assert_allclose(np.expm1(nodes[:, _col("log_num_params")]), [20, 30, 12],
                             rtol=1e-5)


def test_residual_mlp_traced_graph_has_a_skip_edge_around_the_block():
  graph, params = _traced(ResMLP())
  assert named_edges(graph, params) == {
      ("inp", "b1", "sequential"), ("b1", "b2", "sequential"), ("b2", "out", "sequential"),
      ("inp", "out", "skip")}
  assert by_name(graph, params, "depth") == pytest.approx(
      {"inp": 0.0, "b1": 1 / 3, "b2": 2 / 3, "out": 1.0})


def test_residual_cnn_traced_graph_has_a_skip_edge_and_conv_nodes():
  x = jnp.ones((1, 4, 4, 2))
  graph, params = _traced(ResCNN(), x)
  assert named_edges(graph, params) == {
      ("Conv_0", "Conv_1", "sequential"), ("Conv_1", "Conv_2", "sequential"),
      ("Conv_2", "Dense_0", "sequential"), ("Conv_0", "Dense_0", "skip")}
  assert kinds(graph) == ["conv", "conv", "conv", "dense"]
  assert by_name(graph, params, "log_spatial")["Conv_0"] == pytest.approx(np.log1p(9))
  assert by_name(graph, params, "log_fan_in")["Conv_0"] == pytest.approx(np.log1p(2))
  # relu after the residual add is Conv_2's activation; Dense_0 has none
  assert activations(graph) == ["relu", "relu", "relu", "none"]


def test_params_only_graph_has_no_skip_edges():
  params = _init(ResMLP())
  assert {kind for *_, kind in edges(architecture_graph(params))} == {"sequential"}


def test_params_only_graph_orders_dense_2_before_dense_10():

  class Deep(nn.Module):

    @nn.compact
    def __call__(self, x):
      for _ in range(11):
        x = nn.Dense(2)(x)
      return x

  params = Deep().init(KEY, X)  # dicts in creation order: Dense_0, ..., Dense_10
  names = module_paths(params)
  assert names == tuple(f"Dense_{i}" for i in range(11))
  chain = {(i, i + 1, "sequential") for i in range(10)}
  assert edges(architecture_graph(params)) == chain
  # jax.tree.map / eval_shape / jit rebuild dicts with sorted keys (Dense_10 < Dense_2)
  remapped = jax.tree.map(lambda a: a, params)
  assert list(remapped["params"]) [:3] == ["Dense_0", "Dense_1", "Dense_10"]
  assert module_paths(remapped) == names
  assert edges(architecture_graph(remapped)) == chain


def test_params_only_chain_follows_insertion_order_but_node_order_is_natural():

  class Interleaved(nn.Module):

    @nn.compact
    def __call__(self, x):
      x = nn.LayerNorm()(nn.Dense(4)(x))
      return nn.LayerNorm()(nn.Dense(4)(x))

  params = Interleaved().init(KEY, X)  # not jitted / eval_shape'd: keeps creation order
  assert module_paths(params) == ("Dense_0", "Dense_1", "LayerNorm_0", "LayerNorm_1")
  assert named_edges(architecture_graph(params), params) == {
      ("Dense_0", "LayerNorm_0", "sequential"), ("LayerNorm_0", "Dense_1", "sequential"),
      ("Dense_1", "LayerNorm_1", "sequential")}
  # node order (and module_index) does not depend on dict insertion order
  assert module_index(jax.tree.map(lambda a: a, params)) == module_index(params)


# ------------------------------------------------------------------- activations

ACTIVATION_CASES = {
    "relu": nn.relu,
    "gelu_tanh": lambda x: nn.gelu(x, approximate=True),
    "gelu_erf": lambda x: nn.gelu(x, approximate=False),
    "silu": nn.silu,
    "tanh": nn.tanh,
    "sigmoid": nn.sigmoid,
    "leaky_relu": nn.leaky_relu,
    "elu": nn.elu,
    "none": lambda x: x,
}


@pytest.mark.parametrize("case", sorted(ACTIVATION_CASES))
def test_activation_after_each_layer_is_recovered(case):
  graph, _ = _traced(MLP(act=ACTIVATION_CASES[case]))
  expected = case.split("_")[0] if case.startswith("gelu") else case
  assert activations(graph) == [expected, expected, "none"]


@pytest.mark.parametrize("expected, act", [
    ("relu", lambda x: jnp.maximum(x, 0.0)),
    ("silu", lambda x: x * jax.nn.sigmoid(x)),
    ("leaky_relu", lambda x: jnp.where(x > 0, x, 0.1 * x)),
    ("unknown", jnp.sin),
])
def test_handwritten_activation_is_recovered_from_primitives(expected, act):
  graph, _ = _traced(MLP(act=act))
  assert activations(graph)[:2] == [expected, expected]


def test_params_only_graph_marks_activations_unknown():
  assert activations(architecture_graph(_init(MLP()))) == ["unknown"] * 3


def test_layer_norm_statistics_are_not_read_as_an_activation():
  # flax LayerNorm clamps its variance with max(var, 0): not a relu of the Dense

  class DenseNorm(nn.Module):

    @nn.compact
    def __call__(self, x):
      return nn.Dense(2)(nn.gelu(nn.LayerNorm()(nn.Dense(4)(x))))

  graph, params = _traced(DenseNorm())
  acts = dict(zip(module_paths(params), activations(graph)))
  assert acts == {"Dense_0": "none", "LayerNorm_0": "gelu", "Dense_1": "none"}
  assert dict(zip(module_paths(params), kinds(graph)))["LayerNorm_0"] == "norm"


def test_relu_before_global_average_pooling_is_recovered():

  class PoolNet(nn.Module):

    @nn.compact
    def __call__(self, x):
      return nn.Dense(2)(nn.relu(nn.Conv(3, (3, 3))(x)).mean(axis=(1, 2)))

  graph, _ = _traced(PoolNet(), jnp.ones((1, 4, 4, 2)))
  assert activations(graph) == ["relu", "none"]


# ---------------------------------------------------------------- determinism


def test_features_identical_for_two_inits_of_one_architecture():
  for build in (lambda key: _traced(ResMLP(), key=key, abstract=False)[0],
                lambda key: architecture_graph(ResMLP().init(key, X))):
    a, b = build(jax.random.key(1)), build(jax.random.key(2))
    for field in ("nodes", "edges", "senders", "receivers", "n_node", "n_edge", "globals"):
      np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


@pytest.mark.parametrize("other", [MLP(width=8), MLP(act=nn.tanh), ResMLP()])
def test_features_differ_between_two_architectures(other):
  base, _ = _traced(MLP())
  graph, _ = _traced(other)
  same = (base.nodes.shape == graph.nodes.shape
          and np.array_equal(base.nodes, graph.nodes) and edges(base) == edges(graph))
  assert not same


# --------------------------------------------------------------- model flavours


class NnxNet(nnx.Module):

  def __init__(self, rngs: nnx.Rngs):
    self.inp = nnx.Linear(3, 4, rngs=rngs)
    self.blocks = nnx.List([nnx.Linear(4, 4, rngs=rngs) for _ in range(2)])
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.drop = nnx.Dropout(0.1, rngs=rngs)

  def __call__(self, x):
    x = jax.nn.gelu(self.inp(x))
    for block in self.blocks:
      x = x + nnx.silu(block(x))
    return self.drop(self.bn(x))


def test_nnx_model_traced_via_split_and_merge():
  model = NnxNet(nnx.Rngs(0))
  model.eval()
  graphdef, state = nnx.split(model)  # includes BatchStat and RNG state: not nodes
  graph = architecture_graph(lambda s, x: nnx.merge(graphdef, s)(x), state, X)
  params = nnx.state(model, nnx.Param)
  assert module_paths(params) == ("blocks/0", "blocks/1", "bn", "inp")
  assert module_paths(state) == module_paths(params)
  acts = dict(zip(module_paths(params), activations(graph)))
  assert acts == {"inp": "gelu", "blocks/0": "silu", "blocks/1": "silu", "bn": "none"}
  assert named_edges(graph, params) == {
      ("inp", "blocks/0", "sequential"), ("blocks/0", "blocks/1", "sequential"),
      ("blocks/1", "bn", "sequential"), ("inp", "blocks/1", "skip"), ("inp", "bn", "skip"),
      ("blocks/0", "bn", "skip")}
  check_graph_matches_params(graph, params)


def test_nnx_module_alone_gives_the_params_only_graph():
  model = NnxNet(nnx.Rngs(0))
  graph = architecture_graph(model)
  assert graph.n_node.tolist() == [4]
  check_graph_matches_params(graph, nnx.state(model, nnx.Param))
  assert len(module_index(model)) == len(jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_plain_function_of_a_dict_of_params():
  params = {"hidden": {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)},
            "head": {"w": jnp.ones((4, 1))}}

  def apply(p, x):
    return jnp.tanh(x @ p["hidden"]["w"] + p["hidden"]["b"]) @ p["head"]["w"]

  graph = architecture_graph(apply, params, X)
  assert module_paths(params) == ("head", "hidden")
  assert named_edges(graph, params) == {("hidden", "head", "sequential")}
  assert dict(zip(module_paths(params), activations(graph))) == {"hidden": "tanh",
                                                                 "head": "none"}


def test_list_of_dicts_params_gives_one_node_per_list_entry():
  params = [{"w": jnp.ones((3, 4))}, {"w": jnp.ones((4, 2))}]
  graph = architecture_graph(lambda p, x: jax.nn.relu(x @ p[0]["w"]) @ p[1]["w"], params, X)
  assert module_paths(params) == ("0", "1")
  assert edges(graph) == {(0, 1, "sequential")}
  assert activations(graph) == ["relu", "none"]


def test_nested_jaxprs_are_seen_through():
  # jit, remat, custom_vjp and scan (stacked params) around the layers

  @jax.custom_vjp
  def swish(x):
    return x * jax.nn.sigmoid(x)

  swish.defvjp(lambda x: (swish(x), x), lambda x, g: (g,))
  params = {"a": {"w": jnp.ones((3, 4))}, "stack": {"w": jnp.ones((2, 4, 4))},
            "z": {"w": jnp.ones((4, 1))}}

  def apply(p, x):
    h = jax.checkpoint(lambda x: swish(x @ p["a"]["w"]))(x)
    h, _ = jax.lax.scan(lambda c, w: (jax.nn.elu(c @ w), None), h, p["stack"]["w"])
    return jax.jit(lambda h: h @ p["z"]["w"])(h)

  graph = architecture_graph(apply, params, X)
  assert edges(graph) == {(0, 1, "sequential"), (1, 2, "sequential")}
  assert activations(graph) == ["silu", "elu", "none"]
  # a kernel stacked for scan is read from its use by dot_general: dense, (4, 4)
  assert kinds(graph) == ["dense", "dense", "dense"]
  assert by_name(graph, params, "log_fan_in")["stack"] == pytest.approx(np.log1p(4))


def test_attention_dense_general_kernels_are_dense_in_the_traced_graph():

  class Attn(nn.Module):

    @nn.compact
    def __call__(self, tokens):
      h = nn.Embed(10, 8)(tokens)
      return h + nn.MultiHeadDotProductAttention(num_heads=2)(h)

  tokens = jnp.zeros((1, 5), jnp.int32)
  params = jax.eval_shape(Attn().init, KEY, tokens)
  graph = architecture_graph(Attn().apply, params, tokens)
  got = dict(zip(module_paths(params), kinds(graph)))
  assert got["Embed_0"] == "embedding"
  assert {got[f"MultiHeadDotProductAttention_0/{k}"]
          for k in ("query", "key", "value", "out")} == {"dense"}
  # heads * head_dim = 8 features in and out of the output projection
  fan_in = by_name(graph, params, "log_fan_in")["MultiHeadDotProductAttention_0/out"]
  assert fan_in == pytest.approx(np.log1p(8))


def test_linen_non_param_collections_are_not_nodes():

  class BN(nn.Module):

    @nn.compact
    def __call__(self, x):
      return nn.Dense(2)(nn.relu(nn.BatchNorm(use_running_average=True)(nn.Dense(4)(x))))

  variables = _init(BN())
  assert set(variables) == {"params", "batch_stats"}
  graph = architecture_graph(BN().apply, variables, X)
  assert module_paths(variables) == ("BatchNorm_0", "Dense_0", "Dense_1")
  assert kinds(graph) == ["norm", "dense", "dense"]
  assert activations(graph) == ["relu", "none", "none"]
  check_graph_matches_params(graph, variables["params"])
  with pytest.raises(ValueError, match="non-parameter state"):
    module_index(variables)


# ----------------------------------------------------------------- module_index


def test_module_index_is_consistent_with_nodes():
  for params in (_init(ResMLP()),
                 nnx.state(NnxNet(nnx.Rngs(0)), nnx.Param),
                 _init(ResCNN(), jnp.ones((1, 4, 4, 2)))["params"]):
    leaves = jax.tree.leaves(params)
    index = module_index(params)
    graph = architecture_graph(params)
    assert len(index) == len(leaves)
    assert sorted(set(index)) == list(range(int(graph.n_node[0])))
    counts = np.zeros(int(graph.n_node[0]))
    for i, leaf in zip(index, leaves):
      counts[i] += leaf.size
    np.testing.assert_allclose(np.asarray(graph.nodes)[:, _col("log_num_params")],
                               np.log1p(counts), rtol=1e-6)


def test_graph_matches_params_detects_another_architecture():
  params = MLP().init(KEY, X)
  graph, _ = _traced(MLP())
  assert graph_matches_params(graph, params)
  assert graph_matches_params(graph, jax.tree.map(jnp.zeros_like, params))
  assert not graph_matches_params(graph, _init(MLP(width=8)))
  with pytest.raises(ValueError, match="graph has 3 nodes but params has 4 modules"):
    check_graph_matches_params(graph, _init(ResMLP()))
  with pytest.raises(ValueError, match="node 0 has 16 parameters but module 'Dense_0' has 32"):
    check_graph_matches_params(graph, _init(MLP(width=8)))


# ------------------------------------------------------------------- bad input

_W = {"layer": {"w": jnp.ones((3, 3))}}


@pytest.mark.parametrize("call, error, match", [
    (lambda: architecture_graph({}), ValueError, "no array leaves"),
    (lambda: architecture_graph(None), ValueError, "params is None"),
    (lambda: architecture_graph({"layer": {"kernel": "abc"}}), TypeError,
     "'layer/kernel' is a str, expected an array"),
    (lambda: architecture_graph(lambda p, x: 2 * x, _W, X), ValueError,
     "used none of the 1 parameter modules"),
    (lambda: architecture_graph(lambda p, x: x @ p["layer"]["w"], None, X), ValueError,
     "needs params"),
    (lambda: architecture_graph(_W, X), TypeError, "not callable"),
    (lambda: architecture_graph(NnxNet(nnx.Rngs(0)), X), TypeError, "nnx.split"),
    (lambda: architecture_graph({"batch_stats": {"bn": {"mean": jnp.ones(2)}},
                                 "params": {}}), ValueError, "no trainable parameters"),
])
def test_bad_input_raises_an_error_naming_the_problem(call, error, match):
  with pytest.raises(error, match=match):
    call()


def test_tracing_failure_keeps_the_error_and_adds_a_note():
  with pytest.raises(TypeError) as info:
    architecture_graph(lambda p, x: x @ p["layer"]["w"], _W, jnp.ones((1, 5)))
  assert any("mapa_jax.architecture_graph" in note for note in info.value.__notes__)
