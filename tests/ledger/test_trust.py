"""The audit's trust anchors (issue 13): forgeries that re-sign, truncate, transplant or edit a
run fail `verify` naming what failed, given trusted keys, a pinned head and the verifier's
own minimum difficulty; keys are secrets kept in a keystore; checkpoints stay confined."""
import json
import os
import shutil
import stat

import numpy as np
import pytest

from ccfl_jax.ledger import __main__ as cli
from ccfl_jax.ledger import audit
from ccfl_jax.ledger import block as block_lib
from ccfl_jax.ledger import identity
from ccfl_jax.ledger import keystore
from ccfl_jax.ledger import run_ledger
from ccfl_jax.ledger import simulate
from ccfl_jax.ledger import store
from ccfl_jax.ledger import transactions as tx_lib
from ccfl_jax.ledger import validate
from ccfl_jax.ledger.digests import UnsafePath

H, PER_ROUND, ROUNDS, SEED = 4, 3, 3, 0
OUTPUTS = ("summary.json", "summary.md", "curves.png")


def write_config(run_dir, run_name="real", seed=SEED, sigma=1.0) -> str:
  run_dir.mkdir(parents=True, exist_ok=True)
  text = json.dumps({"run_name": run_name, "seed": seed, "num_hospitals": H,
                     "privacy": {"noise_multiplier": sigma, "delta": 1e-5}}, indent=2)
  (run_dir / "config.json").write_text(text)
  return run_ledger.text_sha256(text)


def fake_checkpoint(run_dir, step, rng):
  step_dir = run_dir / "checkpoints" / str(step)
  (step_dir / "state").mkdir(parents=True)
  (step_dir / "state" / "data.bin").write_bytes(rng.bytes(256))
  (step_dir / "_METADATA").write_text(json.dumps({"step": step}))
  return step_dir


def record_rounds(run, rounds=ROUNDS, sigma=1.0, epsilon_of=None, checkpoint_last=True,
                  metrics=True):
  """Synthetic rounds with their metrics.jsonl lines; the last one checkpointed."""
  rng = np.random.default_rng(1)
  path = run.run_dir / "metrics.jsonl"
  for r in range(rounds):
    synthetic = simulate.synthetic_round(run, r, PER_ROUND)
    history = [(PER_ROUND, sigma)] * (r + 1)
    epsilon = (epsilon_of or (lambda h: audit.accountant_epsilon(H, h, 1e-5)))(history)
    line = json.dumps({"round": r + 1, "epsilon": epsilon, "accuracy": 0.5 + 0.1 * r})
    if metrics:
      with path.open("a") as f:
        f.write(line + "\n")
    step_dir = fake_checkpoint(run.run_dir, r + 1, rng) if checkpoint_last and r == rounds - 1 \
        else None
    run = simulate.record_synthetic_round(
        run, r, synthetic, epsilon, step_dir, sigma=sigma,
        metrics_sha256=run_ledger.text_sha256(line) if metrics else None)
  return run


