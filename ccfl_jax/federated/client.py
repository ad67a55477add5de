"""What one hospital computes in a round, independent of how hospitals are mapped.

`hospital_update` trains the global model on the hospital's own slices for K local
optimizer steps and returns its clipped update Δw = w_local - w_global (the paper's
section on random sub-sampling and distorting; Geyer et al. 2017). A malicious hospital
(attacks.py) trains on poisoned labels or backdoored slices, or submits a poisoned update;
the server clips whatever it receives. Under privacy.mechanism = laplace_local (eqs. 12-13)
the hospital itself clips in L1 to B = clip_norm and adds its own Laplace(2B/ε_round) noise
(privacy.laplace_local_update, key fold_in(hospital key, LAPLACE_KEY)) before submitting:
what it returns is then the noised submission, the only thing the server and the ledger
ever see of its update (a malicious hospital is simulated as following that protocol too:
its attack acts before the clip and the noise). The colluding attacks act after every hospital has
trained, on the round's stacked updates (engine.py), not here.
"""
import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ccfl_jax import tree_util
from ccfl_jax.data import augment as augment_lib
from ccfl_jax.federated import attacks, privacy

AUGMENT_KEY = 2  # fold_in(hospital key, AUGMENT_KEY) -> the augmentation keys (engine.py)
BACKDOOR_KEY = 3  # fold_in(hospital key, BACKDOOR_KEY) -> which slices a backdoor poisons
LAPLACE_KEY = 4  # fold_in(hospital key, LAPLACE_KEY) -> a laplace_local hospital's own noise


@dataclasses.dataclass(frozen=True)
class LocalSettings:
  """What every hospital of a round does alike: K steps of `optimizer` (reset each round) on
  batches of `batch_size`, each batch augmented as `augment` says, the update (zero on the
  parameters `trainable` freezes) clipped to `clip_norm`; `unroll` unrolls the K steps in
  the trace (faster around convolutions on XLA:CPU, mesh.default_unroll_local_steps).
  `schedule` (server.schedule_from_config; None: constant) scales the optimizer's step at
  the run's local step t = round index x K + k (the round passes its first_step).
  `mechanism` (privacy.MECHANISMS): gaussian_central clips in L2 to clip_norm (the server
  adds the noise); laplace_local clips in L1 to clip_norm and adds Laplace noise of scale
  2 clip_norm / laplace_epsilon to every trainable coordinate here, at the hospital."""
  model: Any
  optimizer: Any
  local_steps: int
  batch_size: int
  unroll: bool
  clip_norm: float
  attack: attacks.Attack = attacks.Attack()
  trainable: Any = None   # params-shaped tree of Python bools; None: every parameter trains
  augment: augment_lib.AugmentSettings = augment_lib.AugmentSettings()
  schedule: Any = None  # step -> learning-rate factor; None: constant
  mechanism: str = "gaussian_central"  # privacy.MECHANISMS
  laplace_epsilon: float = 1.0  # laplace_local: each submission is laplace_epsilon-DP


def local_batches(key, count, capacity: int, num_steps: int, batch_size: int):
  """(num_steps, batch_size) indices: a random permutation of the first `count` slots, cycled.

  Padding slots (index >= count) sort last, so they are never drawn; within one round a
  hospital sees each of its slices once before any repeats.
  """
  scores = jnp.where(jnp.arange(capacity) < count, jax.random.uniform(key, (capacity,)), 2.0)
  order = jnp.argsort(scores)
  positions = jnp.arange(num_steps * batch_size) % jnp.maximum(count, 1)
  return order[positions].reshape(num_steps, batch_size)


