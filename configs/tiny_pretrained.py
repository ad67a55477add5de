r"""A minutes-long smoke run of the pretrained path: ImageNet EfficientNet-Lite0 (its last
block, top conv and head train), augmentation on, 2 hospitals, 2 rounds, 64x64 phantom slices.

  python -m ccfl_jax.main --config=configs/tiny_pretrained.py

About a minute on a 2-core CPU (mostly compiling the net). Used by the tests; the real
recipe is configs/ucsd_pretrained_fed9.py.
"""
from ccfl_jax.configuration import default_config


def get_config():
  c = default_config()
  c.run_name = "tiny_pretrained"
  c.dataset.num_patients = 12
  c.dataset.slices_per_patient = 2
  c.dataset.image_size = 64
  c.model.name = "efficientnet_lite"
  c.model.variant = 0
  c.model.pretrained = True
  c.model.trainable = "last_1"
  c.augment.enabled = True
  c.num_hospitals = 2
  c.hospitals_per_round = 2
  c.num_rounds = 2
  c.local_steps = 2
  c.batch_size = 4
  c.checkpoint_every = 1
  c.ledger.num_verifiers = 2
  c.ledger.validation_size = 4
  return c