def write_outputs(run_dir, text="accuracy 0.7"):
  (run_dir / "summary.json").write_text(json.dumps({"accuracy": 0.7, "note": text}))
  (run_dir / "summary.md").write_text(f"# Summary\n\n{text}\n")
  (run_dir / "curves.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)


def close(run, rounds=ROUNDS):
  files = {name: run.run_dir / name for name in OUTPUTS + ("config.json",)}
  files[f"checkpoints/{rounds}"] = run.run_dir / "checkpoints" / str(rounds)
  return run_ledger.close_run(run, files)


def make_run(run_dir, keys="random", keystore_root=None, difficulty=8, run_name="real",
             sigma=1.0, closed=True):
  config_sha = write_config(run_dir, run_name, sigma=sigma)
  run = run_ledger.open_run_ledger(run_dir, SEED, H, difficulty=difficulty, keys=keys,
                                   keystore=keystore_root, config_sha256=config_sha)
  run = record_rounds(run, sigma=sigma)
  write_outputs(run_dir)
  return close(run) if closed else run


@pytest.fixture(scope="module")
def real(tmp_path_factory):
  """A closed run with random keys, and the anchors an auditor obtained out of band."""
  run_dir = tmp_path_factory.mktemp("real") / "run"
  run = make_run(run_dir)
  keys_file = run_dir.parent / "trusted_keys.txt"
  keys_file.write_text("\n".join(audit.public_keys(run_dir)) + "\n")
  return run_dir, run.ledger.head_hash, keys_file


@pytest.fixture
def copy(real, tmp_path):
  destination = tmp_path / "run"
  shutil.copytree(real[0], destination, symlinks=True)
  return destination


def verify(run_dir, real=None, **options):
  """verify_run with the real run's anchors when `real` is given."""
  if real is not None:
    options.setdefault("trusted_keys", audit.read_trusted_keys(real[2]))
    options.setdefault("head", real[1])
  return audit.verify_run(run_dir, **options)


def failed(report, *needles):
  assert not report.ok, report.summary()
  for needle in needles:
    assert needle in report.failure, report.summary()
  return report


def test_the_real_run_verifies_with_its_anchors_and_says_what_is_missing_without(real, capsys):
  run_dir, head, keys_file = real
  report = verify(run_dir, real)
  assert report.ok and report.closed and report.not_established == (), report.summary()
  text = report.summary()
  assert text.startswith(f"OK: {2 + ROUNDS} blocks ({ROUNDS} rounds, closed)")
  for needle in ("trusted hospital keys", "pinned head", "epsilon of all 3 rounds",
                 "config.json matches", "metrics.jsonl: 3 lines", "summary.md"):
    assert needle in text, text
  bare = audit.verify_run(run_dir).summary()
  assert bare.startswith("OK") and "not established: no trusted keys" in bare
  assert "internal" in bare and "not established: no pinned head" in bare
  assert cli.main(["head", str(run_dir)]) == 0
  assert capsys.readouterr().out.strip() == head
  assert cli.main(["verify", str(run_dir), "--trusted_keys", str(keys_file), "--head", head]) == 0
  assert capsys.readouterr().out.startswith("OK")


def test_keys_are_random_secret_and_kept_outside_the_run(real, temporary_keystore):
  run_dir = real[0]
  run_id = audit.load_chain(run_dir)[1].state.run_id
  folder = temporary_keystore / run_id
  assert stat.S_IMODE(folder.stat().st_mode) == 0o700
  pems = sorted(folder.glob("hospital_*.pem"))
  assert len(pems) == H and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in pems)
  assert (folder / keystore.PUBLIC_KEYS_FILE).read_text().split() == list(
      audit.public_keys(run_dir))
  assert not any(b"PRIVATE" in p.read_bytes() for p in run_dir.rglob("*") if p.is_file())
  derived = identity.hospital_identity(SEED, 0).public_key.hex()
  assert derived not in audit.public_keys(run_dir)
  assert "derivable" not in audit.verify_run(run_dir).summary()


def test_resume_loads_the_keystore_and_a_missing_one_is_a_clear_error(tmp_path):
  root = tmp_path / "keys"
  run = run_ledger.open_run_ledger(tmp_path / "run", SEED, H, keystore=root)
  again = run_ledger.open_run_ledger(tmp_path / "run", SEED, H, keystore=root)
  assert again.ids == run.ids and again.hospitals[0].signing_key is not None
  run_id = run.ledger.state.run_id
  with pytest.raises(keystore.KeystoreError, match=f"{run_id}.*not readable.*{tmp_path / 'elsewhere'}"):
    run_ledger.open_run_ledger(tmp_path / "run", SEED, H, keystore=tmp_path / "elsewhere")
  with pytest.raises(ValueError, match="registers 4 hospitals, not 5"):
    run_ledger.open_run_ledger(tmp_path / "run", SEED, H + 1, keystore=root)
  # A swapped key file is named.
  other = run_ledger.open_run_ledger(tmp_path / "other", SEED, H, keystore=root)
  pem = root / run_id / "hospital_1.pem"
  os.replace(root / other.ledger.state.run_id / "hospital_1.pem", pem)
  with pytest.raises(keystore.KeystoreError, match="hospital_1.pem is not the key"):
    run_ledger.open_run_ledger(tmp_path / "run", SEED, H, keystore=root)


def test_keys_from_pem_files_and_derived_keys_on_request(tmp_path):
  pem_folder = tmp_path / "pems"
  pem_folder.mkdir()
  mine = [identity.generate_identity() for _ in range(H)]
  for h, hospital in enumerate(mine):
    keystore.key_file(pem_folder, h).write_bytes(identity.identity_to_pem(hospital))
  run = run_ledger.open_run_ledger(tmp_path / "pem", SEED, H, keys="pem", keystore=pem_folder)
  assert run.ids == tuple(h.node_id for h in mine)
  assert run_ledger.open_run_ledger(tmp_path / "pem", SEED, H, keys="pem",
                                    keystore=pem_folder).ids == run.ids
  with pytest.raises(keystore.KeystoreError, match="needs ledger.keystore"):
    run_ledger.open_run_ledger(tmp_path / "pem2", SEED, H, keys="pem")
  derived = make_run(tmp_path / "derived", keys="derived")
  first = audit.verify_run(derived.run_dir).summary().splitlines()[0]
  assert first.startswith("WARNING") and "derivable from its seed" in first
  assert "prove nothing" in first


