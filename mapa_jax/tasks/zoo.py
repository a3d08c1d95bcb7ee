"""The model zoo: 20 tiny architectures, 15 for meta-training and 5 held out.

Each architecture is paired with one dataset (a task is ``dataset/architecture``).
Models are tiny (widths 16-64, CNN channels 8-16, 530 to 11986
parameters) so that meta-training runs on a 2-core CPU.

Meta-train split (15)

| #  | task                                      | family | activation | param layers | params |
| -- | ----------------------------------------- | ------ | ---------- | ------------ | ------ |
| 1  | digits/mlp_relu_1x32                      | MLP    | relu       | 2            | 2410   |
| 2  | digits/mlp_leaky_relu_3x32                | MLP    | leaky_relu | 4            | 4522   |
| 3  | digits/mlp_tanh_2x64                      | MLP    | tanh       | 3            | 8970   |
| 4  | mnist1d/mlp_swish_2x32                    | MLP    | swish      | 3            | 2698   |
| 5  | mnist1d/mlp_relu_4x32                     | MLP    | relu       | 5            | 4810   |
| 6  | breast_cancer/mlp_tanh_1x16               | MLP    | tanh       | 2            | 530    |
| 7  | breast_cancer/mlp_swish_3x16              | MLP    | swish      | 4            | 1074   |
| 8  | boston/mlp_relu_2x32                      | MLP    | relu       | 3            | 1537   |
| 9  | diabetes/mlp_leaky_relu_4x16              | MLP    | leaky_relu | 5            | 1009   |
| 10 | boston/resmlp_swish_w32_2blocks           | residual MLP | swish | 6           | 4705   |
| 11 | digits/resmlp_relu_w32_2blocks            | residual MLP | relu  | 6           | 6634   |
| 12 | digits/cnn_tanh_c8                        | CNN    | tanh       | 2            | 1370   |
| 13 | digits/cnn_relu_c8_c16                    | CNN    | relu       | 3            | 3818   |
| 14 | digits/vgg_relu_c8x2_c16x2                | VGG (2 stages, 4 conv) | relu | 6  | 6562   |
| 15 | mnist1d/conv1d_leaky_relu_c8_c16          | Conv1D | leaky_relu | 3            | 2314   |

Meta-test split (5), each differing from *all* meta-train architectures in kind

| #  | task                                      | family | activation | param layers | params | what is new (the documented ``novelty``) |
| -- | ----------------------------------------- | ------ | ---------- | ------------ | ------ | ---------------------------------------- |
| 16 | breast_cancer/mlp_gelu_3x32               | MLP    | gelu       | 4            | 3170   | activation GELU, never seen in meta-train |
| 17 | mnist1d/conv1d_gelu_c16_c16_c16           | Conv1D | gelu       | 4            | 3498   | activation GELU; 3 conv layers (meta-train Conv1D: 2) |
| 18 | digits/rescnn_relu_c8_2blocks             | residual CNN | relu | 6           | 2506   | residual *convolutional* blocks (meta-train has residual MLPs only) |
| 19 | digits/vgg_relu_c8x2_c16x2_c16x3          | VGG (3 stages, 7 conv) | relu | 9  | 11986  | 7 conv layers and 3 pooling stages (meta-train convnets: at most 4 conv layers) |
| 20 | diabetes/mlp_layernorm_relu_3x32          | MLP + LayerNorm | relu | 7         | 2689   | normalization layers (LayerNorm), absent from meta-train |

The ``novelty`` of a meta-test architecture is machine-checkable (and checked
by the tests): ``("activation", a)`` means no meta-train architecture uses
``a``; ``("block", b)`` means no meta-train architecture contains block type
``b``; ``("conv_depth", n)`` means it has ``n`` conv layers, more than any
meta-train architecture. The traced architecture graphs agree: only meta-test
graphs have GELU nodes, LayerNorm (``kind_norm``) nodes, or skip edges between
two conv nodes.

"param layers" counts the modules that own parameters, i.e. the nodes of the
task's architecture graph. Parameter counts are for the paired dataset.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn

from mapa_jax.tasks import models

__all__ = ["Architecture", "ZOO", "META_TRAIN", "META_TEST", "architecture_names", "get_architecture"]


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One zoo entry.

    Attributes:
      name: unique architecture name, e.g. ``"mlp_relu_1x32"``.
      dataset: the dataset it is paired with (task name ``dataset/name``).
      family: ``"mlp"``, ``"resmlp"``, ``"cnn"``, ``"vgg"``, ``"rescnn"`` or ``"conv1d"``.
      activation: the activation name (`models.ACTIVATIONS`).
      blocks: layer/block types it contains (``"dense"``, ``"conv2d"``,
        ``"conv1d"``, ``"layernorm"``, ``"residual_dense"``, ``"residual_conv"``,
        ``"avg_pool"``, ``"max_pool"``).
      param_layers: number of modules owning parameters (graph nodes).
      conv_layers: number of convolution layers.
      split: ``"meta_train"`` or ``"meta_test"``.
      novelty: for meta-test, what no meta-train architecture has:
        ``(("activation", "gelu"), ...)``; see the module docstring.
      build: ``num_outputs -> linen Module``.
    """

    name: str
    dataset: str
    family: str
    activation: str
    blocks: frozenset[str]
    param_layers: int
    conv_layers: int
    split: str
    build: Callable[[int], nn.Module]
    novelty: tuple[tuple[str, str], ...] = ()

    @property
    def task_name(self) -> str:
        return f"{self.dataset}/{self.name}"


