"""Every registered model trains inside the compiled federated round, vmapped over hospitals."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ccfl_jax.data.hospitals import HospitalData
from ccfl_jax.federated import engine, mesh as mesh_lib, server
from ccfl_jax.models import get_model, model_names, tiny_kwargs

SIZE = 32
SMALL_KWARGS = {"small_cnn": dict(widths=(4, 8)), "mlp": dict(hidden=(8,))}


def _kwargs(name):
  return SMALL_KWARGS.get(name, tiny_kwargs(name))


ROUND_MODELS = ("mlp", "small_cnn", "capsnet", "iv3_capsule", "efficientnet_lite")


@pytest.mark.parametrize("name", ROUND_MODELS)
def test_model_trains_in_compiled_round_vmapped_over_hospitals(name):
  model = get_model(name, **_kwargs(name))
  settings = engine.RoundSettings(model, optax.sgd(0.01), optax.sgd(1.0), local_steps=1,
                                  batch_size=2, clip_norm=10.0, noise_multiplier=0.0,
                                  unroll_local_steps=True)
  rng = np.random.default_rng(0)
  data = HospitalData(rng.uniform(size=(2, 4, SIZE, SIZE, 1)).astype(np.float32),
                      np.tile(np.array([0, 1, 0, 1], np.int32), (2, 1)), np.array([4, 4], np.int32))
  params = model.module.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 1)))
  state = server.init_state(params, settings.server_optimizer)
  mesh = mesh_lib.hospital_mesh(1)
  new_state, out = engine.compiled_round(settings, mesh, "vmap")(
      state, data, np.array([0, 1]), jax.random.key(1))
  leaves = jax.tree.leaves(new_state.params)
  assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves)
  assert np.all(np.isfinite(np.asarray(out.local_loss)))
  changed = [not np.allclose(a, b) for a, b in zip(leaves, jax.tree.leaves(state.params))]
  assert any(changed)
  norms = np.asarray(out.update_norm)  # each hospital trained on its own data
  assert np.all(np.isfinite(norms)) and norms[0] != norms[1]
  probabilities = model.probabilities(model.module.apply(new_state.params, data.images[0]))
  assert probabilities.shape == (4, 2) and bool(jnp.all((probabilities >= 0) & (probabilities <= 1)))
  np.testing.assert_allclose(jnp.sum(probabilities, -1), 1.0, rtol=1e-5)


# The whole compiled round costs 20-90 s of XLA:CPU compile per deep zoo model (measured:
# 700 s for all 19 models), so the round runs for the project's own models and one deep
# pretrained backbone (ROUND_MODELS: mlp, small_cnn, capsnet, iv3_capsule, efficientnet_lite;
# vgg16 and resnet50 ran here too, 87 s, and were dropped to keep the suite under 15 min),
# every zoo model's forward pass is compiled and checked finite in tests/models/test_zoo.py,
# and every model's tiny version is checked abstractly (shapes only, no compile) here.
@pytest.mark.parametrize("name", model_names())
def test_every_model_builds_and_gives_two_class_outputs_abstractly(name):
  model = get_model(name, **_kwargs(name))
  images = jax.ShapeDtypeStruct((3, SIZE, SIZE, 1), jnp.float32)
  params = jax.eval_shape(model.module.init, jax.random.key(0), images)
  outputs = jax.eval_shape(model.module.apply, params, images)
  probabilities = jax.eval_shape(model.probabilities, outputs)
  assert probabilities.shape == (3, 2)
