"""tools/table3.py end to end on a tiny labelled image folder: two tiny models, one seed."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO_ROOT

TOOL = REPO_ROOT / "tools" / "table3.py"
TINY = ("--models=alexnet,vgg16", "--seeds=0", "--image_size=32", "--width=0.0625",
        "--epochs=1", "--batch_size=4")


@pytest.fixture
def image_folder(tmp_path):
  """8 train and 4 val images, both classes in each split, one patient per image."""
  rng = np.random.default_rng(0)
  folder = tmp_path / "ucsd_like"
  folder.mkdir()
  rows = ["path,label,patient_id,official_split"]
  for i in range(12):
    label, split = i % 2, "train" if i < 8 else "val"
    pixels = rng.integers(0, 256, (28, 36)).astype(np.uint8) // (1 + label)
    Image.fromarray(pixels, "L").save(folder / f"{i}.png")
    rows.append(f"{i}.png,{label},p{i},{split}")
  (folder / "labels.csv").write_text("\n".join(rows) + "\n")
  return folder


def table3(*args):
  return subprocess.run([sys.executable, str(TOOL), *args], cwd=REPO_ROOT, capture_output=True,
                        text=True, timeout=300)


def test_table3_writes_rows_with_real_numbers_and_rebuilds_the_report(image_folder, tmp_path):
  out = tmp_path / "table3"
  done = table3(*TINY, f"--data={image_folder}", f"--out={out}")
  assert done.returncode == 0, done.stderr[-3000:]
  table = json.loads(out.with_suffix(".json").read_text())
  assert table["setup"] == dict(mode="cpu", width=0.0625, image_size=32, epochs=1, batch_size=4,
                                learning_rate=1e-4, warmup_epochs=1.0, weight_decay=1e-4)
  assert table["data"] == dict(path=str(image_folder), train=8, train_covid=4, val=4,
                               val_covid=2)
  assert [(r["model"], r["seed"]) for r in table["records"]] == [("alexnet", 0), ("vgg16", 0)]
  for record in table["records"]:
    for name in ("sensitivity", "specificity", "accuracy", "auc", "train_seconds"):
      assert math.isfinite(record[name]) and record[name] >= 0, (record["model"], name)
    assert sum(map(sum, record["confusion_matrix"])) == 4
  for name, model in table["models"].items():
    assert 0 < model["parameters"] < model["full_size"]["parameters"], name
    assert 0 < model["flops"] < model["full_size"]["flops"], name
  assert table["models"]["alexnet"]["full_size"]["parameters"] > 2e6  # width 1, MLP 1024 head

  text = out.with_suffix(".md").read_text()
  header = next(line for line in text.splitlines() if line.startswith("| model | head"))
  for column in ("precision | paper", "sensitivity | paper", "specificity | paper", "accuracy",
                 "auc", "params", "FLOPs/image", "train s/seed"):
    assert column in header, column
  rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| `")}
  assert set(rows) == {"| `alexnet`", "| `vgg16`"}
  assert "| 0.831 |" in rows["| `alexnet`"] and "| 0.8294 |" in rows["| `vgg16`"]  # paper
  assert "GroupNorm" in text and "## Not finished" in text and "`iv3_capsule`" in text

  out.with_suffix(".md").unlink()
  rebuilt = table3("--report_only", f"--out={out}")
  assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
  assert out.with_suffix(".md").read_text() == text

  other = table3(*TINY, "--epochs=2", f"--data={image_folder}", f"--out={out}")
  assert other.returncode != 0 and "epochs: 1 there, 2 here" in other.stderr
