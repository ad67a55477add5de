"""V_c and U_s (eqs. 6-8) against NumPy; padding rows ignored; jit-able."""
import jax
import jax.numpy as jnp
import numpy as np

from ccfl_jax.federated import update_stats


def _numpy_stats(rows):
  """Eqs. 6-8 literally: rows [H, P] of flattened updates."""
  mu = rows.mean(0)
  var = ((rows - mu) ** 2).mean(0)  # 1/H, population variance
  return var.mean(), (mu ** 2).mean(), (mu ** 2).sum()


def _tiny(rng, m):
  return {"w": rng.normal(size=(m, 3, 2)), "b": rng.normal(size=(m, 4)) + 1.0}


def _flatten(tree):
  return np.concatenate([np.asarray(tree["b"]).reshape(len(tree["b"]), -1),
                         np.asarray(tree["w"]).reshape(len(tree["w"]), -1)], 1)


def test_v_c_and_u_s_equal_numpy():
  rng = np.random.default_rng(0)
  tree = _tiny(rng, 5)
  stats = update_stats.update_statistics(jax.tree.map(jnp.float32, tree), jnp.ones(5))
  v_c, u_s, sq = _numpy_stats(_flatten(tree))
  np.testing.assert_allclose(float(stats["v_c"]), v_c, rtol=1e-5)
  np.testing.assert_allclose(float(stats["u_s"]), u_s, rtol=1e-5)
  np.testing.assert_allclose(float(stats["mean_sq_norm"]), sq, rtol=1e-5)
  assert update_stats.num_parameters(tree) == 10


def test_hand_example():
  # Two hospitals, one parameter: updates 1 and 3 -> mu 2, VAR = ((1-2)^2 + (3-2)^2)/2 = 1.
  stats = update_stats.update_statistics({"w": jnp.asarray([[1.0], [3.0]])}, jnp.ones(2))
  assert float(stats["v_c"]) == 1.0 and float(stats["u_s"]) == 4.0


def test_padding_rows_are_ignored_even_when_inf():
  rng = np.random.default_rng(1)
  tree = _tiny(rng, 6)
  tree["w"][[1, 4]] = np.inf  # padding rows may hold anything
  tree["b"][[1, 4]] = np.nan
  weights = jnp.asarray([1, 0, 1, 1, 0, 1], jnp.float32)
  stats = jax.jit(update_stats.update_statistics)(jax.tree.map(jnp.float32, tree), weights)
  v_c, u_s, _ = _numpy_stats(_flatten(tree)[[0, 2, 3, 5]])
  np.testing.assert_allclose(float(stats["v_c"]), v_c, rtol=1e-5)
  np.testing.assert_allclose(float(stats["u_s"]), u_s, rtol=1e-5)


def test_general_weights_give_weighted_mean_and_variance():
  rng = np.random.default_rng(2)
  tree = _tiny(rng, 4)
  w = np.asarray([0.5, 2.0, 1.0, 0.0])
  stats = update_stats.update_statistics(jax.tree.map(jnp.float32, tree), jnp.asarray(w))
  rows = _flatten(tree)
  mu = (w[:, None] * rows).sum(0) / w.sum()
  var = (w[:, None] * (rows - mu) ** 2).sum(0) / w.sum()
  np.testing.assert_allclose(float(stats["v_c"]), var.mean(), rtol=1e-5)
  np.testing.assert_allclose(float(stats["u_s"]), (mu ** 2).mean(), rtol=1e-5)


def test_identical_updates_have_zero_variance_and_no_weight_gives_nan():
  same = {"w": jnp.tile(jnp.asarray([[0.5, -1.0]]), (3, 1))}
  stats = update_stats.update_statistics(same, jnp.ones(3))
  assert float(stats["v_c"]) == 0.0
  np.testing.assert_allclose(float(stats["u_s"]), (0.25 + 1.0) / 2)
  empty = update_stats.update_statistics(same, jnp.zeros(3))
  assert all(np.isnan(float(v)) for v in empty.values())
