"""Depthwise convolution, in two numerically equal formulations, with TF 'SAME' padding.

A depthwise convolution filters each channel with its own k x k kernel. Two ways to write
it, chosen by `DepthwiseConv.formulation`:

  * 'shifted': k*k strided slices of the padded input, each multiplied by one kernel tap
    and summed, `sum_ij x_pad[:, i::s, j::s, :] * w[i, j]`. On XLA:CPU (jax 0.10.2) this is
    4-6x faster than the grouped convolution, forward and backward (../shared/NOTES-jax.md:
    an EfficientNet-Lite0-shaped net, 40 vs 195 ms per image at 128 px).
  * 'lax': `lax.conv_general_dilated(..., feature_group_count=C)`, the form accelerators
    have kernels for.
  * 'auto' (default): 'shifted' when the default backend is the CPU, 'lax' elsewhere.

Padding is TensorFlow's 'SAME', done explicitly for both: output size ceil(n / s), total
padding max((ceil(n / s) - 1) * s + k - n, 0), the odd pixel at the bottom / right. lax's
own 'SAME' (`lax.padtype_to_pads`) computes the same split today; torch's symmetric
`padding=k // 2` does not (it shifts stride-2 outputs by a pixel), which is why ports of TF
weights pad by hand. Padding explicitly keeps the convention visible, tested, and shared by
both formulations and by the ordinary convolutions of the models that use `pad_same`.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

FORMULATIONS = ("auto", "shifted", "lax")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TF 'SAME' padding (before, after) of one spatial axis; the odd pixel goes after."""
  total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def pad_same(x: jax.Array, kernel: int, stride: int) -> jax.Array:
  """Zero-pads NHWC `x` for a k x k, stride-s 'VALID' convolution to give TF 'SAME'."""
  pad_h = same_padding(x.shape[1], kernel, stride)
  pad_w = same_padding(x.shape[2], kernel, stride)
  if pad_h == (0, 0) and pad_w == (0, 0):
    return x
  return jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))


def resolve_formulation(formulation: str) -> str:
  """'auto' -> 'shifted' on the CPU backend, 'lax' elsewhere; others unchanged."""
  if formulation not in FORMULATIONS:
    raise ValueError(f"depthwise formulation {formulation!r}: choose one of "
                     f"{', '.join(FORMULATIONS)}")
  if formulation == "auto":
    return "shifted" if jax.default_backend() == "cpu" else "lax"
  return formulation


def depthwise_shifted(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """TF-'SAME' depthwise convolution as k*k shifted multiply-adds.

  x: (B, H, W, C); kernel: (k, k, 1, C) (Flax's depthwise HWIO layout).
  """
  k = kernel.shape[0]
  batch, height, width, channels = x.shape
  out_h, out_w = math.ceil(height / stride), math.ceil(width / stride)
  padded = pad_same(x, k, stride)
  taps = kernel.reshape(k, k, channels)
  total = None
  for i in range(k):
    for j in range(k):
      window = lax.slice(padded, (0, i, j, 0),
                         (batch, i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1,
                          channels),
                         (1, stride, stride, 1))
      term = window * taps[i, j]
      total = term if total is None else total + term
  return total


def depthwise_lax(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """TF-'SAME' depthwise convolution by lax's grouped convolution; same arguments."""
  padded = pad_same(x, kernel.shape[0], stride)
  return lax.conv_general_dilated(padded, kernel, (stride, stride), "VALID",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  feature_group_count=x.shape[-1])


def depthwise(x: jax.Array, kernel: jax.Array, stride: int,
              formulation: str = "auto") -> jax.Array:
  """Depthwise convolution by the named formulation (module docstring)."""
  if resolve_formulation(formulation) == "shifted":
    return depthwise_shifted(x, kernel, stride)
  return depthwise_lax(x, kernel, stride)


class DepthwiseConv(nn.Module):
  """k x k depthwise convolution, no bias, TF 'SAME'; kernel (k, k, 1, C) as `kernel`."""
  kernel_size: int
  strides: int = 1
  formulation: str = "auto"
  kernel_init: nn.initializers.Initializer = nn.initializers.variance_scaling(
      2.0, "fan_in", "truncated_normal", in_axis=(0, 1), out_axis=3)

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init,
                        (self.kernel_size, self.kernel_size, 1, x.shape[-1]))
    return depthwise(x, kernel, self.strides, self.formulation)