def train_step(model, optimizer):
  """One optimizer step on a batch: (params, opt_state, images, labels, lr_factor=None) ->
  (params, opt_state, mean loss). The step every hospital repeats K times (and the
  centralized baseline, tools/train_centralized.py, repeats per batch). `lr_factor` scales
  the step: for the optax optimizers, whose learning rate is their last scaling (sgd,
  momentum, adam, adamw: decoupled weight decay included), that is the learning rate
  times lr_factor."""

  def loss_fn(p, batch_images, batch_labels):
    outputs = model.module.apply(p, batch_images, train=True)
    return jnp.mean(model.loss(outputs, batch_images, batch_labels))

  def step(params, opt_state, batch_images, batch_labels, lr_factor=None):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch_images, batch_labels)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    if lr_factor is not None:
      updates = jax.tree.map(lambda u: (u * lr_factor).astype(u.dtype), updates)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def local_training(params, images, labels, count, key, first_step=0, *, model, optimizer,
                   local_steps, batch_size, unroll, augment=augment_lib.AugmentSettings(),
                   schedule=None):
  """K optimizer steps from the global params; returns (local params, mean local loss).

  Step k's batch is augmented with fold_in(fold_in(key, AUGMENT_KEY), k) when
  `augment.enabled` (off: the batch as stored, and no key is drawn); with a `schedule`,
  step k's learning rate is scaled by schedule(first_step + k) (first_step may be traced).
  """
  one_step = train_step(model, optimizer)
  augment_key = jax.random.fold_in(key, AUGMENT_KEY)

  def step(carry, step_inputs):
    p, opt_state = carry
    step_index, batch_index = step_inputs
    batch_images = images[batch_index]
    if augment.enabled:
      batch_images = augment_lib.augment(jax.random.fold_in(augment_key, step_index),
                                         batch_images, augment)
    lr_factor = None if schedule is None else schedule(first_step + step_index)
    p, opt_state, loss = one_step(p, opt_state, batch_images, labels[batch_index], lr_factor)
    return (p, opt_state), loss

  batches = local_batches(key, count, images.shape[0], local_steps, batch_size)
  (local_params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)),
                                           (jnp.arange(local_steps), batches), unroll=unroll)
  return local_params, jnp.mean(losses)


def hospital_update(params, images, labels, count, key, malicious=False, first_step=0, *,
                    clip_norm, attack=attacks.Attack(), trainable=None,
                    mechanism="gaussian_central", laplace_epsilon=1.0, **training):
  """One hospital's clipped submitted update, the submitted norm before clipping, mean local loss.

  gaussian_central: clipped in L2 to clip_norm, its L2 norm before clipping. laplace_local:
  clipped in L1 to clip_norm plus the hospital's Laplace noise (zero on frozen parameters),
  its L1 norm before clipping (a simulator diagnostic: a deployment's server never sees it).

  `malicious` is a traced flag: honest and malicious hospitals share one trace. The server
  keeps only the trainable part of what it receives (a frozen parameter's entry is zero
  whatever a hospital sends), then clips. A backdoor hospital stamps and relabels a random
  fraction of its slices, drawn afresh each round, before it trains (so with augmentation
  on, the trigger is augmented with the slice, as in a poisoned dataset).
  """
  if attack.kind == "backdoor":  # no key drawn otherwise: other kinds trace as before
    images, labels = attacks.poison_batch(attack, images, labels, malicious,
                                          jax.random.fold_in(key, BACKDOOR_KEY))
  labels = attacks.training_labels(attack, labels, malicious)
  local_params, loss = local_training(params, images, labels, count, key, first_step,
                                      **training)
  delta = jax.tree.map(jnp.subtract, local_params, params)
  submitted = attacks.submitted_update(attack, delta, malicious, jax.random.fold_in(key, 1))
  submitted = tree_util.keep(submitted, trainable)
  if mechanism == "laplace_local":
    noised, norm = privacy.laplace_local_update(jax.random.fold_in(key, LAPLACE_KEY), submitted,
                                                clip_norm, laplace_epsilon)
    return tree_util.keep(noised, trainable), norm, loss
  clipped, norm = privacy.clip_update(submitted, clip_norm)
  return clipped, norm, loss


def make_hospital_update(settings: LocalSettings):
  """`hospital_update` with the round's fixed settings bound:
  (params, images, labels, count, key, malicious, first_step) -> (clipped update, norm, loss)."""
  return functools.partial(hospital_update, model=settings.model, optimizer=settings.optimizer,
                           local_steps=settings.local_steps, batch_size=settings.batch_size,
                           unroll=settings.unroll, clip_norm=settings.clip_norm,
                           attack=settings.attack, trainable=settings.trainable,
                           augment=settings.augment, schedule=settings.schedule,
                           mechanism=settings.mechanism, laplace_epsilon=settings.laplace_epsilon)
