"""End to end: the main command's outputs, resume == uninterrupted, and config errors."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ccfl_jax import configuration, files, inference, recorder, training
from ccfl_jax.federated import privacy
from ccfl_jax.ledger import audit, store
from tests.conftest import REPO_ROOT
from tests.test_reporting import event_file_scalars


def tiny_config(run_dir_name="run", **overrides):
  c = configuration.default_config()
  c.run_name = run_dir_name
  c.dataset.num_patients = 12
  c.dataset.slices_per_patient = 2
  c.dataset.image_size = 16
  c.model.name = "mlp"
  c.model.hidden = (8,)
  c.num_hospitals = 3
  c.hospitals_per_round = 2
  c.local_steps = 2
  c.batch_size = 4
  c.num_rounds = 4
  c.checkpoint_every = 2
  for key, value in overrides.items():
    c[key] = value
  return c


def _refuse_non_standard(token):
  raise ValueError(f"metrics.jsonl holds {token}, which strict JSON readers refuse")


def _metrics(run_dir):
  lines = (run_dir / "metrics.jsonl").read_text().splitlines()
  return [{k: v for k, v in json.loads(line, parse_constant=_refuse_non_standard).items()
           if k != "round_seconds"} for line in lines]


def test_resume_after_stop_and_crash_matches_uninterrupted(tmp_path):
  straight = tmp_path / "straight"
  training.train_and_evaluate(tiny_config(), straight)
  resumed = tmp_path / "resumed"
  training.train_and_evaluate(tiny_config(num_rounds=2), resumed)
  with (resumed / "metrics.jsonl").open("a") as f:  # a crash after logging round 3, before its checkpoint
    f.write(json.dumps({"round": 3, "bogus": True}) + "\n")
  training.train_and_evaluate(tiny_config(tensorboard=True), resumed)  # a resumable change
  assert _metrics(straight) == _metrics(resumed)
  [events] = (resumed / "tensorboard").iterdir()  # rewritten whole: each round once
  steps = [step for tag, step, _ in event_file_scalars(events) if tag == "test/accuracy"]
  assert steps == [1, 2, 3, 4]
  assert [r["round"] for r in _metrics(resumed)] == [1, 2, 3, 4]
  _, params_a, round_a = inference.load_run(straight)
  _, params_b, round_b = inference.load_run(resumed)
  assert round_a == round_b == 4
  for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  report = audit.verify_run(resumed)
  assert report.ok, report.summary()
  # 2 setup blocks, one per round and the closing block
  assert "OK: 7 blocks (4 rounds, closed)" in report.summary()
  records = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
  assert all(sorted(r["accepted"] + r["rejected"]) == r["sampled"] for r in records)


def test_fresh_random_keys_train_exactly_as_derived_keys(tmp_path):
  """The verifier panel follows the hospitals' seats, not their keys (identity.py): two runs
  of one seed with fresh random keys and one with derived keys train bit-identically."""
  def run(name, key_source):
    config = tiny_config(num_rounds=2, num_hospitals=4)
    config.ledger.num_verifiers = 2  # a panel smaller than H, so which hospitals judge matters
    config.ledger.key_source = key_source
    training.train_and_evaluate(config, tmp_path / name)
    return _metrics(tmp_path / name), inference.load_run(tmp_path / name)[1]
  runs = [run("random_a", "random"), run("random_b", "random"), run("derived", "derived")]
  for metrics, params in runs[1:]:
    assert metrics == runs[0][0]
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(runs[0][1])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  keys = [tuple(audit.public_keys(tmp_path / name)) for name in ("random_a", "random_b", "derived")]
  assert len(set(keys)) == 3


def _flip_one_byte(path):
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0x01
  path.write_bytes(bytes(data))


def test_crash_between_checkpoint_and_block_then_tampering(tmp_path):
  """A checkpoint no block vouches for is discarded and its round recomputed; a byte flipped
  in a recorded checkpoint fails verify and refuses a resume."""
  run_dir = tmp_path / "run"
  config = tiny_config(num_rounds=2, checkpoint_every=1)
  training.train_and_evaluate(config, run_dir)
  _, params_before, _ = inference.load_run(run_dir)
  sorted(store.ledger_dir(run_dir).glob("*.json"))[-1].unlink()  # round 2's block never written
  training.train_and_evaluate(config, run_dir)  # checkpoint 2 deleted, round 2 recomputed
  _, params_after, rounds_done = inference.load_run(run_dir)
  assert rounds_done == 2
  for a, b in zip(jax.tree.leaves(params_before), jax.tree.leaves(params_after)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  report = audit.verify_run(run_dir)
  assert report.ok and report.rounds == 2 and report.checkpoints_rehashed == 2, report.summary()
  checkpoint = run_dir / "checkpoints" / "2"
  _flip_one_byte(max((p for p in checkpoint.rglob("*") if p.is_file()),
                     key=lambda p: p.stat().st_size))
  report = audit.verify_run(run_dir)
  assert not report.ok and "checkpoints/2" in report.failure, report.summary()
  with pytest.raises(ValueError, match="does not match the ledger"):
    training.train_and_evaluate(tiny_config(num_rounds=3, checkpoint_every=1), run_dir)


def _main(*args, cwd):
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
  return subprocess.run([sys.executable, "-m", "ccfl_jax.main", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("override, field", [
    ("--config.privacy.clip_norm=-1", "config.privacy.clip_norm"),
    ("--config.hospitals_per_round=5", "config.hospitals_per_round"),
    ("--config.model.name=resnet9000", "config.model.name"),
    ("--config.privacy.noise_multipler=1", "noise_multiplier"),
])
def test_main_rejects_bad_config_in_one_line(tmp_path, override, field):
  result = _main(f"--config={REPO_ROOT / 'configs' / 'tiny.py'}", override, cwd=tmp_path)
  assert result.returncode == 2
  assert field in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("change, message", [
    (lambda c: setattr(c.privacy, "noise_multiplier", -0.1), "noise_multiplier.*sigma >= 0"),
    (lambda c: setattr(c, "hospitals_per_round", 4), "hospitals_per_round.*num_hospitals"),
    (lambda c: setattr(c.dataset, "name", "mnist"), "dataset.name.*phantom, dicom"),
    (lambda c: setattr(c.partition, "kind", "pathological"), "partition.kind.*iid, dirichlet"),
    (lambda c: setattr(c.engine, "hospital_axis", "pmap"), "engine.hospital_axis.*vmap"),
    (lambda c: c.privacy.__setitem__("clip", 1.0), "privacy.clip: unknown field.*clip_norm"),
    (lambda c: c.model.__setitem__("depth", 3), "config.model.*depth"),
    (lambda c: setattr(c.local_optimizer, "name", "adamz"), "local_optimizer.name.*optax"),
    (lambda c: setattr(c.attack, "kind", "trojan"), "attack.kind.*sign_flip"),
    (lambda c: setattr(c.attack, "num_malicious", 4), "attack.num_malicious"),
    (lambda c: setattr(c.ledger.consensus, "rule", "mean"), "ledger.consensus.rule.*median_mad"),
    (lambda c: setattr(c.augment, "crop_scale", (0.0, 1.0)), r"augment.crop_scale.*0 < low"),
    (lambda c: setattr(c.augment, "contrast", 1.5), r"augment.contrast 1.5: must be <= 1"),
    (lambda c: setattr(c.augment, "rotation_degrees", -1.0), "augment.rotation_degrees.*>= 0"),
    (lambda c: c.augment.__setitem__("zoom", 2.0), "augment.zoom: unknown field"),
    (lambda c: setattr(c.privacy, "clip_norm", float("inf")), "privacy.clip_norm.*finite S"),
    (lambda c: setattr(c, "run_name", "../elsewhere"), "run_name.*inside results_dir"),
    (lambda c: setattr(c, "run_name", "/tmp/abs"), "run_name.*inside results_dir"),
    (lambda c: c.local_optimizer.__setitem__("weight_decay", 0.1),
     r"config.local_optimizer: .*weight_decay.* is not a valid optax.adam"),
    (lambda c: setattr(c.distributed, "num_processes", 0), r"distributed.num_processes.*>= 1"),
    (lambda c: c.distributed.update(num_processes=2, process_id=2,
                                    coordinator_address="localhost:1"),
     r"distributed.process_id = 2: expected in \[0, distributed.num_processes = 2\)"),
    (lambda c: setattr(c.distributed, "num_processes", 2),
     "distributed.coordinator_address.*host:port of process 0"),
])
def test_validate_names_field_and_choices(change, message):
  config = tiny_config()
  change(config)
  with pytest.raises(configuration.ConfigError, match=message):
    configuration.validate(config)


def test_tensorboard_without_its_extra_is_refused_at_start(monkeypatch):
  real_find_spec = configuration.importlib.util.find_spec
  monkeypatch.setattr(configuration.importlib.util, "find_spec",
                      lambda name: None if name == "tensorboardX" else real_find_spec(name))
  config = tiny_config()
  config.tensorboard = True
  with pytest.raises(configuration.ConfigError, match=r'tensorboard.*pip install -e "\.\[tensorboard'):
    configuration.validate(config)


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO_ROOT / "configs").glob("*.py")))
def test_shipped_configs_validate(name):
  configuration.validate(configuration.load_config_file(REPO_ROOT / "configs" / f"{name}.py"))


def test_the_augment_block_defaults_are_the_augment_settings_defaults():
  from ccfl_jax.data.augment import AugmentSettings
  assert AugmentSettings.from_dict(configuration.default_config().augment) == AugmentSettings()


def test_skipped_files_are_counted_in_the_summary(tmp_path):
  from PIL import Image
  folder = tmp_path / "images"
  folder.mkdir()
  rows = ["path,label,patient_id"]
  for i in range(12):
    Image.fromarray(np.full((20, 24), 40 * (i % 2) + 10, np.uint8)).save(folder / f"{i}.png")
    rows.append(f"{i}.png,{i % 2},p{i}")
  (folder / "broken.png").write_bytes(b"not an image")
  rows.append("broken.png,1,p99")
  (folder / "labels.csv").write_text("\n".join(rows) + "\n")
  config = tiny_config(num_rounds=1)
  config.dataset.name = "image_folder"
  config.dataset.path = str(folder)
  config.dataset.on_bad_file = "skip"
  config.dataset.cache_dir = str(tmp_path / "cache")
  config.ledger.enabled = False
  summary = training.train_and_evaluate(config, tmp_path / "run")
  assert [f["path"].endswith("broken.png") for f in summary["skipped_files"]] == [True]
  markdown = (tmp_path / "run" / "summary.md").read_text()
  assert "Files skipped by the loader (on_bad_file='skip'): 1" in markdown
  tiny = summary["data_warnings"][0]  # the loader's checks reach the summary: 20x24 images
  assert tiny.startswith("12 image(s) smaller than 32 pixels on a side (first: ") and tiny in markdown


def test_resume_with_another_config_is_refused_untouched_or_forced_and_charged_per_round(
    tmp_path):
  run_dir = tmp_path / "run"
  first = tiny_config(num_rounds=2)
  first.privacy.noise_multiplier = 1.0
  training.train_and_evaluate(first, run_dir)
  before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
  changed = tiny_config(num_rounds=3, seed=1)
  changed.privacy.noise_multiplier = 2.0
  with pytest.raises(recorder.IncompatibleRun, match=r"privacy.noise_multiplier: 1.0 -> 2.0; "
                     r"seed: 0 -> 1\); start a new run with --config.run_name"):
    training.train_and_evaluate(changed, run_dir)
  assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before  # untouched
  forced = tiny_config(num_rounds=4, resume_force=True)
  forced.privacy.noise_multiplier = 2.0
  training.train_and_evaluate(forced, run_dir)
  records = _metrics(run_dir)
  assert [r["noise_multiplier"] for r in records] == [1.0, 1.0, 2.0, 2.0]
  sampled = [len(r["sampled"]) for r in records]
  assert records[-1]["epsilon"] == privacy.epsilon(3, sampled, [1.0, 1.0, 2.0, 2.0], 1e-5)
  assert records[-1]["epsilon"] > privacy.epsilon(3, sampled, 2.0, 1e-5)  # not all at 2.0
  report = audit.verify_run(run_dir)  # recomputes every round's ε from its recorded σ_t
  assert report.ok, report.summary()


@pytest.mark.parametrize("results_below_a_file", [False, True])
def test_an_unwritable_results_folder_is_refused_before_any_training(tmp_path,
                                                                     results_below_a_file):
  (tmp_path / "results").write_text("a file where the results folder should be")
  results = tmp_path / "results" / ("deeper" if results_below_a_file else "")
  with pytest.raises(files.OutputError, match="results.*cannot write the run folder here"):
    training.train_and_evaluate(tiny_config(), results / "run")
  assert (tmp_path / "results").read_text().startswith("a file")


def test_fields_added_to_the_schema_later_count_as_their_defaults_on_resume():
  defaults = {"augment": {"enabled": False}, "seed": 0}
  stored = {"seed": 0}  # a run made before config.augment existed
  assert recorder.config_differences(stored, {"seed": 0, "augment": {"enabled": False}},
                                     defaults) == []
  assert recorder.config_differences(stored, {"seed": 0, "augment": {"enabled": True}},
                                     defaults) == ["augment.enabled: False -> True"]
  assert recorder.config_differences(stored, {"seed": 1, "augment": {"enabled": False}}) == [
      "augment.enabled: None -> False", "seed: 0 -> 1"]


def test_a_run_on_a_schedule_cannot_be_extended_by_more_rounds():
  """A learning-rate schedule spans num_rounds: more rounds would reshape the rounds done."""
  constant = {"num_rounds": 4, "local_schedule": {"name": "constant"}}
  assert recorder.config_differences(constant, {**constant, "num_rounds": 8}) == []
  scheduled = {"num_rounds": 4, "local_schedule": {"name": "one_cycle"}}
  assert recorder.config_differences(scheduled, {**scheduled, "num_rounds": 8}) == [
      "num_rounds: 4 -> 8"]
