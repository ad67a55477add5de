r"""1,000 hospitals, 100 sampled a round: client-level DP that means something (issue #12).

  python -m ccfl_jax.main --config=configs/scale1000.py

The phantom's 2,000 synthetic patients x 4 slices at 32x32 (400 held out), split by patient
over 1,000 hospitals (about 6 training slices each); 100 rounds, each sampling m_t = 100 of
them without replacement, K = 2 local Adam steps of batch 8, S = 2, sigma = 3: epsilon = 8.9
at delta = 1e-6 (the RDP accountant, sampling without replacement; privacy.py).

The noise std on the mean update is sigma S / m_t per coordinate, so its norm grows with the
square root of the model's size d: sigma sqrt(d) / m_t is about 1 for the ~900-parameter CNN
here (widths 4, 8, 8) and would be 7 for the default small CNN (60k parameters). At this
cohort size client-level DP is a budget on parameters: small models, or many more hospitals
per round.

No ledger and no vote (every sampled update aggregated): the experiment measures what the
noise costs. The sequential engine: on a CPU the compiled round unrolls its 100 hospitals
in the trace, a minutes-long compile (mesh.default_hospital_axis); both engines give the
same numbers. tools/paper_experiments.py --experiment=privacy_at_scale runs it against
sigma = 0 over three seeds -> results/privacy_at_scale.md.
"""
from ccfl_jax.configuration import default_config


def get_config():
  c = default_config()
  c.run_name = "scale1000"
  c.dataset.num_patients = 2000
  c.dataset.slices_per_patient = 4
  c.model.widths = (4, 8, 8)
  c.num_hospitals = 1000
  c.hospitals_per_round = 100
  c.num_rounds = 100
  c.local_steps = 2
  c.batch_size = 8
  c.privacy.noise_multiplier = 3.0
  c.privacy.delta = 1e-6
  c.ledger.enabled = False
  c.engine.kind = "sequential"
  c.checkpoint_every = 25
  return c
