"""Model registry: a model is chosen by name, `config.model.name`.

Adding a model is adding a module `ccfl_jax/models/<name>.py` that defines

  * `Model`: a `flax.linen.Module` whose `__call__(images, train: bool = False)` takes
    NHWC float32 images in [0, 1] and returns the model's outputs (any pytree); it is
    registered under the module's name. A module holding a family of models (one ResNet
    with several depths) defines `MODELS = {registered name: constructor}` instead;
  * optionally `loss(outputs, images, labels) -> (B,)` per-example loss and
    `probabilities(outputs) -> (B, num_classes)` class probabilities. Models that
    return logits get softmax cross-entropy and softmax from here;
  * optionally `TINY_KWARGS`: constructor arguments of a version small enough for a
    seconds-long test (for a `MODELS` module, a dict keyed by registered name);
  * optionally `trainable_parameters(module, variables) -> tree of bools` (True = trains):
    a model with a frozen part (a pretrained backbone) says which leaves train. Frozen
    leaves get no update, no DP noise and no share of the clipped norm (client.py,
    privacy.py); without it every parameter trains.

Every public module of this package is a model (or a family); reusable layers live in the
`ccfl_jax.models.layers` subpackage, pretrained weights and their readers in
`ccfl_jax.models.weights`. The model is built from the config's `model` block (every
field but `name` is passed as a keyword argument): `from_config(config)`.
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
  trainable_parameters: Callable[[nn.Module, Any], Any] | None = None

  def trainable_mask(self, variables) -> Any:
    """A tree like `variables` of Python bools, True where the leaf trains; None if all do."""
    if self.trainable_parameters is None:
      return None
    mask = jax.tree.map(bool, self.trainable_parameters(self.module, variables))
    return None if all(jax.tree.leaves(mask)) else mask


def softmax_cross_entropy(logits, images, labels):
  del images
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def softmax_probabilities(logits):
  return jax.nn.softmax(logits, axis=-1)


def _model_modules():
  """The public, non-package modules of this package, imported."""
  return [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)
          if not m.ispkg and not m.name.startswith("_")]


def _registry() -> dict[str, tuple[Any, Callable[..., nn.Module]]]:
  """Registered name -> (its module, its constructor)."""
  registry = {}
  for module in _model_modules():
    short_name = module.__name__.rsplit(".", 1)[-1]
    family = getattr(module, "MODELS", None) or {short_name: module.Model}
    for name, constructor in family.items():
      registry[name] = (module, constructor)
  return registry


def model_names() -> tuple[str, ...]:
  """Names of the registered models."""
  return tuple(sorted(_registry()))


def get_model(name: str, **kwargs) -> ModelSpec:
  """Builds the model registered as `name` with keyword arguments `kwargs`."""
  registry = _registry()
  if name not in registry:
    raise ValueError(
        f"config.model.name: unknown model {name!r}; choose one of {', '.join(sorted(registry))}")
  module, constructor = registry[name]
  return ModelSpec(
      module=constructor(**kwargs),
      loss=getattr(module, "loss", softmax_cross_entropy),
      probabilities=getattr(module, "probabilities", softmax_probabilities),
      trainable_parameters=getattr(module, "trainable_parameters", None))


def tiny_kwargs(name: str) -> dict:
  """Constructor arguments of a seconds-long version of model `name` (its TINY_KWARGS)."""
  module, _ = _registry()[name]
  tiny = getattr(module, "TINY_KWARGS", {})
  return dict(tiny.get(name, {})) if hasattr(module, "MODELS") else dict(tiny)


def model_kwargs(config) -> dict:
  """The constructor arguments in a config's `model` block (lists become tuples)."""
  return {k: tuple(v) if isinstance(v, list) else v
          for k, v in config.model.items() if k != "name"}


def from_config(config) -> ModelSpec:
  """The model a run config names, `config.model`."""
  return get_model(config.model.name, **model_kwargs(config))


def parameter_count(params) -> int:
  return sum(int(jnp.size(leaf)) for leaf in jax.tree.leaves(params))


def abstract_variables(model: ModelSpec, image_size: int) -> Any:
  """The model's variables as shapes and dtypes (traced abstractly, no FLOPs, no weights)."""
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 1), jnp.float32)
  return jax.eval_shape(model.module.init, jax.random.key(0), images)


def trainable_mask(model: ModelSpec, image_size: int) -> Any:
  """Which of the model's parameters train (ModelSpec.trainable_mask); None if all do."""
  return model.trainable_mask(abstract_variables(model, image_size))


def parameter_counts(variables, mask) -> dict:
  """{'trainable': n, 'frozen': n} parameters of `variables` under a trainable mask (None: all)."""
  sizes = [int(jnp.size(leaf)) for leaf in jax.tree.leaves(variables)]
  trains = jax.tree.leaves(mask) if mask is not None else [True] * len(sizes)
  trainable = sum(size for size, t in zip(sizes, trains) if t)
  return dict(trainable=trainable, frozen=sum(sizes) - trainable)


def uses_convolutions(model: ModelSpec, image_size: int) -> bool:
  """Whether the model's forward pass contains a convolution (traced abstractly, no FLOPs)."""
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 1), jnp.float32)
  params = abstract_variables(model, image_size)
  return "conv_general_dilated" in str(jax.make_jaxpr(model.module.apply)(params, images))
