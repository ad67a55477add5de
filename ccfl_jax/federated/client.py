"""What one hospital computes in a round, independent of how hospitals are mapped.

`hospital_update` trains the global model on the hospital's own slices for K local
optimizer steps and returns its clipped update Δw = w_local - w_global (the paper's
section on random sub-sampling and distorting; Geyer et al. 2017). A malicious hospital
(attacks.py) trains on poisoned labels or submits a poisoned update; the server clips
whatever it receives.
"""
import functools

import jax
import jax.numpy as jnp
import optax

from ccfl_jax.federated import attacks, privacy


def local_batches(key, count, capacity: int, num_steps: int, batch_size: int):
  """(num_steps, batch_size) indices: a random permutation of the first `count` slots, cycled.

  Padding slots (index >= count) sort last, so they are never drawn; within one round a
  hospital sees each of its slices once before any repeats.
  """
  scores = jnp.where(jnp.arange(capacity) < count, jax.random.uniform(key, (capacity,)), 2.0)
  order = jnp.argsort(scores)
  positions = jnp.arange(num_steps * batch_size) % jnp.maximum(count, 1)
  return order[positions].reshape(num_steps, batch_size)


def local_training(params, images, labels, count, key, *, model, optimizer, local_steps,
                   batch_size, unroll):
  """K optimizer steps from the global params; returns (local params, mean local loss)."""

  def loss_fn(p, batch_images, batch_labels):
    outputs = model.module.apply(p, batch_images, train=True)
    return jnp.mean(model.loss(outputs, batch_images, batch_labels))

  def step(carry, batch_index):
    p, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(p, images[batch_index], labels[batch_index])
    updates, opt_state = optimizer.update(grads, opt_state, p)
    return (optax.apply_updates(p, updates), opt_state), loss

  batches = local_batches(key, count, images.shape[0], local_steps, batch_size)
  (local_params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), batches,
                                           unroll=unroll)
  return local_params, jnp.mean(losses)


def hospital_update(params, images, labels, count, key, malicious=False, *, clip_norm,
                    attack=attacks.Attack(), **training):
  """One hospital's clipped submitted update, the submitted norm before clipping, mean local loss.

  `malicious` is a traced flag: honest and malicious hospitals share one trace.
  """
  labels = attacks.training_labels(attack, labels, malicious)
  local_params, loss = local_training(params, images, labels, count, key, **training)
  delta = jax.tree.map(jnp.subtract, local_params, params)
  submitted = attacks.submitted_update(attack, delta, malicious, jax.random.fold_in(key, 1))
  clipped, norm = privacy.clip_update(submitted, clip_norm)
  return clipped, norm, loss


def make_hospital_update(model, optimizer, local_steps, batch_size, unroll, clip_norm,
                         attack=attacks.Attack()):
  """`hospital_update` with the round's fixed settings bound."""
  return functools.partial(hospital_update, model=model, optimizer=optimizer,
                           local_steps=local_steps, batch_size=batch_size, unroll=unroll,
                           clip_norm=clip_norm, attack=attack)
