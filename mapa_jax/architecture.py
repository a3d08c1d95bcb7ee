"""Architecture graphs: a model as a `jraph.GraphsTuple` (MAPA paper, Eq. 8-10).

Nodes are the *modules that own parameters* (a module is the container holding
leaves such as ``kernel``/``bias``/``scale``/``embedding``/``w``/``b``), edges are the
connections between them. Two constructors share one entry point:

* ``architecture_graph(params)`` reads the params tree alone: node features come
  from shapes and names, the edges are a chain in layer order, activations are
  ``"unknown"``.
* ``architecture_graph(apply_fn, params, *example_inputs)`` traces
  ``jax.make_jaxpr(apply_fn)(params, *example_inputs)`` and recovers the real
  dataflow: residual connections become ``"skip"`` edges and the activation that
  follows each layer becomes a node feature.

Both run once (at optimizer init), in pure Python; features depend only on shapes
and on the structure of the computation, never on parameter values, so two inits
of one architecture give identical graphs.

Node order (one rule, shared with `module_index`)
    Node ``i`` is the ``i``-th module in *natural-sort* order of module paths
    (``Dense_2`` before ``Dense_10``; path elements compared one by one, digit runs
    numerically). This order depends only on the set of keys, never on dict
    insertion order, so params that went through ``jax.tree.map`` (which rebuilds
    dicts with sorted keys) map to the same nodes as the freshly initialised ones.

Layer order (what edges and depth describe)
    Params-only graph: the chain follows dict insertion order (creation order for
    un-jitted Flax linen ``init``), except in dicts whose keys are already in plain
    sorted order, where natural sort is used instead. ``jax.tree.map``, ``jax.jit``
    and ``jax.eval_shape`` outputs and nnx states have sorted keys, so there the
    chain is alphabetical (``Dense_*`` before ``LayerNorm_*``): prefer the traced
    graph. Traced graph: execution order, the order in which the modules'
    parameters are first used.

Traced dataflow
    A *layer op* is a primitive combining a module's parameter (or a value computed
    from parameters and constants only: casts, reshapes, slices) with data derived
    from the inputs; e.g. ``dot_general``/``conv_general_dilated`` with a kernel,
    ``mul``/``add`` with a norm's scale/bias, ``gather`` from an embedding table.
    Every other primitive on data is a *non-layer op*. Nested jaxprs (jit/pjit,
    closed_call, custom_jvp_call, custom_vjp_call, remat, shard_map, one step of
    scan) are inlined; ``cond``/``while`` are treated as one opaque non-layer op.
    Edge A -> B exists if a value produced by A's layer ops reaches an input of a
    layer op of B through non-layer ops only. It is ``"sequential"`` if B directly
    follows A in execution order, else ``"skip"``. Reaching is transitive through
    identity paths: in a residual stream a block's output reaches every later
    block, so a ResNet of n blocks has O(n^2) skip edges (the dataflow as it is).
    Relative depth is the longest-path depth along edges, divided by its maximum.

Activation of a layer
    Read from the ops on the main path from A to the earliest layer it feeds (or
    to the outputs): first by the name of an enclosing jax.nn call (``relu``,
    ``silu``, ``leaky_relu``, ``elu``, ``relu6`` are jit/custom_jvp calls named so
    on JAX 0.10), else by primitive signature: ``erf``/``erfc`` or ``tanh`` with
    ``integer_pow[y=3]`` -> gelu; ``logistic`` multiplied by its own input -> silu,
    alone -> sigmoid; ``tanh`` -> tanh; ``expm1`` (or ``exp`` with ``select_n``)
    -> elu; ``max`` with a constant -> relu; ``select_n``/``max`` of x and c*x ->
    leaky_relu; other transcendental primitives (``exp`` of a softmax, ``sin``,
    ...) -> unknown; nothing nonlinear -> none. Values computed only from
    reductions (a norm's mean/variance, whose ``max(var, 0)`` is not a relu) are
    off the main path unless nothing else is (global average pooling).

Known limitations
    Params-only kinds come from names and shapes: a >=3-D ``DenseGeneral`` kernel
    (attention projections) or params stacked for ``scan`` look like a conv; the
    traced graph corrects this from how ``dot_general`` contracts the kernel. A
    module whose parameters are used before touching any input (a learned query
    fed to another layer) is merged into that layer's flow. Parallel branches
    (q/k/v projections) get one sequential edge and skips, by execution order.
    Weight-shared modules are one node; back edges are marked skip.

Flax nnx pattern::

    graphdef, state = nnx.split(model)
    graph = architecture_graph(lambda s, x: nnx.merge(graphdef, s)(x), state, x)
    # params-only: architecture_graph(model) or architecture_graph(nnx.state(model, nnx.Param))

Non-parameter state is accepted and ignored: linen collections other than
``"params"`` (``batch_stats``, ...) and nnx variables that are not ``nnx.Param``
(``BatchStat``, RNG state, ...) are neither nodes nor layer inputs.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jraph
import numpy as np
from flax import linen
from flax import nnx
from jax.extend import core as jcore

__all__ = [
    "ACTIVATIONS", "EDGE_FEATURES", "EDGE_KINDS", "NODE_FEATURES", "NODE_KINDS",
    "architecture_graph", "check_graph_matches_params", "graph_matches_params",
    "module_index", "module_paths", "num_edge_features", "num_node_features",
]

# --------------------------------------------------------------------------- layout

NODE_KINDS: tuple[str, ...] = ("dense", "conv", "norm", "embedding", "other")
ACTIVATIONS: tuple[str, ...] = (
    "relu", "gelu", "silu", "tanh", "sigmoid", "leaky_relu", "elu", "none", "unknown")
EDGE_KINDS: tuple[str, ...] = ("sequential", "skip")

#: Column names of ``graph.nodes`` (float32), in order:
#: one-hot layer kind; log1p(fan-in); log1p(fan-out); log1p(kernel spatial size,
#: product of spatial dims, 1 for non-conv); log1p(number of parameters);
#: relative depth in [0, 1]; one-hot activation applied after the layer.
NODE_FEATURES: tuple[str, ...] = (
    tuple(f"kind_{k}" for k in NODE_KINDS)
    + ("log_fan_in", "log_fan_out", "log_spatial", "log_num_params", "depth")
    + tuple(f"act_{a}" for a in ACTIVATIONS))
#: Column names of ``graph.edges`` (float32): one-hot connection kind (Eq. 9's c).
EDGE_FEATURES: tuple[str, ...] = tuple(f"edge_{k}" for k in EDGE_KINDS)

_KERNEL_NAMES = frozenset({"kernel", "w", "weight", "weights"})
_EMBEDDING_NAMES = frozenset({"embedding", "embeddings"})
_NORM_NAMES = frozenset({"scale", "bias", "b", "offset", "gamma", "beta"})


def num_node_features() -> int:
  """Number of columns of ``graph.nodes`` (``len(NODE_FEATURES)``)."""
  return len(NODE_FEATURES)


def num_edge_features() -> int:
  """Number of columns of ``graph.edges`` (``len(EDGE_FEATURES)``)."""
  return len(EDGE_FEATURES)


# --------------------------------------------------------------------- params table


@dataclasses.dataclass(frozen=True)
class _Leaf:
  module: tuple[str, ...] | None  # module path; None for non-parameter state
  name: str                       # leaf name inside its module ("kernel", ...)
  shape: tuple[int, ...]


@dataclasses.dataclass
class _Module:
  path: tuple[str, ...]
  leaves: list[int]               # positions in tree_leaves(params)
  kind: str = "other"
  fan_in: int = 1
  fan_out: int = 1
  spatial: int = 1
  num_params: int = 0


def _natural_key(name: str) -> tuple:
  parts = tuple((0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", name) if t)
  return (parts, name)


def _key_name(key: Any) -> str:
  for attr in ("key", "idx", "name"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _path_str(path: Sequence[str]) -> str:
  return "/".join(path) if path else "<root>"


def _is_variables_dict(tree: Any) -> bool:
  return isinstance(tree, Mapping) and isinstance(tree.get("params"), Mapping)


class _Table:
  """Leaves of a params tree, grouped into modules in canonical (natural) order."""

  def __init__(self, tree: Any):
    if tree is None:
      raise ValueError("params is None; expected a pytree of arrays (e.g. model.init(...)).")
    if isinstance(tree, nnx.Module):
      tree = nnx.state(tree, nnx.Param)
    self.tree = tree
    self.leaves: list[_Leaf] = []
    raw_paths: dict[tuple[str, ...], tuple] = {}
    is_var = lambda x: isinstance(x, nnx.Variable)
    for path, node in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_var)[0]:
      is_param = isinstance(node, nnx.Param) if is_var(node) else True
      for sub, leaf in jax.tree_util.tree_flatten_with_path(node)[0]:
        full = tuple(path) + (() if is_var(node) else tuple(sub))
        if _is_variables_dict(tree):  # linen: only the "params" collection is trainable
          is_param = is_param and _key_name(full[0]) == "params"
          full = full[1:]
        while (full and isinstance(full[-1], jax.tree_util.GetAttrKey)
               and full[-1].name in ("value", "raw_value")):
          full = full[:-1]  # boxed leaves (nn.Partitioned, ...)
        names = tuple(_key_name(k) for k in full)
        where = _path_str(names)
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
          raise TypeError(f"params leaf at {where!r} is a {type(leaf).__name__}, expected an "
                          "array (jax.Array, np.ndarray or jax.ShapeDtypeStruct).")
        module = names[:-1] if is_param else None
        if is_param:
          raw_paths.setdefault(module, full[:-1])
        self.leaves.append(_Leaf(module, names[-1] if names else "", tuple(leaf.shape)))
    if not self.leaves:
      raise ValueError(f"params ({type(tree).__name__}) has no array leaves; expected a "
                       "non-empty pytree of parameter arrays.")
    paths = sorted({l.module for l in self.leaves if l.module is not None},
                   key=lambda p: tuple(_natural_key(s) for s in p))
    if not paths:
      raise ValueError("params holds no trainable parameters: every leaf is non-parameter "
                       "state (a linen collection other than 'params', or a non-Param nnx "
                       "variable).")
    self.index = {p: i for i, p in enumerate(paths)}
    self.modules = [_Module(p, []) for p in paths]
    for i, leaf in enumerate(self.leaves):
      if leaf.module is not None:
        self.modules[self.index[leaf.module]].leaves.append(i)
    for m in self.modules:
      _describe_from_shapes(m, [self.leaves[i] for i in m.leaves])
    self._raw_paths = raw_paths

  def module_of_leaf(self, i: int) -> int | None:
    module = self.leaves[i].module
    return None if module is None else self.index[module]

  def layer_order(self) -> list[int]:
    """Module indices in insertion order (natural order within already-sorted dicts)."""
    root = self.tree["params"] if _is_variables_dict(self.tree) else self.tree

    def rank(raw_path: tuple) -> tuple:
      node, out = root, []
      for key in raw_path:
        name = _key_name(key)
        names = None
        if isinstance(node, Mapping):
          names = [str(k) for k in node.keys()]
        elif isinstance(node, (list, tuple)):
          names = [str(i) for i in range(len(node))]
        if names is None or name not in names or names == sorted(names):
          out.append((1, _natural_key(name)))
        else:
          out.append((0, names.index(name)))
        try:
          node = node[key.key] if hasattr(key, "key") else (
              node[key.idx] if hasattr(key, "idx") else getattr(node, key.name))
        except Exception:  # custom pytree node we cannot walk: natural order below
          node = None
      return tuple(out)

    return sorted(range(len(self.modules)),
                  key=lambda i: (rank(self._raw_paths[self.modules[i].path]), i))


def _describe_from_shapes(m: _Module, leaves: list[_Leaf]) -> None:
  """Kind, fan-in/out and spatial size of one module, from leaf names and shapes.

  embedding: a leaf named embedding(s) of shape (vocab, features): fan_in=vocab.
  dense: a 2-D kernel (named kernel/w/weight, else the largest >=2-D leaf), (in, out).
  conv: a >=3-D kernel, Flax layout (*spatial, in, out): fan_in=in (per group).
  norm: only 1-D scale/bias/offset-like leaves: fan_in = fan_out = their size.
  other: anything else; fan_in/fan_out = first/last dim of its largest leaf.
  """
  m.num_params = sum(math.prod(l.shape) for l in leaves)
  embed = [l for l in leaves if l.name in _EMBEDDING_NAMES and len(l.shape) == 2]
  kernels = [l for l in leaves if l.name in _KERNEL_NAMES and len(l.shape) >= 2]
  kernels = kernels or sorted((l for l in leaves if len(l.shape) >= 2),
                              key=lambda l: -math.prod(l.shape))
  biggest = max(leaves, key=lambda l: math.prod(l.shape))
  if embed:
    m.kind, (m.fan_in, m.fan_out) = "embedding", embed[0].shape
  elif kernels and len(kernels[0].shape) == 2:
    m.kind, (m.fan_in, m.fan_out) = "dense", kernels[0].shape
  elif kernels:
    shape = kernels[0].shape
    m.kind, m.fan_in, m.fan_out, m.spatial = "conv", shape[-2], shape[-1], math.prod(shape[:-2])
  elif all(l.name in _NORM_NAMES and len(l.shape) <= 1 for l in leaves):
    m.kind, m.fan_in = "norm", math.prod(biggest.shape)
    m.fan_out = m.fan_in
  else:
    m.kind = "other"
    m.fan_in = biggest.shape[0] if biggest.shape else 1
    m.fan_out = biggest.shape[-1] if biggest.shape else 1


# ------------------------------------------------------------------- public helpers


def module_paths(params: Any) -> tuple[str, ...]:
  """Module names ("Dense_0", "layers/1", ...) in node order."""
  return tuple(_path_str(m.path) for m in _Table(params).modules)


def module_index(params: Any) -> tuple[int, ...]:
  """For each leaf of ``jax.tree_util.tree_leaves(params)``, the node owning it.

  Consistent with the node order of both `architecture_graph` constructors, and
  unchanged by ``jax.tree.map`` (node order is natural sort of module paths). An
  ``nnx.Module`` is read as ``nnx.state(model, nnx.Param)`` (indices refer to its leaves).
  Raises ValueError if ``params`` holds non-parameter state (pass the trainable
  params only: ``variables["params"]`` or ``nnx.state(model, nnx.Param)``).
  """
  table = _Table(params)
  owners = [table.module_of_leaf(i) for i in range(len(table.leaves))]
  if None in owners:
    raise ValueError("module_index expects trainable parameters only, but leaf "
                     f"{owners.index(None)} of params is non-parameter state; pass "
                     "variables['params'] or nnx.state(model, nnx.Param).")
  return tuple(owners)


def check_graph_matches_params(graph: jraph.GraphsTuple, params: Any) -> None:
  """Raise ValueError, naming the numbers, if ``graph`` was not built for ``params``.

  Checks the feature layout, that the graph is a single graph with one node per
  module, and that each node's parameter-count feature equals its module's.
  """
  table = _Table(params)
  nodes = np.asarray(graph.nodes)
  if nodes.ndim != 2 or nodes.shape[1] != num_node_features():
    raise ValueError(f"graph.nodes has shape {nodes.shape}, expected (num_nodes, "
                     f"{num_node_features()}) as laid out in NODE_FEATURES.")
  if np.shape(graph.n_node) != (1,):
    raise ValueError(f"expected a single graph (n_node of shape (1,)), got n_node of "
                     f"shape {np.shape(graph.n_node)}.")
  if nodes.shape[0] != len(table.modules):
    raise ValueError(f"graph has {nodes.shape[0]} nodes but params has "
                     f"{len(table.modules)} modules ({', '.join(module_paths(params))}).")
  col = NODE_FEATURES.index("log_num_params")
  for i, m in enumerate(table.modules):
    if not np.isclose(nodes[i, col], np.log1p(m.num_params), rtol=1e-5):
      raise ValueError(f"node {i} has {np.expm1(nodes[i, col]):.0f} parameters but module "
                       f"{_path_str(m.path)!r} has {m.num_params}: the graph was built for "
                       "another architecture.")


def graph_matches_params(graph: jraph.GraphsTuple, params: Any) -> bool:
  """True if `check_graph_matches_params` passes."""
  try:
    check_graph_matches_params(graph, params)
  except ValueError:
    return False
  return True


# ------------------------------------------------------------------ graph assembly


def _graphs_tuple(table: _Table, depth: Mapping[int, float], act: Mapping[int, str],
                  edges: Mapping[tuple[int, int], str]) -> jraph.GraphsTuple:
  n = len(table.modules)
  nodes = np.zeros((n, num_node_features()), np.float32)
  for i, m in enumerate(table.modules):
    values = {f"kind_{m.kind}": 1.0, f"act_{act.get(i, 'unknown')}": 1.0,
              "log_fan_in": np.log1p(m.fan_in), "log_fan_out": np.log1p(m.fan_out),
              "log_spatial": np.log1p(m.spatial), "log_num_params": np.log1p(m.num_params),
              "depth": depth.get(i, 0.0)}
    for name, value in values.items():
      nodes[i, NODE_FEATURES.index(name)] = value
  pairs = sorted(edges)
  edge_feats = np.zeros((len(pairs), num_edge_features()), np.float32)
  for e, pair in enumerate(pairs):
    edge_feats[e, EDGE_KINDS.index(edges[pair])] = 1.0
  # NumPy arrays: the graph is a constant, also when it is first built while a
  # jit trace is running (jnp arrays made there would be tracers of that trace).
  return jraph.GraphsTuple(
      nodes=nodes, edges=edge_feats,
      senders=np.asarray([s for s, _ in pairs], np.int32).reshape(-1),
      receivers=np.asarray([r for _, r in pairs], np.int32).reshape(-1),
      globals=np.zeros((1, 1), np.float32),
      n_node=np.asarray([n], np.int32), n_edge=np.asarray([len(pairs)], np.int32))


def _params_graph(table: _Table) -> jraph.GraphsTuple:
  order = table.layer_order()
  denom = max(len(order) - 1, 1)
  depth = {m: pos / denom for pos, m in enumerate(order)}
  edges = {(a, b): "sequential" for a, b in zip(order, order[1:])}
  return _graphs_tuple(table, depth, {}, edges)


def architecture_graph(fn_or_params: Any, params: Any = None,
                       *example_inputs: Any) -> jraph.GraphsTuple:
  """A model's architecture as a single-graph `jraph.GraphsTuple`.

  Args:
    fn_or_params: either the params tree (Flax linen variables, with or without
      the outer ``"params"``; an ``nnx.State`` or ``nnx.Module``; nested dicts or
      lists of arrays), or ``apply_fn`` called as ``apply_fn(params, *example_inputs)``
      (a linen ``Module`` instance is taken as ``module.apply``).
    params: the params tree, when the first argument is ``apply_fn``.
    *example_inputs: arrays (or pytrees of arrays) to trace ``apply_fn`` with; only
      their shapes and dtypes matter.

  Returns:
    ``GraphsTuple`` with ``nodes`` float32 ``(N, num_node_features())`` laid out as
    `NODE_FEATURES`, ``edges`` float32 ``(E, 2)`` one-hot (sequential, skip),
    int32 ``senders``/``receivers``, ``globals`` zeros ``(1, 1)``, ``n_node=[N]``,
    ``n_edge=[E]``. Node ``i`` is the module `module_index` maps to ``i``.
  """
  if isinstance(fn_or_params, nnx.Module):
    if params is not None or example_inputs:
      raise TypeError("to trace an nnx model, split it: graphdef, state = nnx.split(model); "
                      "architecture_graph(lambda s, *xs: nnx.merge(graphdef, s)(*xs), state, *xs).")
    return _params_graph(_Table(fn_or_params))
  if isinstance(fn_or_params, linen.Module):
    fn_or_params = fn_or_params.apply
  if not callable(fn_or_params):
    if params is not None or example_inputs:
      raise TypeError(f"the first argument ({type(fn_or_params).__name__}) is not callable, so "
                      "it is read as the params tree and nothing may follow it; to trace a "
                      "model pass architecture_graph(apply_fn, params, *example_inputs).")
    return _params_graph(_Table(fn_or_params))
  if params is None:
    raise ValueError("architecture_graph(apply_fn, params, *example_inputs) needs params; "
                     "got params=None.")
  return _traced_graph(fn_or_params, _Table(params), params, example_inputs)


# ------------------------------------------------------------------------- tracing

_INPUT = -1  # pseudo-source: the example inputs

# Primitives that leave a value's identity as a parameter leaf unchanged.
_SAME_VALUE = frozenset({"convert_element_type", "copy", "copy_p", "reduce_precision",
                         "device_put", "optimization_barrier"})
# Reductions: their outputs are statistics (norm mean/var, softmax max), not the
# main data path, so no activation is read from ops that only compute statistics.
_REDUCTIONS = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod",
                         "reduce_and", "reduce_or", "argmax", "argmin"})
# Nonlinear elementwise primitives that are not one of the recognised activations.
_OTHER_NONLINEAR = frozenset({
    "exp", "exp2", "log", "log1p", "sin", "cos", "tan", "asin", "acos", "atan", "atan2",
    "sinh", "cosh", "asinh", "acosh", "atanh", "abs", "sign", "floor", "ceil", "round",
    "pow", "integer_pow", "square", "sqrt", "rsqrt", "cbrt", "erf_inv", "lgamma", "digamma"})
# Names of jit / custom_jvp calls of jax.nn activations on this JAX version.
_NAMED_ACTIVATIONS = {"relu": "relu", "relu6": "relu", "gelu": "gelu", "silu": "silu",
                      "swish": "silu", "leaky_relu": "leaky_relu", "elu": "elu",
                      "sigmoid": "sigmoid", "tanh": "tanh"}


@dataclasses.dataclass(frozen=True)
class _Val:
  """What the analysis knows about one jaxpr value."""
  uid: int = -1
  param: int | None = None     # module id if computed from its params (and constants) only
  leaf: int | None = None      # leaf id if it *is* that leaf (up to dtype)
  sources: Mapping[int, frozenset[int]] = dataclasses.field(default_factory=dict)
  stat: bool = False           # computed from reductions only (a statistic)


_CONST = _Val()


@dataclasses.dataclass(frozen=True)
class _Op:
  """A non-layer primitive on a data path (candidate activation)."""
  prim: str
  names: tuple[str, ...]                # enclosing jit/custom_jvp call names, outer first
  ins: tuple[int, ...]                  # uids of inputs (-1: constant)
  in_data: tuple[bool, ...]             # input carries data (not a constant or parameter)
  in_stat: tuple[bool, ...]             # input is a statistic (see `_Val.stat`)
  outs: tuple[int, ...]
  params: Mapping[str, Any]


def _prefer_data(items: list[Any], is_stat: list[bool]) -> list[Any]:
  """The non-statistic items if there are any, else all of them."""
  data = [x for x, st in zip(items, is_stat) if not st]
  return data or items


def _sub_jaxpr(eqn: Any) -> Any | None:
  """The jaxpr to inline for a call-like eqn, else None.

  Inlines any eqn carrying one (Closed)Jaxpr whose inputs/outputs match the eqn's
  one to one: jit/pjit, closed_call, custom_jvp_call, custom_vjp_call, remat,
  shard_map, and scan (one iteration). cond/while are opaque.
  """
  if eqn.primitive.name in ("while", "cond"):
    return None
  for value in eqn.params.values():
    jaxpr = value.jaxpr if isinstance(value, jcore.ClosedJaxpr) else value
    if (isinstance(jaxpr, jcore.Jaxpr) and len(jaxpr.invars) == len(eqn.invars)
        and len(jaxpr.outvars) == len(eqn.outvars)):
      return jaxpr
  return None


class _Tracer:
  """Abstract interpretation of a jaxpr over `_Val`s, recording layers and flows."""

  def __init__(self, table: _Table):
    self.table = table
    self.ops: list[_Op] = []
    self.producer: dict[int, int] = {}                    # uid -> index in self.ops
    self.first_use: dict[int, int] = {}                   # module -> step of first layer op
    self.flows: dict[tuple[int, int], list[_Val]] = collections.defaultdict(list)
    self.outputs: dict[int, list[_Val]] = collections.defaultdict(list)
    self.shape_hints: dict[int, tuple[str, int, int, int]] = {}  # module -> kind, fans, spatial
    self._uid = 0
    self._step = 0

  def new_value(self, **kw: Any) -> _Val:
    self._uid += 1
    return _Val(uid=self._uid, **kw)

  def walk(self, jaxpr: Any, args: Sequence[_Val], names: tuple[str, ...] = ()) -> list[_Val]:
    env: dict[Any, _Val] = dict(zip(jaxpr.invars, args))
    read = lambda v: _CONST if isinstance(v, jcore.Literal) else env.get(v, _CONST)
    for eqn in jaxpr.eqns:
      ins = [read(v) for v in eqn.invars]
      sub = _sub_jaxpr(eqn)
      if sub is not None:
        name = eqn.params.get("name")
        inner_names = names + (name,) if isinstance(name, str) else names
        outs = self.walk(sub, ins, inner_names)  # constvars read as constants
      else:
        outs = self._apply(eqn, ins, names)
      env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]

  def _apply(self, eqn: Any, ins: list[_Val], names: tuple[str, ...]) -> list[_Val]:
    self._step += 1
    n_out = len(eqn.outvars)
    prim = eqn.primitive.name
    data = [v for v in ins if v.sources]
    owners = [v.param for v in ins if v.param is not None]
    if owners and not data:  # a computation on parameters (cast, reshape, stack, ...)
      same = len(ins) == 1 and prim in _SAME_VALUE
      return [self.new_value(param=owners[0], leaf=ins[0].leaf if same else None)] * n_out
    if owners:  # a layer op: combines a module's parameter with data
      module = owners[0]
      self.first_use.setdefault(module, self._step)
      self._hint_shapes(module, eqn, ins)
      for v in data:
        for src in v.sources:
          if src != module:
            self.flows[(src, module)].append(v)
      return [self.new_value(sources={module: frozenset()}) for _ in range(n_out)]
    if not data:
      return [_CONST] * n_out
    op_id = len(self.ops)
    merged: dict[int, frozenset[int]] = {}
    for v in data:
      for src, path in v.sources.items():
        merged[src] = merged.get(src, frozenset()) | path
    merged = {src: path | {op_id} for src, path in merged.items()}
    stat = prim in _REDUCTIONS or all(v.stat for v in data)
    outs = [self.new_value(sources=merged, stat=stat) for _ in range(n_out)]
    self.ops.append(_Op(prim, names, tuple(v.uid for v in ins),
                        tuple(bool(v.sources) for v in ins), tuple(v.stat for v in ins),
                        tuple(v.uid for v in outs), eqn.params))
    for v in outs:
      self.producer[v.uid] = op_id
    return outs

  def _hint_shapes(self, module: int, eqn: Any, ins: list[_Val]) -> None:
    """Read a kernel's fan-in/out from how dot_general / conv use it (exact layouts)."""
    prim = eqn.primitive.name
    if prim not in ("dot_general", "conv_general_dilated"):
      return
    for pos, v in enumerate(ins):
      shape = tuple(eqn.invars[pos].aval.shape)
      if v.leaf is None or len(shape) < 2:
        continue
      leaf_shape = self.table.leaves[v.leaf].shape
      if leaf_shape[len(leaf_shape) - len(shape):] != shape:
        continue  # not the leaf itself (one slice of params stacked for scan is fine)
      if prim == "conv_general_dilated" and pos == 1:
        spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial)
        self.shape_hints[module] = ("conv", shape[spec[1]], shape[spec[0]],
                                    math.prod(shape[d] for d in spec[2:]))
      elif prim == "dot_general" and module not in self.shape_hints:
        (contract, batch) = (eqn.params["dimension_numbers"][0][pos],
                             eqn.params["dimension_numbers"][1][pos])
        fan_in = math.prod(shape[d] for d in contract)
        fan_out = math.prod(s for d, s in enumerate(shape) if d not in contract and d not in batch)
        self.shape_hints[module] = ("dense", fan_in, fan_out, 1)

  # --------------------------------------------------------------- activations

  def activation(self, module: int, targets: Sequence[int], order: Mapping[int, int]) -> str:
    """The activation on the main path from ``module`` to the next layer it feeds.

    The main path: walking back from where that layer consumes ``module``'s output,
    the ops reached through non-statistic inputs (statistics only when an op has
    nothing else, e.g. after global pooling). So a norm's mean/variance branch
    (with its ``max(var, 0)``) is not read as an activation. ``targets``: the
    modules ``module`` flows into.
    """
    later = [t for t in targets if order[t] > order[module]]
    if later or targets:
      consumers = self.flows[(module, min(later or targets, key=order.__getitem__))]
    else:
      consumers = self.outputs.get(module, [])
    main: set[int] = set()
    for v in _prefer_data(consumers, [v.stat for v in consumers]):
      path, stack = v.sources[module], [v.uid]
      while stack:
        op_id = self.producer.get(stack.pop())
        if op_id is None or op_id not in path or op_id in main:
          continue
        main.add(op_id)
        op = self.ops[op_id]
        data = [(u, st) for u, d, st in zip(op.ins, op.in_data, op.in_stat) if d]
        stack.extend(u for u, _ in _prefer_data(data, [st for _, st in data]))
    ops = [self.ops[i] for i in sorted(main)]
    for op in ops:
      found = self._anchor(op, ops)
      if found is not None:
        return found
    return "none"

  def _scaled_copy(self, a: int, b: int) -> bool:
    """True if one of the values ``a``, ``b`` is ``const * other`` (leaky ReLU)."""
    for x, y in ((a, b), (b, a)):
      op_id = self.producer.get(x)
      if op_id is not None and self.ops[op_id].prim == "mul" and y in self.ops[op_id].ins:
        return True
    return False

  def _anchor(self, op: _Op, ops: Sequence[_Op]) -> str | None:
    for name in op.names:
      if name in _NAMED_ACTIVATIONS:
        return _NAMED_ACTIVATIONS[name]
    prims = {o.prim for o in ops}
    cubic = any(o.prim == "integer_pow" and o.params.get("y") == 3 for o in ops)
    if op.prim in ("erf", "erfc") or (op.prim in ("tanh", "integer_pow") and cubic
                                      and "tanh" in prims):
      return "gelu"
    if op.prim == "tanh":
      return "tanh"
    if op.prim == "logistic":
      x, y = op.ins[0], op.outs[0]
      silu = any(o.prim == "mul" and {x, y} <= set(o.ins) for o in ops)
      return "silu" if silu else "sigmoid"
    if op.prim == "expm1" or (op.prim == "exp" and "select_n" in prims):
      return "elu"
    if op.prim == "max":
      if not all(op.in_data):
        return "relu"
      return "leaky_relu" if self._scaled_copy(*op.ins[:2]) else "unknown"
    if op.prim == "select_n" and len(op.ins) == 3 and self._scaled_copy(*op.ins[1:]):
      return "leaky_relu"
    if op.prim in _OTHER_NONLINEAR:
      return "unknown"
    return None


