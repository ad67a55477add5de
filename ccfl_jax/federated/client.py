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
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ccfl_jax import tree_util
from ccfl_jax.data import augment as augment_lib
from ccfl_jax.federated import attacks, privacy

AUGMENT_KEY = 2  # fold_in(hospital key, AUGMENT_KEY) -> the augmentation keys (engine.py)
BACKDOOR_KEY = 3  # fold_in(hospital key, BACKDOOR_KEY) -> which slices a backdoor poisons
LAPLACE_KEY = 4  # fold_in(hospital key, LAPLACE_KEY) -> a laplace_local hospital's own noise
COMPUTE_DTYPES = ("float32", "bfloat16")  # local training's forward and backward pass


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
  2 clip_norm / laplace_epsilon to every trainable coordinate here, at the hospital.
  `compute_dtype` (COMPUTE_DTYPES): the local steps' forward and backward pass (train_step);
  params, optimizer state, updates, clipping, noise and the vote stay float32."""
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
  compute_dtype: str = "float32"  # COMPUTE_DTYPES


def in_dtype(tree, dtype):
  """Floating leaves of tree cast to dtype (integer leaves as they are)."""
  return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a,
                      tree)


def local_batches(key, count, capacity: int, num_steps: int, batch_size: int):
  """(num_steps, batch_size) indices: a random permutation of the first `count` slots, cycled.

  Padding slots (index >= count) sort last, so they are never drawn; within one round a
  hospital sees each of its slices once before any repeats.
  """
  scores = jnp.where(jnp.arange(capacity) < count, jax.random.uniform(key, (capacity,)), 2.0)
  order = jnp.argsort(scores)
  positions = jnp.arange(num_steps * batch_size) % jnp.maximum(count, 1)
  return order[positions].reshape(num_steps, batch_size)


def train_step(model, optimizer, compute_dtype: str = "float32"):
  """One optimizer step on a batch: (params, opt_state, images, labels, lr_factor=None) ->
  (params, opt_state, mean loss). The step every hospital repeats K times (and the
  centralized baseline, tools/train_centralized.py, repeats per batch). `lr_factor` scales
  the step: for the optax optimizers, whose learning rate is their last scaling (sgd,
  momentum, adam, adamw: decoupled weight decay included), that is the learning rate
  times lr_factor. Under compute_dtype bfloat16 the forward and backward pass run on
  bfloat16 copies of the params and images, the loss on the outputs cast back to float32;
  the gradient arrives float32 (the cast's transpose) and the step is float32."""
  if compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f"engine.compute_dtype {compute_dtype!r}: expected one of {COMPUTE_DTYPES}")

  def loss_fn(p, batch_images, batch_labels):
    if compute_dtype == "float32":
      outputs = model.module.apply(p, batch_images, train=True)
    else:
      outputs = in_dtype(model.module.apply(in_dtype(p, compute_dtype),
                                            batch_images.astype(compute_dtype), train=True),
                         jnp.float32)
    return jnp.mean(model.loss(outputs, batch_images, batch_labels))

  def step(params, opt_state, batch_images, batch_labels, lr_factor=None):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch_images, batch_labels)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    if lr_factor is not None:
      updates = jax.tree.map(lambda u: (u * lr_factor).astype(u.dtype), updates)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


class LocalBatches(NamedTuple):
  """What one hospital trains on in a round: its K batches (images [K, B, ...], labels [K, B])
  and, under a backdoor, which of them it stamps (bool [K, B]; None otherwise). Gathered from
  its slices by `batch_plan`'s indices, on the host or on the device (engine.py)."""
  images: Any
  labels: Any
  poisoned: Any = None


class BatchPlan(NamedTuple):
  """Indices into one hospital's padded slice arrays: index [K, B] (client.local_batches) and,
  under a backdoor, poisoned [K, B] (attacks.poisoned_slots at those slots; None otherwise)."""
  index: Any
  poisoned: Any = None


def batch_plan(key, count, capacity: int, malicious, *, local_steps: int, batch_size: int,
               attack=attacks.Attack()) -> BatchPlan:
  """Which of its slots a hospital trains on this round (and which a backdoor stamps): a pure
  function of its key, slice count and padded capacity, so the batches can be gathered
  wherever its slices live."""
  index = local_batches(key, count, capacity, local_steps, batch_size)
  if attack.kind != "backdoor":  # no key drawn otherwise: other kinds trace as before
    return BatchPlan(index)
  slots = attacks.poisoned_slots(attack, malicious, jax.random.fold_in(key, BACKDOOR_KEY),
                                 capacity)
  return BatchPlan(index, slots[index])


def gather_batches(images, labels, plan: BatchPlan) -> LocalBatches:
  """The hospital's LocalBatches from its padded slice arrays (numpy or jax alike)."""
  return LocalBatches(images[plan.index], labels[plan.index], plan.poisoned)


def local_training(params, images, labels, count, key, first_step=0, *, model, optimizer,
                   local_steps, batch_size, unroll, augment=augment_lib.AugmentSettings(),
                   schedule=None):
  """K optimizer steps from the global params on the hospital's padded slice arrays (its
  batches drawn by client.local_batches); returns (local params, mean local loss)."""
  index = local_batches(key, count, images.shape[0], local_steps, batch_size)
  return train_on_batches(params, images[index], labels[index], key, first_step, model=model,
                          optimizer=optimizer, unroll=unroll, augment=augment,
                          schedule=schedule)


