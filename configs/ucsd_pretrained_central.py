r"""The centralized reference for configs/ucsd_pretrained_fed9.py: ONE hospital holds the
whole UCSD train split and fine-tunes the same pretrained EfficientNet-Lite0 with the same
augmentation and optimizer, for the same ~12 epochs (27 steps of 16 images per round);
no vote (one hospital), no DP noise.

  python -m ccfl_jax.main --config=configs/ucsd_pretrained_central.py

Measured runtime and results (3 seeds): results/ucsd_pretrained.md (tools/ucsd_pretrained.py).
"""
import pathlib

from ccfl_jax.configuration import load_config_file


def get_config():
  c = load_config_file(pathlib.Path(__file__).with_name("ucsd_pretrained_fed9.py"))
  c.run_name = "ucsd_pretrained_central"
  c.num_hospitals = 1
  c.hospitals_per_round = 1
  c.local_steps = 27
  c.ledger.enabled = False
  return c
