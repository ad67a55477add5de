"""Model registry: a model is chosen by name, `config.model.name`.

Adding a model is adding a module `ccfl_jax/models/<name>.py` that defines

  * `Model`: a `flax.linen.Module` whose `__call__(images, train: bool = False)` takes
    NHWC float32 images in [0, 1] and returns the model's outputs (any pytree);
  * optionally `loss(outputs, images, labels) -> (B,)` per-example loss and
    `probabilities(outputs) -> (B, num_classes)` class probabilities. Models that
    return logits get softmax cross-entropy and softmax from here.

Every public module of this package is a model; reusable layers live in the
`ccfl_jax.models.layers` subpackage. `Model` is built from the config's `model` block
(every field but `name` is passed as a keyword argument).
"""
import dataclasses
import importlib
import pkgutil
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax



@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A model and the two functions the federated engine needs from it."""
  module: nn.Module
  loss: Callable[[Any, jax.Array, jax.Array], jax.Array]
  probabilities: Callable[[Any], jax.Array]


def softmax_cross_entropy(logits, images, labels):
  del images
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def softmax_probabilities(logits):
  return jax.nn.softmax(logits, axis=-1)


def model_names() -> tuple[str, ...]:
  """Names of the registered models: the public, non-package modules of this package."""
  return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                      if not m.ispkg and not m.name.startswith("_")))


def get_model(name: str, **kwargs) -> ModelSpec:
  """Builds the model registered as `name` with keyword arguments `kwargs`."""
  if name not in model_names():
    raise ValueError(
        f"config.model.name: unknown model {name!r}; choose one of {', '.join(model_names())}")
  module = importlib.import_module(f"{__name__}.{name}")
  return ModelSpec(
      module=module.Model(**kwargs),
      loss=getattr(module, "loss", softmax_cross_entropy),
      probabilities=getattr(module, "probabilities", softmax_probabilities))


def parameter_count(params) -> int:
  return sum(int(jnp.size(leaf)) for leaf in jax.tree.leaves(params))


def uses_convolutions(model: ModelSpec, image_size: int) -> bool:
  """Whether the model's forward pass contains a convolution (traced abstractly, no FLOPs)."""
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 1), jnp.float32)
  params = jax.eval_shape(model.module.init, jax.random.key(0), images)
  return "conv_general_dilated" in str(jax.make_jaxpr(model.module.apply)(params, images))