def _mlp(dataset: str, act: str, widths: tuple[int, ...], split: str = "meta_train",
         layer_norm: bool = False, novelty: tuple = ()) -> Architecture:
    depth = "x".join([str(len(widths)), str(widths[0])]) if len(set(widths)) == 1 else "_".join(map(str, widths))
    name = f"mlp_{'layernorm_' if layer_norm else ''}{act}_{depth}"
    blocks = {"dense"} | ({"layernorm"} if layer_norm else set())
    return Architecture(
        name, dataset, "mlp", act, frozenset(blocks),
        param_layers=(len(widths) + 1) + (len(widths) if layer_norm else 0), conv_layers=0,
        split=split, novelty=novelty,
        build=lambda n: models.MLP(widths=widths, num_outputs=n, activation=act, layer_norm=layer_norm))


def _resmlp(dataset: str, act: str, width: int, blocks: int, split: str = "meta_train") -> Architecture:
    return Architecture(
        f"resmlp_{act}_w{width}_{blocks}blocks", dataset, "resmlp", act,
        frozenset({"dense", "residual_dense"}), param_layers=2 + 2 * blocks, conv_layers=0,
        split=split,
        build=lambda n: models.ResMLP(width=width, blocks=blocks, num_outputs=n, activation=act))


def _cnn(dataset: str, act: str, channels: tuple[int, ...], split: str = "meta_train") -> Architecture:
    return Architecture(
        f"cnn_{act}_" + "_".join(f"c{c}" for c in channels), dataset, "cnn", act,
        frozenset({"conv2d", "avg_pool", "dense"}), param_layers=len(channels) + 1,
        conv_layers=len(channels), split=split,
        build=lambda n: models.CNN(channels=channels, num_outputs=n, activation=act))


def _vgg(dataset: str, act: str, stages: tuple[tuple[int, int], ...], split: str = "meta_train",
         novelty: tuple = ()) -> Architecture:
    convs = sum(k for _, k in stages)
    return Architecture(
        f"vgg_{act}_" + "_".join(f"c{c}x{k}" for c, k in stages), dataset, "vgg", act,
        frozenset({"conv2d", "max_pool", "dense"}), param_layers=convs + 2, conv_layers=convs,
        split=split, novelty=novelty,
        build=lambda n: models.VGG(stages=stages, num_outputs=n, hidden=32, activation=act))


def _rescnn(dataset: str, act: str, channels: int, blocks: int, split: str = "meta_train",
            novelty: tuple = ()) -> Architecture:
    return Architecture(
        f"rescnn_{act}_c{channels}_{blocks}blocks", dataset, "rescnn", act,
        frozenset({"conv2d", "residual_conv", "dense"}), param_layers=2 + 2 * blocks,
        conv_layers=1 + 2 * blocks, split=split, novelty=novelty,
        build=lambda n: models.ResCNN(channels=channels, blocks=blocks, num_outputs=n, activation=act))


def _conv1d(dataset: str, act: str, channels: tuple[int, ...], split: str = "meta_train",
            novelty: tuple = ()) -> Architecture:
    return Architecture(
        f"conv1d_{act}_" + "_".join(f"c{c}" for c in channels), dataset, "conv1d", act,
        frozenset({"conv1d", "dense"}), param_layers=len(channels) + 1,
        conv_layers=len(channels), split=split, novelty=novelty,
        build=lambda n: models.Conv1DNet(channels=channels, num_outputs=n, kernel=5, activation=act))


_TEST = "meta_test"

#: All 20 architectures, meta-train first (order of the tables above).
ZOO: tuple[Architecture, ...] = (
    # --- meta-train (15) ---
    _mlp("digits", "relu", (32,)),
    _mlp("digits", "leaky_relu", (32, 32, 32)),
    _mlp("digits", "tanh", (64, 64)),
    _mlp("mnist1d", "swish", (32, 32)),
    _mlp("mnist1d", "relu", (32, 32, 32, 32)),
    _mlp("breast_cancer", "tanh", (16,)),
    _mlp("breast_cancer", "swish", (16, 16, 16)),
    _mlp("boston", "relu", (32, 32)),
    _mlp("diabetes", "leaky_relu", (16, 16, 16, 16)),
    _resmlp("boston", "swish", 32, 2),
    _resmlp("digits", "relu", 32, 2),
    _cnn("digits", "tanh", (8,)),
    _cnn("digits", "relu", (8, 16)),
    _vgg("digits", "relu", ((8, 2), (16, 2))),
    _conv1d("mnist1d", "leaky_relu", (8, 16)),
    # --- meta-test (5) ---
    _mlp("breast_cancer", "gelu", (32, 32, 32), split=_TEST, novelty=(("activation", "gelu"),)),
    _conv1d("mnist1d", "gelu", (16, 16, 16), split=_TEST,
            novelty=(("activation", "gelu"), ("conv1d_depth", "3"))),
    _rescnn("digits", "relu", 8, 2, split=_TEST, novelty=(("block", "residual_conv"),)),
    _vgg("digits", "relu", ((8, 2), (16, 2), (16, 3)), split=_TEST, novelty=(("conv_depth", "7"),)),
    _mlp("diabetes", "relu", (32, 32, 32), split=_TEST, layer_norm=True,
         novelty=(("block", "layernorm"),)),
)

META_TRAIN: tuple[Architecture, ...] = tuple(a for a in ZOO if a.split == "meta_train")
META_TEST: tuple[Architecture, ...] = tuple(a for a in ZOO if a.split == "meta_test")


def architecture_names() -> list[str]:
    """Names of all zoo architectures (meta-train first)."""
    return [a.name for a in ZOO]


def get_architecture(name: str) -> Architecture:
    """The zoo entry named ``name`` (an architecture name, or its ``dataset/name`` task name)."""
    for a in ZOO:
        if name in (a.name, a.task_name):
            return a
    raise KeyError(f"unknown architecture {name!r}; known architectures: {architecture_names()}.")
