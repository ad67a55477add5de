r"""configs/ucsd_pretrained_fed9.py with non-iid hospitals: patients dealt to the 9 hospitals
by a Dirichlet(alpha = 0.5) draw over the two labels, so hospitals differ in size and in
their share of COVID patients.

  python -m ccfl_jax.main --config=configs/ucsd_pretrained_fed9_dirichlet.py

Measured runtime and results (3 seeds): results/ucsd_pretrained.md (tools/ucsd_pretrained.py).
"""
import pathlib

from ccfl_jax.configuration import load_config_file


def get_config():
  c = load_config_file(pathlib.Path(__file__).with_name("ucsd_pretrained_fed9.py"))
  c.run_name = "ucsd_pretrained_fed9_dirichlet"
  c.partition.kind = "dirichlet"
  c.partition.alpha = 0.5
  return c
