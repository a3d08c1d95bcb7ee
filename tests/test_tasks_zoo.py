"""Tests for mapa_jax.tasks.zoo and .models: the 20 architectures, their 15/5 split and novelty."""

import jax
import numpy as np
import pytest

from mapa_jax import tasks
from mapa_jax.architecture import NODE_FEATURES
from mapa_jax.tasks import models, zoo


def _graph_column(graph, name: str) -> np.ndarray:
    return np.asarray(graph.nodes)[:, NODE_FEATURES.index(name)]


# ----------------------------------------------------------------- model zoo


def test_zoo_has_20_unique_architectures_split_15_5():
    assert len(zoo.ZOO) >= 20
    names = tasks.architecture_names()
    assert len(names) == len(set(names))
    assert len({a.task_name for a in zoo.ZOO}) == len(zoo.ZOO)
    assert len(zoo.META_TRAIN) == 15 and len(zoo.META_TEST) == 5
    assert {a.name for a in zoo.META_TRAIN}.isdisjoint({a.name for a in zoo.META_TEST})
    assert {a.family for a in zoo.ZOO} >= {"mlp", "resmlp", "cnn", "vgg", "rescnn", "conv1d"}
    assert {a.activation for a in zoo.ZOO} >= {"relu", "swish", "leaky_relu", "tanh", "gelu"}


def test_meta_test_architectures_have_their_documented_novelty():
    train = zoo.META_TRAIN
    for arch in zoo.META_TEST:
        assert arch.novelty, arch.name
        for prop, value in arch.novelty:
            if prop == "activation":
                assert arch.activation == value
                assert all(a.activation != value for a in train), arch.name
            elif prop == "block":
                assert value in arch.blocks
                assert all(value not in a.blocks for a in train), arch.name
            elif prop == "conv_depth":
                assert arch.conv_layers == int(value) > max(a.conv_layers for a in train)
            elif prop == "conv1d_depth":
                seen = max(a.conv_layers for a in train if "conv1d" in a.blocks)
                assert arch.conv_layers == int(value) > seen
            else:
                pytest.fail(f"undocumented novelty kind {prop!r}")


def test_meta_test_graphs_differ_in_kind_from_every_meta_train_graph():
    """Only meta-test graphs hold GELU nodes, norm nodes, or skip edges between two convs."""

    def traits(task_name):
        g = tasks.get_task(task_name).graph()
        conv = _graph_column(g, "kind_conv") > 0
        skip = np.asarray(g.edges)[:, 1] > 0 if g.edges.shape[0] else np.zeros(0, bool)
        s, r = np.asarray(g.senders), np.asarray(g.receivers)
        return {"gelu": bool(_graph_column(g, "act_gelu").any()),
                "norm": bool(_graph_column(g, "kind_norm").any()),
                "conv_skip": bool(np.any(skip & conv[s] & conv[r])),
                "convs": int(conv.sum())}

    train = [traits(a.task_name) for a in zoo.META_TRAIN]
    test = {a.name: traits(a.task_name) for a in zoo.META_TEST}
    assert not any(t["gelu"] or t["norm"] or t["conv_skip"] for t in train)
    max_convs = max(t["convs"] for t in train)
    for name, t in test.items():
        assert t["gelu"] or t["norm"] or t["conv_skip"] or t["convs"] > max_convs, name


def test_zoo_docstring_tables_list_every_task_with_its_parameter_count():
    rows = {}
    for line in zoo.__doc__.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and "/" in cells[1]:
            rows[cells[1]] = int(cells[5])
    assert set(rows) == {a.task_name for a in zoo.ZOO}
    for arch in zoo.ZOO:
        task = tasks.get_task(arch.task_name)
        assert rows[arch.task_name] == task.num_params, arch.task_name
        assert task.info["param_layers"] == arch.param_layers


def test_flat_kernel_init_has_flax_lecun_normal_statistics():
    shape = (3, 3, 16, 64)
    ours = np.asarray(models.lecun_normal_flat(jax.random.key(0), shape))
    assert ours.shape == shape
    np.testing.assert_allclose(ours.std(), (3 * 3 * 16) ** -0.5, rtol=0.03)  # variance 1/fan_in
    assert np.abs(ours).max() <= 2 * (3 * 3 * 16) ** -0.5 / 0.87962566 + 1e-6
