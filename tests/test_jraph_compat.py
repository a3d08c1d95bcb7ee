"""Pins which parts of jraph 0.0.6.dev0 (unmaintained) work on this JAX.

jraph still calls the removed ``jax.tree_map`` / ``jax.tree_leaves`` in a few
utilities. The tests that assert those crashes fail the day they are fixed (or
the day JAX brings the aliases back), so we notice and can start using them.
"""

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest


def _graph() -> jraph.GraphsTuple:
  """Path graph 0 -> 1 -> 2 with node features [[1], [2], [3]]."""
  return jraph.GraphsTuple(
      nodes=jnp.array([[1.0], [2.0], [3.0]]), edges=jnp.ones((2, 1)),
      senders=jnp.array([0, 1]), receivers=jnp.array([1, 2]),
      globals=jnp.zeros((1, 1)), n_node=jnp.array([3]), n_edge=jnp.array([2]))


def test_graphs_tuple_is_a_pytree_that_round_trips():
  graph = _graph()
  leaves, treedef = jax.tree.flatten(graph)
  assert len(leaves) == 7
  again = jax.tree.unflatten(treedef, leaves)
  assert isinstance(again, jraph.GraphsTuple)
  np.testing.assert_array_equal(again.senders, graph.senders)


def test_segment_sum_and_segment_mean_aggregate_by_segment():
  data = jnp.array([1.0, 2.0, 3.0, 4.0])
  ids = jnp.array([0, 0, 1, 2])
  np.testing.assert_allclose(jraph.segment_sum(data, ids, 3), [3.0, 3.0, 4.0])
  np.testing.assert_allclose(jraph.segment_mean(data, ids, 3), [1.5, 3.0, 4.0])
  np.testing.assert_allclose(jraph.segment_max(data, ids, 3), [2.0, 3.0, 4.0])
  soft = jraph.segment_softmax(data, ids, 3)
  np.testing.assert_allclose(jraph.segment_sum(soft, ids, 3), [1.0, 1.0, 1.0], rtol=1e-6)


def test_graph_network_runs_under_jit_with_sum_aggregation():
  net = jraph.GraphNetwork(
      update_edge_fn=lambda e, s, r, g: s,                  # message = sender features
      update_node_fn=lambda n, s, r, g: n + r,              # add summed incoming messages
      update_global_fn=lambda n, e, g: n)                   # sum of node features
  out = jax.jit(net)(_graph())
  np.testing.assert_allclose(out.nodes, [[1.0], [3.0], [5.0]])
  np.testing.assert_allclose(out.globals, [[9.0]])


def test_graph_convolution_on_a_tiny_graph():
  out = jraph.GraphConvolution(lambda n: 2.0 * n, add_self_edges=False,
                               symmetric_normalization=False)(_graph())
  np.testing.assert_allclose(out.nodes, [[0.0], [2.0], [4.0]])
  normalized = jraph.GraphConvolution(lambda n: n, add_self_edges=True)(_graph())
  assert normalized.nodes.shape == (3, 1)
  assert np.all(np.isfinite(normalized.nodes))


def test_batch_and_unbatch_round_trip():
  batched = jraph.batch([_graph(), _graph()])
  np.testing.assert_array_equal(batched.n_node, [3, 3])
  np.testing.assert_array_equal(batched.senders, [0, 1, 3, 4])
  first, second = jraph.unbatch(batched)
  np.testing.assert_array_equal(second.senders, [0, 1])
  np.testing.assert_array_equal(first.nodes, _graph().nodes)


def test_pad_with_graphs_and_unpad_round_trip():
  padded = jraph.pad_with_graphs(_graph(), n_node=5, n_edge=4, n_graph=3)
  assert padded.nodes.shape == (5, 1)
  np.testing.assert_array_equal(jraph.get_node_padding_mask(padded),
                                [True, True, True, False, False])
  unpadded = jraph.unpad_with_graphs(padded)
  np.testing.assert_array_equal(unpadded.nodes, _graph().nodes)


def test_zero_out_padding_crashes_on_removed_jax_tree_map():
  padded = jraph.pad_with_graphs(_graph(), n_node=5, n_edge=4, n_graph=3)
  assert not hasattr(jax, "tree_map")
  with pytest.raises(AttributeError, match="tree_map"):
    jraph.zero_out_padding(padded)


def test_get_fully_connected_graph_works_only_without_features():
  graph = jraph.get_fully_connected_graph(3, 1, add_self_edges=False)
  assert int(graph.n_edge[0]) == 6
  assert not hasattr(jax, "tree_leaves")
  with pytest.raises(AttributeError, match="tree_leaves"):
    jraph.get_fully_connected_graph(3, 1, node_features=jnp.ones((3, 2)))
