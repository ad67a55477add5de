"""Update statistics of a round: V_c and U_s (the paper's eqs. 6-8, after Geyer et al. 2017).

For the hospitals' updates Δw^h (h = 1..H contributing this round) and every parameter
coordinate (x, y) of Δw in R^{b x a} (here: every coordinate of every leaf, P in all):

  eq. 6   VAR[Δw_xy] = 1/H Σ_h (Δw^h_xy - μ_xy)²,   μ_xy = 1/H Σ_h Δw^h_xy
  eq. 7   V_c = 1/P Σ_xy VAR[Δw_xy]     (1/(b x a) in the paper: the MEAN over coordinates)
  eq. 8   U_s = 1/P Σ_xy μ_xy²

So VAR is the population variance over hospitals (1/H, not 1/(H-1)) and both statistics are
averaged, not summed, over coordinates: V_c is the mean per-coordinate variance of the updates
around their mean, U_s the mean squared coordinate of the mean update, i.e. ||μ||²_2 / P
(returned too, as mean_sq_norm). V_c/U_s large means the hospitals disagree relative to the
signal they share (Geyer et al. use it to pick m_t and σ).

Input is the stacked updates pytree, every leaf [m, ...], with weights [m]. The paper's form
is 0/1 weights: padding rows (weight 0) do not count and H is the number of weight-1 rows.
Other non-negative weights give the weighted mean and weighted population variance
(μ = Σ w_h Δw^h / Σ w_h, VAR = Σ w_h (Δw^h - μ)² / Σ w_h). With no weight at all the
statistics are NaN. In the round (engine.py, step 4) they are taken on the accepted updates
(weight 1; rejected and padding rows weight 0) as the server holds them before adding its
own noise, over the trainable coordinates only (P = trainable parameters): the clipped
updates under gaussian_central, the noised submissions under laplace_local. Pure and
jit-able (static shapes, no Python branching on values); the variance is computed around the
mean (two passes), not as E[x²] - μ², to avoid cancellation.
"""
import math

import jax
import jax.numpy as jnp


def num_parameters(tree) -> int:
  """P: the coordinates of one update (leaves without their leading hospital axis)."""
  return sum(math.prod(leaf.shape[1:]) for leaf in jax.tree.leaves(tree))


def _broadcast(weights, leaf):
  """weights [m] reshaped to broadcast against leaf [m, ...]."""
  return weights.reshape(weights.shape + (1,) * (leaf.ndim - 1))


def _weighted_sum(weights, leaf):
  """Σ_h w_h leaf_h; rows of weight 0 (padding, possibly inf or NaN) contribute exactly 0."""
  live = _broadcast(weights > 0, leaf)
  return jnp.sum(jnp.where(live, _broadcast(weights, leaf).astype(leaf.dtype) * leaf, 0.0), 0)


def weighted_mean(stacked, weights):
  """μ = Σ_h w_h Δw^h / Σ_h w_h per coordinate (NaN where Σ w = 0)."""
  weights = jnp.asarray(weights, jnp.float32)
  total = jnp.sum(weights)
  safe = jnp.where(total > 0, total, 1.0)
  return jax.tree.map(
      lambda leaf: jnp.where(total > 0, _weighted_sum(weights, leaf) / safe, jnp.nan), stacked)


def update_statistics(stacked, weights) -> dict:
  """dict(v_c=eq. 7, u_s=eq. 8, mean_sq_norm=||μ||²_2) of the stacked updates [m, ...]."""
  weights = jnp.asarray(weights, jnp.float32)
  total = jnp.sum(weights)
  safe = jnp.where(total > 0, total, 1.0)
  mean = weighted_mean(stacked, weights)
  variance_sum = sum(jnp.sum(_weighted_sum(weights, jnp.square(leaf - mu)))
                     for leaf, mu in zip(jax.tree.leaves(stacked), jax.tree.leaves(mean))) / safe
  mean_sq_norm = sum(jnp.sum(jnp.square(mu)) for mu in jax.tree.leaves(mean))
  size = num_parameters(stacked)
  nan = jnp.float32(jnp.nan)
  return dict(v_c=jnp.where(total > 0, variance_sum / size, nan),
              u_s=jnp.where(total > 0, mean_sq_norm / size, nan),
              mean_sq_norm=jnp.where(total > 0, mean_sq_norm, nan))
