"""Cross-evaluation for the MAE vote (paper eqs. 14-15): local models on hospitals' validation batches.

Validation batches: every round, each hospital draws a fixed-size batch of its OWN slices
(`validation_size` of them, a random permutation of its slices, cycled if it has fewer) with
its own key fold_in(fold_in(round_key, 2), h), independent of device count and engine. The
slices never leave the hospital: in a deployment the verifier runs the candidate model on its
own data and shares only the MAE. The batch is drawn from the hospital's training slices (the
partition holds out a test set, not a per-hospital validation split), so self_mae is a
training-set error, optimistic for every hospital alike.

Eq. 14, MAE(m) = 1/n Σ |y - f(x)| with f(x) the model's predicted COVID probability
(`model.probabilities(outputs)[:, 1]`), is computed for sampled hospital i's local model,
global params + its clipped Δw (the model that would be aggregated), on the batch of each
verifier j (mae[i, j]) and on its own batch (self_mae[i]).
"""
import jax
import jax.numpy as jnp

from ccfl_jax.federated import client


def validation_keys(round_key, hospital_ids):
  validation_key = jax.random.fold_in(round_key, 2)
  return jax.vmap(jax.random.fold_in, (None, 0))(validation_key, hospital_ids)


def validation_indices(key, count, capacity: int, size: int):
  """`size` slice indices of one hospital (never padding): a permutation of its slices, cycled."""
  return client.local_batches(key, count, capacity, 1, size)[0]


def validation_batch(images, labels, count, key, size: int):
  """One hospital's validation batch from its own (padded) slice arrays."""
  index = validation_indices(key, count, images.shape[0], size)
  return images[index], labels[index]


def validation_batches(data, hospital_ids, round_key, size: int):
  """Validation batches ([n, size, ...] images, [n, size] labels) of hospitals `hospital_ids`."""
  keys = validation_keys(round_key, hospital_ids)
  index = jax.vmap(validation_indices, (0, 0, None, None))(
      keys, data.counts[hospital_ids], data.images.shape[1], size)
  rows = hospital_ids[:, None]
  return data.images[rows, index], data.labels[rows, index]


def local_model(params, clipped_delta):
  """The model a hospital's update would put into the aggregate: w + clipped Δw."""
  return jax.tree.map(jnp.add, params, clipped_delta)


def cross_evaluate(model, params, clipped_delta, own_images, own_labels, verifier_images,
                   verifier_labels):
  """Eq. 14 of one hospital's local model: (MAE on each verifier's batch [v], MAE on its own).

  verifier_images: [v, size, h, w, c]. All v + 1 batches go through one forward pass.
  """
  num_verifiers, size = verifier_labels.shape
  images = jnp.concatenate([verifier_images.reshape((-1,) + own_images.shape[1:]), own_images])
  labels = jnp.concatenate([verifier_labels.reshape(-1), own_labels])
  outputs = model.module.apply(local_model(params, clipped_delta), images)
  errors = jnp.abs(labels.astype(jnp.float32) - model.probabilities(outputs)[:, 1])
  per_batch = jnp.mean(errors.reshape(num_verifiers + 1, size), axis=1)
  return per_batch[:num_verifiers], per_batch[num_verifiers]
