r"""configs/ucsd_pretrained_fed9.py with client-level differential privacy that can still
learn: only the head and the last MBConv block train (the rest of the pretrained backbone
is frozen: no update, no noise, no share of the clipped norm), S = 1, sigma = 0.5 on the
sum of the 9 clipped updates.

  python -m ccfl_jax.main --config=configs/ucsd_pretrained_fed9_dp.py

Measured runtime, results and (epsilon, delta) (3 seeds): results/ucsd_pretrained.md
(tools/ucsd_pretrained.py). With only 9 hospitals the guarantee is weak (epsilon is large):
the noise on the mean of 9 updates has std sigma * S / 9 per parameter, and a stronger
sigma drowns the update.
"""
import pathlib

from ccfl_jax.configuration import load_config_file


def get_config():
  c = load_config_file(pathlib.Path(__file__).with_name("ucsd_pretrained_fed9.py"))
  c.run_name = "ucsd_pretrained_fed9_dp"
  c.model.trainable = "last_1"
  c.privacy.clip_norm = 1.0
  c.privacy.noise_multiplier = 0.5
  return c
