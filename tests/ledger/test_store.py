"""Persistence and audit: atomic append-only records, orbax checkpoint hashes, and verify
failing, naming the file, for a flipped byte anywhere in a ledger record or checkpoint."""
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from ccfl_jax import inspect_checkpoint
from ccfl_jax.ledger import __main__ as cli
from ccfl_jax.ledger import audit
from ccfl_jax.ledger import run_ledger
from ccfl_jax.ledger import simulate
from ccfl_jax.ledger import store
from ccfl_jax.ledger.digests import checkpoint_sha256, update_digest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def checkpoint_manager(run_dir):
  return ocp.CheckpointManager(pathlib.Path(run_dir) / "checkpoints",
                               options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))


def save(manager, step, tree):
  manager.save(step, args=ocp.args.StandardSave(tree))
  manager.wait_until_finished()
  return manager.directory / str(step)


@pytest.fixture(scope="module")
def audited_run(tmp_path_factory):
  """3 hospitals; rounds 0-2 checkpointed by orbax (max_to_keep=2, so round 0's rotates
  away); round 2 first recorded without a checkpoint, rolled back, then recorded again."""
  run_dir = tmp_path_factory.mktemp("audited") / "run"
  run = run_ledger.open_run_ledger(run_dir, seed=1, num_hospitals=3)
  run = run_ledger.register_data(run, [run_ledger.DataRegistration(
      h, "ct_slices", 10 + h, 80 + h, run_ledger.manifest_sha256({"hospital": h}))
      for h in range(3)])
  manager = checkpoint_manager(run_dir)
  for r in range(2):
    synthetic = simulate.synthetic_round(run, r, 3)
    step_dir = save(manager, r, synthetic.updates[0])
    run = simulate.record_synthetic_round(run, r, synthetic, checkpoint_dir=step_dir)
  synthetic = simulate.synthetic_round(run, 2, 3)
  run = simulate.record_synthetic_round(run, 2, synthetic)
  run = run_ledger.rollback_to_round(run, 1, "test: redo round 2")
  step_dir = save(manager, 2, synthetic.updates[0])
  run = simulate.record_synthetic_round(run, 2, synthetic, checkpoint_dir=step_dir)
  manager.close()
  return run_dir


def flip(path: pathlib.Path, position: int, mask: int = 0x01) -> bytes:
  original = path.read_bytes()
  changed = bytearray(original)
  changed[position] ^= mask
  path.write_bytes(bytes(changed))
  return original


def sampled_positions(size: int, rng, num_middle: int) -> list[int]:
  middle = rng.integers(1, max(2, size - 1), num_middle).tolist() if size > 2 else []
  return sorted(set([0, size - 1] + middle))


def test_an_honest_run_verifies_with_rotation_and_rollback_counted(audited_run):
  report = audit.verify_run(audited_run)
  assert report.ok, report.failure
  assert (report.rounds, report.checkpoints_rehashed, report.checkpoints_rotated,
          report.rolled_back_blocks, report.warnings) == (3, 2, 1, 1, ())


def ledger_files(run_dir):
  return sorted((run_dir / "ledger").iterdir())


def checkpoint_files(run_dir):
  return sorted(p for p in (run_dir / "checkpoints").rglob("*") if p.is_file())


def test_flipping_sampled_bytes_of_every_file_fails_verify_naming_it(audited_run):
  rng = np.random.default_rng(0)
  files = ledger_files(audited_run) + checkpoint_files(audited_run)
  assert len(files) > 15
  for path in files:
    relative = path.relative_to(audited_run)
    # A checkpoint is named by its folder and its file inside the step folder.
    in_ledger = relative.parts[0] == "ledger"
    expected = str(relative) if in_ledger else pathlib.Path(*relative.parts[2:]).as_posix()
    # Records are parsed, so both a low and a high bit; checkpoint bytes are only hashed.
    masks = (0x01, 0x80) if in_ledger else (0x01,)
    for position in sampled_positions(path.stat().st_size, rng, 4 if in_ledger else 2):
      for mask in masks:
        original = flip(path, position, mask)
        try:
          report = audit.verify_run(audited_run)
        finally:
          path.write_bytes(original)
        assert not report.ok, f"flip of {relative} byte {position} ^ {mask:#x} went unnoticed"
        assert expected in report.failure, report.failure
  assert audit.verify_run(audited_run).ok


def test_flipping_every_byte_of_one_record_fails_verify(audited_run):
  records = ledger_files(audited_run)
  truncation = next(p for p in records if b'"kind":"truncate"' in p.read_bytes())
  for path in (truncation,):
    for position in range(path.stat().st_size):
      original = flip(path, position)
      try:
        report = audit.verify_run(audited_run)
      finally:
        path.write_bytes(original)
      assert not report.ok and path.name in report.failure, (path.name, position)