def test_random_claim_with_seed_derived_keys_is_still_flagged(tmp_path, monkeypatch):
  derived = iter([identity.hospital_identity(SEED, h) for h in range(H)])
  monkeypatch.setattr(identity, "generate_identity", lambda: next(derived))
  run = make_run(tmp_path / "run")
  assert run.ledger.state.key_mode == "random"
  first = audit.verify_run(run.run_dir).summary().splitlines()[0]
  assert "derivable" in first and "seed in config.json" in first


def forge_ledger(run_dir, keys, difficulty=8, sigma=5.0, keystore_root=None):
  """Rewrite the run's whole ledger: other sigma (and a consistent epsilon), re-signed."""
  shutil.rmtree(run_dir / "ledger")
  config_sha = run_ledger.text_sha256((run_dir / "config.json").read_text())
  run = run_ledger.open_run_ledger(run_dir, SEED, H, difficulty=difficulty, keys=keys,
                                   keystore=keystore_root, config_sha256=config_sha)
  lines = (run_dir / "metrics.jsonl").read_text().splitlines()
  for r in range(ROUNDS):
    synthetic = simulate.synthetic_round(run, r, PER_ROUND)
    epsilon = audit.accountant_epsilon(H, [(PER_ROUND, sigma)] * (r + 1), 1e-5)
    step_dir = run_dir / "checkpoints" / str(ROUNDS) if r == ROUNDS - 1 else None
    run = simulate.record_synthetic_round(run, r, synthetic, epsilon, step_dir, sigma=sigma,
                                          metrics_sha256=run_ledger.text_sha256(lines[r]))
  return close(run)


def test_rewrite_claiming_another_sigma_resigned_with_derived_keys(real, copy):
  forged = forge_ledger(copy, keys="derived")
  assert forged.ledger.blocks[-2].transactions[-1].body["sigma"] == 5.0
  bare = audit.verify_run(copy)
  assert bare.ok and bare.summary().startswith("WARNING")  # consistent, but says it proves nothing
  failed(verify(copy, real, head=None), "hospital 0's public key", "not among the 4 trusted keys")
  failed(verify(copy, real, trusted_keys=None), "pinned head", "not in the ledger")


def test_rewrite_with_fresh_random_keys_at_difficulty_zero(real, copy, tmp_path):
  forge_ledger(copy, keys="random", difficulty=0, keystore_root=tmp_path / "forger")
  failed(audit.verify_run(copy), "difficulty 0 is below the verifier's minimum 8")
  lax = audit.verify_run(copy, min_difficulty=0)
  assert lax.ok and "no trusted keys" in lax.summary()  # nothing else could tell
  failed(verify(copy, real, min_difficulty=0, head=None), "not among the 4 trusted keys")
  keys_file = real[2]
  assert cli.main(["verify", str(copy), "--min_difficulty", "0", "--trusted_keys",
                   str(keys_file)]) == 1


def test_the_pinned_head_detects_truncation(real, copy):
  records = sorted((copy / "ledger").glob("*.json"))
  records[-1].unlink()  # the closing block ...
  records[-2].unlink()  # ... and the last round's block
  shutil.rmtree(copy / "checkpoints" / str(ROUNDS))
  report = audit.verify_run(copy)
  assert report.ok and not report.closed
  text = report.summary()
  assert "not closed (still running or truncated)" in text
  assert "metrics.jsonl has 1 line(s) after the last recorded round" in text
  failed(verify(copy, real), "pinned head", "not in the ledger", f"ends at block {ROUNDS - 1}")
  earlier = audit.load_chain(copy)[1].blocks[1].hash
  partial = audit.verify_run(copy, head=earlier)
  assert partial.ok and "not pinned" in partial.summary()


@pytest.mark.parametrize("name", ["config.json", "metrics.jsonl", "summary.md", "summary.json",
                                  "curves.png"])
def test_one_byte_changed_in_a_covered_file_fails_naming_it(real, copy, name):
  path = copy / name
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0x01
  path.write_bytes(bytes(data))
  failed(verify(copy, real), name, "changed")


def test_a_metrics_line_changed_is_named_by_its_line(real, copy):
  lines = (copy / "metrics.jsonl").read_text().splitlines()
  lines[1] = lines[1].replace('"accuracy": 0.6', '"accuracy": 0.9')
  (copy / "metrics.jsonl").write_text("\n".join(lines) + "\n")
  failed(verify(copy, real), "metrics.jsonl: line 2 changed", "round 1")


