"""On-device augmentation: deterministic by key, shape- and range-preserving, off by default."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ccfl_jax.data.augment import AugmentSettings, augment

ON = AugmentSettings(enabled=True)


@pytest.fixture(scope="module")
def images():
  rng = np.random.default_rng(0)
  return jnp.asarray(rng.uniform(size=(4, 32, 24, 1)), jnp.float32)


def test_same_key_same_images_different_keys_differ(images):
  run = jax.jit(augment, static_argnums=2)
  first = run(jax.random.key(1), images, ON)
  np.testing.assert_array_equal(first, run(jax.random.key(1), images, ON))
  assert not np.allclose(first, run(jax.random.key(2), images, ON))
  # Images of one batch get different draws.
  same = jnp.broadcast_to(images[:1], images.shape)
  out = run(jax.random.key(1), same, ON)
  assert not np.allclose(out[0], out[1])


def test_same_key_same_crop_alone(images):
  crop_only = AugmentSettings(enabled=True, flip=False, rotation_degrees=0, brightness=0,
                              contrast=0)
  a = augment(jax.random.key(5), images, crop_only)
  np.testing.assert_array_equal(a, augment(jax.random.key(5), images, crop_only))
  assert not np.allclose(a, images)


def test_shape_dtype_and_range_kept(images):
  strong = AugmentSettings(enabled=True, crop_scale=(0.2, 1.0), rotation_degrees=30,
                           brightness=0.5, contrast=0.9)
  out = augment(jax.random.key(3), images, strong)
  assert out.shape == images.shape and out.dtype == images.dtype
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  rgb = jnp.repeat(images, 3, axis=-1)
  assert augment(jax.random.key(3), rgb, strong).shape == rgb.shape


def test_off_returns_the_input_and_identity_steps_change_nothing(images):
  assert augment(jax.random.key(0), images, AugmentSettings()) is images
  identity = AugmentSettings(enabled=True, crop=False, flip=False, rotation_degrees=0,
                             brightness=0, contrast=0)
  np.testing.assert_array_equal(augment(jax.random.key(0), images, identity), images)
  full_box = AugmentSettings(enabled=True, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0),
                             flip=False, rotation_degrees=0, brightness=0, contrast=0)
  np.testing.assert_allclose(augment(jax.random.key(0), images, full_box), images, atol=1e-5)


def test_flip_alone_mirrors_or_keeps_each_image(images):
  flip = AugmentSettings(enabled=True, crop=False, rotation_degrees=0, brightness=0, contrast=0)
  out = np.asarray(augment(jax.random.key(7), jnp.tile(images, (4, 1, 1, 1)), flip))
  source = np.tile(np.asarray(images), (4, 1, 1, 1))
  flipped = [np.allclose(o, s[:, ::-1], atol=1e-5) for o, s in zip(out, source)]
  kept = [np.allclose(o, s, atol=1e-5) for o, s in zip(out, source)]
  assert all(f or k for f, k in zip(flipped, kept))
  assert any(flipped) and any(kept)


def test_from_dict_and_validation():
  settings = AugmentSettings.from_dict({"enabled": True, "crop_scale": [0.6, 1.0]})
  assert settings.enabled and settings.crop_scale == (0.6, 1.0)
  with pytest.raises(ValueError, match="unknown"):
    AugmentSettings.from_dict({"zoom": 2})
  with pytest.raises(ValueError, match="crop_scale"):
    AugmentSettings(crop_scale=(0.0, 1.0))
