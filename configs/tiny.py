r"""A seconds-long smoke run: 4 hospitals, 2 rounds, 16x16 phantom slices, a small MLP.

  python -m ccfl_jax.main --config=configs/tiny.py

About 20 seconds on a 2-core CPU (mostly importing JAX and compiling). Used by the tests.
"""
from ccfl_jax.configuration import default_config


def get_config():
  c = default_config()
  c.run_name = "tiny"
  c.dataset.num_patients = 16
  c.dataset.slices_per_patient = 2
  c.dataset.image_size = 16
  c.model.name = "mlp"
  c.model.hidden = (16,)
  c.num_hospitals = 4
  c.hospitals_per_round = 2
  c.num_rounds = 2
  c.local_steps = 2
  c.batch_size = 4
  c.checkpoint_every = 1
  return c
