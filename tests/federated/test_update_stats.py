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


# Through the actual compiled round (engine.py, step 4).

def _round_setup(noise_multiplier=0.5):
  import optax
  from ccfl_jax.data import hospitals, partition, phantom
  from ccfl_jax.federated import engine, server
  from ccfl_jax.models import get_model
  slices = phantom.make_phantom(0, 24, 2, 0.5, 16, -600, 1500)
  part = partition.partition(slices, 6, "dirichlet", seed=0, alpha=1.0)
  data = hospitals.stack_hospitals(slices, part.hospitals)
  images = data.images.copy()
  images[2] = np.nan  # hospital 2's update is NaN: rejected, so outside the statistics
  data = data._replace(images=images)
  settings = engine.RoundSettings(get_model("mlp", hidden=(8,)), optax.sgd(0.1), optax.sgd(1.0),
                                  local_steps=2, batch_size=4, clip_norm=0.05,
                                  noise_multiplier=noise_multiplier, unroll_local_steps=True,
                                  return_updates=True)
  params = settings.model.module.init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))
  return data, settings, server.init_state(params, settings.server_optimizer)


def _numpy_of_accepted(out):
  rows = np.concatenate([np.asarray(leaf, np.float64).reshape(leaf.shape[0], -1)
                         for leaf in jax.tree.leaves(out.updates)], axis=1)
  return _numpy_stats(rows[np.asarray(out.accepted, bool)])


def test_the_compiled_round_reports_v_c_and_u_s_of_its_accepted_clipped_updates():
  """8 devices (5 sampled hospitals padded to 8), one of them NaN and rejected; sigma 0.5:
  V_c and U_s are NumPy's eqs. 6-8 over the accepted clipped updates, not over the step the
  server took (which carries its noise); the sequential loop reports the same."""
  from ccfl_jax.federated import engine, mesh as mesh_lib
  data, settings, state = _round_setup()
  sampled = np.array([0, 1, 2, 3, 5])
  mesh = mesh_lib.hospital_mesh(8)
  new_state, out = engine.compiled_round(settings, mesh, "vmap")(
      state, data, sampled, jax.random.key(4))
  assert np.asarray(out.accepted).tolist() == [True, True, False, True, True]
  v_c, u_s, _ = _numpy_of_accepted(out)
  assert np.shape(out.v_c) == () and v_c > 0 and u_s > 0
  np.testing.assert_allclose(float(out.v_c), v_c, rtol=1e-5)
  np.testing.assert_allclose(float(out.u_s), u_s, rtol=1e-5)
  step = np.concatenate([np.ravel(np.asarray(a) - np.asarray(b)) for a, b in zip(
      jax.tree.leaves(new_state.params), jax.tree.leaves(state.params))])
  assert np.mean(step ** 2) > 10 * u_s  # the server's noise is in the step, not in U_s
  _, sequential = engine.sequential_round(settings)(
      state, data, sampled, jax.random.key(4))
  np.testing.assert_allclose(float(sequential.v_c), v_c, rtol=1e-5)
  np.testing.assert_allclose(float(sequential.u_s), u_s, rtol=1e-5)


def test_frozen_parameters_are_not_coordinates_of_the_statistics():
  """P counts the trainable coordinates only: freezing a layer (all its updates zero) leaves
  V_c and U_s those of the trainable layers alone."""
  from ccfl_jax.federated import engine, mesh as mesh_lib, server
  data, settings, state = _round_setup(noise_multiplier=0.0)
  mask = jax.tree.map(lambda _: True, state.params)
  leaves, treedef = jax.tree.flatten(mask)
  leaves[0] = False  # freeze the first leaf
  mask = jax.tree.unflatten(treedef, leaves)
  frozen = engine.RoundSettings(**{**settings.__dict__, "trainable": mask,
                                   "server_optimizer": server.only_trainable(
                                       settings.server_optimizer, mask)})
  state = server.init_state(state.params, frozen.server_optimizer)
  sampled = np.array([0, 1, 3])
  mesh = mesh_lib.hospital_mesh(1)
  _, out = engine.compiled_round(frozen, mesh, "unroll")(
      state, data, sampled, jax.random.key(4))
  trainable = [leaf for leaf, m in zip(jax.tree.leaves(out.updates), jax.tree.leaves(mask)) if m]
  assert not np.any(np.asarray(jax.tree.leaves(out.updates)[0]))
  rows = np.concatenate([np.asarray(leaf, np.float64).reshape(leaf.shape[0], -1)
                         for leaf in trainable], axis=1)
  v_c, u_s, _ = _numpy_stats(rows)
  np.testing.assert_allclose(float(out.v_c), v_c, rtol=1e-5)
  np.testing.assert_allclose(float(out.u_s), u_s, rtol=1e-5)
