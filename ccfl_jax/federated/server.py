"""The server: its state and how it applies the round's noisy mean update."""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ccfl_jax import models


class ServerState(NamedTuple):
  params: Any
  opt_state: Any


def make_optimizer(name: str, learning_rate: float, **kwargs) -> optax.GradientTransformation:
  """An optax optimizer by name; 'fedavg' is plain SGD with learning rate 1 on -Δw."""
  if name == "fedavg":
    return optax.sgd(1.0)
  return getattr(optax, name)(learning_rate, **kwargs)


def init_state(params, optimizer) -> ServerState:
  return ServerState(params, optimizer.init(params))


def apply_update(state: ServerState, mean_update, optimizer) -> ServerState:
  """Treats -Δw as the server's gradient, so FedAvg (sgd, lr 1) gives w + Δw."""
  pseudo_gradient = jax.tree.map(lambda u: -u, mean_update)
  updates, opt_state = optimizer.update(pseudo_gradient, state.opt_state, state.params)
  return ServerState(optax.apply_updates(state.params, updates), opt_state)


def optimizer_from_config(block) -> optax.GradientTransformation:
  """The optimizer a config block names (`config.local_optimizer` or `config.server_optimizer`):
  its `name`, `learning_rate` and any other field as a keyword (`momentum` for sgd only)."""
  kwargs = {k: v for k, v in block.items() if k not in ("name", "learning_rate")}
  if block.name != "sgd":
    kwargs.pop("momentum", None)
  return make_optimizer(block.name, block.learning_rate, **kwargs)


SCHEDULES = ("constant", "cosine", "one_cycle")


def schedule_from_config(block, total_steps: int):
  """The factor config.local_schedule puts on the local learning rate at step t of the run's
  `total_steps` local steps (t = round index x K + local step): None for constant (the round
  traces without it); cosine: linear warm-up from 0 to 1 over warmup_fraction of the steps,
  then cosine decay to 0; one_cycle: optax's one-cycle (from 1/25 up to 1 over
  warmup_fraction, cosine down to 1/25e4)."""
  total_steps = max(int(total_steps), 1)
  if block.name == "constant":
    return None
  if block.name == "cosine":
    warmup = int(round(block.warmup_fraction * total_steps))
    return optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup, total_steps, 0.0)
  return optax.cosine_onecycle_schedule(total_steps, 1.0, pct_start=block.warmup_fraction)


def only_trainable(optimizer, mask) -> optax.GradientTransformation:
  """`optimizer` on the leaves where `mask` (Python bools) is True, zero updates (and no
  optimizer state) on the frozen rest; `optimizer` itself when mask is None (all train)."""
  if mask is None:
    return optimizer
  labels = jax.tree.map(lambda trains: "train" if trains else "frozen", mask)
  return optax.multi_transform({"train": optimizer, "frozen": optax.set_to_zero()}, labels)


def masked_optimizer(block, mask) -> optax.GradientTransformation:
  """The optimizer config `block` names (optimizer_from_config) on the parameters `mask`
  leaves trainable (only_trainable)."""
  return only_trainable(optimizer_from_config(block), mask)


def trainable_mask(config, model: models.ModelSpec):
  """Which of the model's parameters train (Python bools), from its abstract shapes (no
  weights read or initialised); None if all do."""
  return models.trainable_mask(model, config.dataset.image_size)


def initial_state(config, model: models.ModelSpec) -> ServerState:
  """The global model before round 1: `model` initialised from config.seed (pretrained
  where the model says so; compiled: an eager init of a deep net compiles op by op) and a
  fresh server optimizer."""
  size = config.dataset.image_size
  params = jax.jit(model.module.init)(jax.random.key(config.seed), jnp.zeros((1, size, size, 1)))
  return init_state(params, masked_optimizer(config.server_optimizer,
                                             model.trainable_mask(params)))