def _traced_graph(fn: Callable[..., Any], table: _Table, params: Any,
                  example_inputs: tuple[Any, ...]) -> jraph.GraphsTuple:
  try:
    closed = jax.make_jaxpr(fn)(params, *example_inputs)
  except Exception as err:
    err.add_note(f"mapa_jax.architecture_graph: tracing apply_fn(params, *example_inputs) with "
                 f"{len(example_inputs)} example input(s) failed; pass the function as "
                 "called in training, e.g. model.apply for linen.")
    raise
  n_params = len(table.leaves)
  n_inputs = len(jax.tree_util.tree_leaves(example_inputs))
  jaxpr = closed.jaxpr
  if len(jaxpr.invars) != n_params + n_inputs:
    raise ValueError(f"traced function has {len(jaxpr.invars)} inputs, expected "
                     f"{n_params} params leaves + {n_inputs} example input leaves.")
  tracer = _Tracer(table)
  args = [tracer.new_value(param=table.module_of_leaf(i), leaf=i)
          if table.module_of_leaf(i) is not None else _CONST for i in range(n_params)]
  args += [tracer.new_value(sources={_INPUT: frozenset()}) for _ in range(n_inputs)]
  outs = tracer.walk(jaxpr, args)  # closed-over constants read as constants
  for v in outs:
    for src in v.sources:
      tracer.outputs[src].append(v)
  if not tracer.first_use:
    raise ValueError(
        f"apply_fn used none of the {len(table.modules)} parameter modules on its "
        f"{n_inputs} example input leaves; expected apply_fn(params, *example_inputs) to "
        "combine parameters with the inputs (does it ignore params, or get no inputs?).")
  for m, (kind, fan_in, fan_out, spatial) in tracer.shape_hints.items():
    module = table.modules[m]
    if module.kind in ("dense", "conv", "other"):
      module.kind, module.fan_in, module.fan_out, module.spatial = kind, fan_in, fan_out, spatial
  used = sorted(tracer.first_use, key=tracer.first_use.__getitem__)
  order = {m: pos for pos, m in enumerate(used)}
  edges: dict[tuple[int, int], str] = {}
  senders_of, receivers_of = collections.defaultdict(list), collections.defaultdict(list)
  for src, dst in tracer.flows:
    if src in order and src != dst:
      edges[(src, dst)] = "sequential" if order[dst] == order[src] + 1 else "skip"
      senders_of[dst].append(src)
      receivers_of[src].append(dst)
  depth: dict[int, int] = {}
  for m in used:  # longest path, along execution order
    depth[m] = max((depth[s] + 1 for s in senders_of[m] if order[s] < order[m]), default=0)
  top = max(depth.values())
  rel_depth = {m: d / top if top else 0.0 for m, d in depth.items()}
  act = {m: tracer.activation(m, receivers_of[m], order) for m in used}
  return _graphs_tuple(table, rel_depth, act, edges)