def test_deleted_or_swapped_record_files_fail_verify(audited_run, tmp_path):
  copy = tmp_path / "run"
  shutil.copytree(audited_run, copy)
  records = ledger_files(copy)
  records[2].unlink()
  report = audit.verify_run(copy)
  assert not report.ok and records[2].name in report.failure
  shutil.rmtree(copy)
  shutil.copytree(audited_run, copy)
  a, b = ledger_files(copy)[2:4]
  a_bytes = a.read_bytes()
  a.write_bytes(b.read_bytes())
  b.write_bytes(a_bytes)
  assert not audit.verify_run(copy).ok


def test_a_rotated_checkpoint_is_counted_not_failed(audited_run, tmp_path):
  copy = tmp_path / "run"
  shutil.copytree(audited_run, copy)
  shutil.rmtree(copy / "checkpoints" / "1")
  report = audit.verify_run(copy)
  assert report.ok and (report.checkpoints_rehashed, report.checkpoints_rotated) == (1, 2)


def test_a_checkpoint_without_a_block_is_a_warning(audited_run, tmp_path):
  copy = tmp_path / "run"
  shutil.copytree(audited_run, copy)
  shutil.copytree(copy / "checkpoints" / "2", copy / "checkpoints" / "3")
  report = audit.verify_run(copy)
  assert report.ok and "checkpoints/3" in report.warnings[0]


def test_a_half_written_record_is_ignored_and_records_are_never_replaced(tmp_path):
  run = run_ledger.open_run_ledger(tmp_path / "run", seed=0, num_hospitals=2)
  directory = store.ledger_dir(run.run_dir)
  (directory / f".{store.record_name(1)}.tmp-123").write_bytes(b'{"seq":1,"ki')  # crash mid-write
  assert len(store.read_records(directory)) == 1
  assert audit.verify_run(run.run_dir).ok
  with pytest.raises(FileExistsError):
    store.write_record(directory, 0, store.GENESIS_RECORD_HASH, run.ledger.blocks[0])


def test_checkpoint_hash_is_stable_under_later_saves_and_changes_with_content(tmp_path):
  manager = checkpoint_manager(tmp_path)
  tree = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, np.float32)}
  first = checkpoint_sha256(save(manager, 0, tree))
  other = checkpoint_sha256(save(manager, 1, {**tree, "b": np.ones(3, np.float32)}))
  assert first != other
  assert checkpoint_sha256(tmp_path / "checkpoints" / "0") == first
  manager.close()


def test_update_digest_is_canonical():
  rng = np.random.default_rng(0)
  tree = simulate.small_cnn_tree(rng)
  reordered = {k: dict(reversed(list(v.items()))) for k, v in reversed(list(tree.items()))}
  assert update_digest(tree) == update_digest(reordered)
  nudged = {**tree, "head": {**tree["head"], "bias": tree["head"]["bias"] + 1e-7}}
  assert update_digest(nudged) != update_digest(tree)
  assert update_digest({"a": np.zeros(2, np.float32)}) != update_digest({"a": np.zeros(2, np.float64)})
  assert update_digest({"a": np.zeros((2, 1))}) != update_digest({"a": np.zeros((1, 2))})


def test_cli_verify_and_show(audited_run, capsys, tmp_path):
  assert cli.main(["verify", str(audited_run)]) == 0
  assert capsys.readouterr().out.startswith("OK: 5 blocks (3 rounds)")
  assert cli.main(["show", str(audited_run)]) == 0
  shown = capsys.readouterr().out
  assert "register_data x3" in shown and "checkpoint checkpoints/2" in shown
  round_column = [line.split()[1] for line in shown.splitlines()[2:]]
  assert round_column == ["setup", "setup", "1", "2", "3"]  # rounds from 1, as metrics count
  assert cli.main(["show", str(audited_run), "--head=x"]) == 0  # show ignores verify's anchors
  capsys.readouterr()
  assert cli.main(["shw", str(audited_run)]) == 2
  assert "expected `python -m ccfl_jax.ledger {verify|show|head|keys}" in capsys.readouterr().err
  copy = tmp_path / "run"
  shutil.copytree(audited_run, copy)
  flip(ledger_files(copy)[1], 40)
  done = subprocess.run([sys.executable, "-m", "ccfl_jax.ledger", "verify", str(copy)],
                        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 1 and "FAILED" in done.stdout and "00000001.json" in done.stdout


def test_inspect_checkpoint_shows_tree_and_ledger_entry(audited_run, capsys):
  assert inspect_checkpoint.main([str(audited_run), "--round", "2"]) == 0
  shown = capsys.readouterr().out
  assert "['conv3']['kernel']" in shown and "(3, 3, 64, 64)" in shown and "60,354" in shown
  assert "matches" in shown and "round index 2" in shown and "accepted (" in shown
  assert inspect_checkpoint.main([str(audited_run), "--round", "0"]) == 1  # rotated away