def test_deleted_covered_file_and_final_checkpoint_fail(real, copy):
  (copy / "summary.md").unlink()
  failed(verify(copy, real), "summary.md is missing")
  shutil.copy(real[0] / "summary.md", copy / "summary.md")
  victim = copy / "checkpoints" / str(ROUNDS) / "state" / "data.bin"
  victim.write_bytes(victim.read_bytes()[:-1])
  failed(verify(copy, real), f"checkpoints/{ROUNDS}", "state/data.bin changed")


def test_a_transplanted_ledger_fails_on_the_other_runs_config(real, tmp_path):
  other = make_run(tmp_path / "other", run_name="other")
  for part in ("ledger", "checkpoints"):
    shutil.rmtree(other.run_dir / part)
    shutil.copytree(real[0] / part, other.run_dir / part)
  failed(audit.verify_run(other.run_dir), "config.json changed", "another run's ledger")
  assert audit.load_chain(other.run_dir)[1].state.run_id != other.ledger.state.run_id


def test_epsilon_is_recomputed_for_every_round(tmp_path):
  assert audit.verify_run(make_run(tmp_path / "honest", closed=False).run_dir).ok
  # A run that records epsilon as if every round had used the final sigma (the resume bug).
  config_sha = write_config(tmp_path / "mixed")
  run = run_ledger.open_run_ledger(tmp_path / "mixed", SEED, H, config_sha256=config_sha)
  run = record_rounds(run, rounds=2, sigma=1.0, checkpoint_last=False, metrics=False)
  synthetic = simulate.synthetic_round(run, 2, PER_ROUND)
  honest = audit.accountant_epsilon(H, [(PER_ROUND, 1.0)] * 2 + [(PER_ROUND, 1.1)], 1e-5)
  at_new_sigma = audit.accountant_epsilon(H, [(PER_ROUND, 1.1)] * 3, 1e-5)
  assert at_new_sigma < honest
  bad = simulate.record_synthetic_round(run, 2, synthetic, at_new_sigma, sigma=1.1)
  failed(audit.verify_run(bad.run_dir), "block 3 (round 2)", f"epsilon {at_new_sigma:.6g} recorded",
         f"accountant gives {honest:.6g}", "sigma 1, 1.1")
  run = run_ledger.rollback_to_round(bad, 1, "test: redo round 2 honestly")
  assert audit.verify_run(
      simulate.record_synthetic_round(run, 2, synthetic, honest, sigma=1.1).run_dir).ok


def test_a_wrong_epsilon_in_any_round_fails(tmp_path):
  run = run_ledger.open_run_ledger(tmp_path / "run", SEED, H, keys="derived")
  run = record_rounds(run, rounds=2, epsilon_of=lambda history: 0.5 * len(history),
                      checkpoint_last=False, metrics=False)
  failed(audit.verify_run(run.run_dir), "block 1 (round 0)", "epsilon 0.5 recorded")


def sign_global_model(run, transactions, **body_changes):
  body = {**transactions[-1].body, **body_changes}
  leader = run.hospitals[run.ids.index(transactions[-1].author)]
  return transactions[:-1] + [tx_lib.signed(leader, "global_model", body)]


def test_checkpoint_paths_outside_the_run_are_refused(tmp_path):
  run = run_ledger.open_run_ledger(tmp_path / "run", SEED, H, keys="derived")
  outside = tmp_path / "outside" / "1"
  outside.mkdir(parents=True)
  (outside / "f").write_bytes(b"x")
  synthetic = simulate.synthetic_round(run, 0, PER_ROUND)
  for path in (outside, tmp_path / "run" / "checkpoints" / ".." / ".." / "outside" / "1",
               tmp_path / "run" / "elsewhere" / "1"):
    with pytest.raises(UnsafePath, match="outside the run folder|not checkpoints/<step>"):
      simulate.record_synthetic_round(run, 0, synthetic, checkpoint_dir=path)
  # A writer with the keys records one anyway: replay refuses it, naming the block.
  for bad_path in ("../outside/1", str(outside), "checkpoints/../../outside/1"):
    transactions = run_ledger.round_transactions(
        run, 0, run_ledger.round_roles(run, 0),
        *simulate.round_records(synthetic, simulate.round_epsilon(run, synthetic)))
    transactions = sign_global_model(run, transactions, checkpoint={
        "path": bad_path, "sha256": "00" * 32, "files": {}})
    block = block_lib.seal(len(run.ledger.blocks), run.ledger.head_hash, 0,
                           transactions[0].author, transactions, run.ledger.state.difficulty)
    record = store.write_record(store.ledger_dir(run.run_dir), run.next_seq,
                                run.last_record_sha256, block)
    failed(audit.verify_run(run.run_dir), "block 1 (round 0)", "not checkpoints/<step>",
           record.path.name)
    record.path.unlink()