def train_on_batches(params, batch_images, batch_labels, key, first_step=0, *, model, optimizer,
                     unroll, augment=augment_lib.AugmentSettings(), schedule=None,
                     compute_dtype="float32"):
  """One optimizer step per batch (batch_images [K, B, ...], batch_labels [K, B]) from the
  global params; returns (local params, mean local loss).

  Step k's batch is augmented with fold_in(fold_in(key, AUGMENT_KEY), k) when
  `augment.enabled` (off: the batch as stored, and no key is drawn); with a `schedule`,
  step k's learning rate is scaled by schedule(first_step + k) (first_step may be traced).
  """
  one_step = train_step(model, optimizer, compute_dtype)
  augment_key = jax.random.fold_in(key, AUGMENT_KEY)

  def step(carry, step_inputs):
    p, opt_state = carry
    step_index, images, labels = step_inputs
    if augment.enabled:
      images = augment_lib.augment(jax.random.fold_in(augment_key, step_index), images, augment)
    lr_factor = None if schedule is None else schedule(first_step + step_index)
    p, opt_state, loss = one_step(p, opt_state, images, labels, lr_factor)
    return (p, opt_state), loss

  (local_params, _), losses = jax.lax.scan(
      step, (params, optimizer.init(params)),
      (jnp.arange(batch_labels.shape[0]), batch_images, batch_labels), unroll=unroll)
  return local_params, jnp.mean(losses)


def hospital_update(params, images, labels, count, key, malicious=False, first_step=0, *,
                    local_steps, batch_size, attack=attacks.Attack(), **rest):
  """`batches_update` on the hospital's padded slice arrays: its round's batches gathered by
  `batch_plan` first (the same numbers as gathering them elsewhere)."""
  plan = batch_plan(key, count, images.shape[0], malicious, local_steps=local_steps,
                    batch_size=batch_size, attack=attack)
  return batches_update(params, gather_batches(images, labels, plan), key, malicious,
                        first_step, attack=attack, **rest)


def batches_update(params, batches: LocalBatches, key, malicious=False, first_step=0, *,
                   clip_norm, attack=attacks.Attack(), trainable=None,
                   mechanism="gaussian_central", laplace_epsilon=1.0, **training):
  """One hospital's clipped submitted update, the submitted norm before clipping, mean local
  loss, from its round's LocalBatches.

  gaussian_central: clipped in L2 to clip_norm, its L2 norm before clipping. laplace_local:
  clipped in L1 to clip_norm plus the hospital's Laplace noise (zero on frozen parameters),
  its L1 norm before clipping (a simulator diagnostic: a deployment's server never sees it).

  `malicious` is a traced flag: honest and malicious hospitals share one trace. The server
  keeps only the trainable part of what it receives (a frozen parameter's entry is zero
  whatever a hospital sends), then clips. A backdoor hospital stamps and relabels a random
  fraction of its slices, drawn afresh each round (batches.poisoned), before it trains (so
  with augmentation on, the trigger is augmented with the slice, as in a poisoned dataset).
  """
  images, labels = batches.images, batches.labels
  if attack.kind == "backdoor":
    images, labels = attacks.stamp_slots(attack, images, labels, batches.poisoned)
  labels = attacks.training_labels(attack, labels, malicious)
  local_params, loss = train_on_batches(params, images, labels, key, first_step, **training)
  delta = jax.tree.map(jnp.subtract, local_params, params)
  submitted = attacks.submitted_update(attack, delta, malicious, jax.random.fold_in(key, 1))
  submitted = tree_util.keep(submitted, trainable)
  if mechanism == "laplace_local":
    noised, norm = privacy.laplace_local_update(jax.random.fold_in(key, LAPLACE_KEY), submitted,
                                                clip_norm, laplace_epsilon)
    return tree_util.keep(noised, trainable), norm, loss
  clipped, norm = privacy.clip_update(submitted, clip_norm)
  return clipped, norm, loss


def _update_settings(settings: LocalSettings) -> dict:
  return dict(model=settings.model, optimizer=settings.optimizer, unroll=settings.unroll,
              clip_norm=settings.clip_norm, attack=settings.attack,
              trainable=settings.trainable, augment=settings.augment,
              schedule=settings.schedule, mechanism=settings.mechanism,
              laplace_epsilon=settings.laplace_epsilon, compute_dtype=settings.compute_dtype)


def make_hospital_update(settings: LocalSettings):
  """`hospital_update` with the round's fixed settings bound:
  (params, images, labels, count, key, malicious, first_step) -> (clipped update, norm, loss)."""
  return functools.partial(hospital_update, local_steps=settings.local_steps,
                           batch_size=settings.batch_size, **_update_settings(settings))


def make_batches_update(settings: LocalSettings):
  """`batches_update` with the round's fixed settings bound:
  (params, LocalBatches, key, malicious, first_step) -> (clipped update, norm, loss)."""
  return functools.partial(batches_update, **_update_settings(settings))


def make_batch_plan(settings: LocalSettings):
  """`batch_plan` with the round's fixed settings bound: (key, count, capacity, malicious)."""
  return functools.partial(batch_plan, local_steps=settings.local_steps,
                           batch_size=settings.batch_size, attack=settings.attack)
