"""engine.compute_dtype = bfloat16: local training's forward and backward pass in bfloat16,
everything the privacy guarantee and the audit rest on in float32."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ccfl_jax import configuration
from ccfl_jax.federated import client, engine, mesh as mesh_lib
from tests.federated.test_engine import SAMPLED, _initial_state, _settings, hospital_data  # noqa: F401


def _batch(size=16, n=8):
  rng = np.random.default_rng(0)
  return (rng.uniform(size=(n, size, size, 1)).astype(np.float32),
          np.tile(np.array([0, 1], np.int32), n // 2))


@pytest.mark.parametrize("model_name, kwargs", [("mlp", dict(hidden=(16,))),
                                                ("small_cnn", dict(widths=(4, 8)))])
def test_a_bfloat16_step_keeps_float32_params_and_is_close_to_float32(model_name, kwargs):
  settings = _settings(model_name, **kwargs)
  params = _initial_state(settings).params
  optimizer = optax.sgd(0.1)
  images, labels = _batch()
  steps = {dtype: jax.jit(client.train_step(settings.model, optimizer, dtype))
           for dtype in client.COMPUTE_DTYPES}
  results = {dtype: step(params, optimizer.init(params), images, labels)
             for dtype, step in steps.items()}
  (p32, _, loss32), (p16, _, loss16) = results["float32"], results["bfloat16"]
  assert {leaf.dtype for leaf in jax.tree.leaves(p16)} == {jnp.dtype(jnp.float32)}
  assert loss16.dtype == jnp.float32
  np.testing.assert_allclose(float(loss16), float(loss32), rtol=2e-2)
  moved32 = jax.tree.map(jnp.subtract, p32, params)
  moved16 = jax.tree.map(jnp.subtract, p16, params)
  diff = np.sqrt(sum(float(jnp.sum((a - b) ** 2)) for a, b in
                     zip(jax.tree.leaves(moved32), jax.tree.leaves(moved16))))
  norm = np.sqrt(sum(float(jnp.sum(a ** 2)) for a in jax.tree.leaves(moved32)))
  assert 0 < diff < 0.05 * norm  # bfloat16 is in effect, and the step is the same step


def test_a_bfloat16_round_clips_noises_and_votes_in_float32(hospital_data):  # noqa: F811
  base = _settings(noise_multiplier=0.3, hidden=(16,))
  state = _initial_state(base)
  mesh = mesh_lib.hospital_mesh(1)
  outputs = {}
  for dtype in client.COMPUTE_DTYPES:
    settings = dataclasses.replace(base, compute_dtype=dtype, return_updates=True)
    outputs[dtype] = engine.compiled_round(settings, mesh, "vmap")(
        state, hospital_data, SAMPLED, jax.random.key(7))
  (state32, out32), (state16, out16) = outputs["float32"], outputs["bfloat16"]
  for tree in (state16.params, out16.updates):
    assert {leaf.dtype for leaf in jax.tree.leaves(tree)} == {jnp.dtype(jnp.float32)}
  norms = np.sqrt(sum(np.sum(np.asarray(u) ** 2, axis=tuple(range(1, np.ndim(u))))
                      for u in jax.tree.leaves(out16.updates)))
  assert np.all(norms <= base.clip_norm * (1 + 1e-5))
  # Same keys, same noise: the global models differ only by the local steps' rounding.
  np.testing.assert_allclose(out16.update_norm, out32.update_norm, rtol=5e-2)
  for a, b in zip(jax.tree.leaves(state16.params), jax.tree.leaves(state32.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-2)
  assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
             zip(jax.tree.leaves(state16.params), jax.tree.leaves(state32.params)))


def test_an_unknown_compute_dtype_is_refused():
  config = configuration.default_config()
  config.engine.compute_dtype = "float16"
  with pytest.raises(configuration.ConfigError, match="engine.compute_dtype.*bfloat16"):
    configuration.validate(config)
  with pytest.raises(ValueError, match="engine.compute_dtype 'int8'"):
    client.train_step(None, optax.sgd(0.1), "int8")