@pytest.fixture
def checkpointed(tmp_path):
  run = run_ledger.open_run_ledger(tmp_path / "run", SEED, H, keys="derived")
  run = record_rounds(run, rounds=2, metrics=False)
  return run


def test_symlinks_in_or_as_a_checkpoint_are_refused(checkpointed, tmp_path):
  run, step_dir = checkpointed, checkpointed.run_dir / "checkpoints" / "2"
  secret = tmp_path / "secret.txt"
  secret.write_text("the auditor's private file")
  assert audit.verify_run(run.run_dir).ok
  audit.verify_checkpoint(run.run_dir, 2)
  (step_dir / "state" / "leak").symlink_to(secret)
  failed(audit.verify_run(run.run_dir), "checkpoints/2", "symlink")
  with pytest.raises(UnsafePath, match="symlink"):
    run_ledger.plan_resume(run, run.run_dir / "checkpoints")
  with pytest.raises(audit.CheckpointRefused, match="symlink"):
    audit.verify_checkpoint(run.run_dir, 2)
  (step_dir / "state" / "leak").unlink()
  (run.run_dir / "checkpoints" / "3").symlink_to(step_dir, target_is_directory=True)
  with pytest.raises(UnsafePath, match="checkpoints/3 is a symlink"):
    run_ledger.plan_resume(run, run.run_dir / "checkpoints")


def test_verify_checkpoint_refuses_what_the_ledger_does_not_vouch_for(checkpointed):
  run = checkpointed
  with pytest.raises(audit.CheckpointRefused, match="no block of the run's ledger records"):
    audit.verify_checkpoint(run.run_dir, 7)
  victim = run.run_dir / "checkpoints" / "2" / "_METADATA"
  victim.write_text(victim.read_text() + " ")
  with pytest.raises(audit.CheckpointRefused, match="does not match the ledger.*_METADATA changed"):
    audit.verify_checkpoint(run.run_dir, 2)
  shutil.rmtree(run.run_dir / "ledger")
  with pytest.raises(audit.CheckpointRefused, match="ledger does not verify"):
    audit.verify_checkpoint(run.run_dir, 2)


def test_truncate_records_must_be_signed_by_the_next_leader(tmp_path):
  run = run_ledger.open_run_ledger(tmp_path / "run", SEED, H, keys="derived")
  run = record_rounds(run, rounds=2, checkpoint_last=False, metrics=False)
  directory = store.ledger_dir(run.run_dir)
  unsigned = store.write_record(directory, run.next_seq, run.last_record_sha256,
                                store.Truncation(2, "quietly drop round 1"))
  failed(audit.verify_run(run.run_dir), "unsigned truncate record", unsigned.path.name)
  unsigned.path.unlink()
  signer_id = validate.truncation_signer(run.ledger, 2)
  impostor = next(h for h in run.hospitals if h.node_id != signer_id)
  message = validate.truncation_message(run.ledger, 2, "drop round 1")
  forged = store.write_record(directory, run.next_seq, run.last_record_sha256, store.Truncation(
      2, "drop round 1", impostor.node_id, identity.sign(impostor, message)))
  failed(audit.verify_run(run.run_dir), "not by the leader of the next round", forged.path.name)
  forged.path.unlink()
  rolled = run_ledger.rollback_to_round(run, 0, "redo round 1")
  assert rolled.ledger.state.last_round == 0 and audit.verify_run(run.run_dir).ok


def test_closing_is_idempotent_reclosed_when_rewritten_and_reopened_to_continue(tmp_path):
  run = make_run(tmp_path / "run")
  assert close(run) is run
  write_outputs(run.run_dir, text="rewritten by a rerun")
  reclosed = close(run)
  assert reclosed.next_seq == run.next_seq + 2  # a signed truncation, then the new closing block
  assert audit.verify_run(run.run_dir).ok
  with pytest.raises(validate.LedgerRefusal, match="after the run's closing block"):
    validate.append(reclosed.ledger, reclosed.ledger.blocks[-1])
  continued = simulate.record_synthetic_round(
      reclosed, ROUNDS, simulate.synthetic_round(reclosed, ROUNDS, PER_ROUND))
  assert not continued.ledger.state.closed and continued.ledger.state.last_round == ROUNDS
  report = audit.verify_run(run.run_dir)
  assert report.ok and "not closed" in report.summary()
