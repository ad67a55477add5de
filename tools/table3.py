r"""The paper's Table III on real CT: every CNN baseline, IV3* (`iv3_capsule`), its MLP twin
(`iv3_mlp`) and the ImageNet-pretrained EfficientNet-Lite0 beside them, each trained centrally
on the UCSD COVID-CT train split and scored on its official val split, several seeds each
-> results/table3.md and results/table3.json.

  python tools/table3.py [--models=vgg16,resnet50,...] [--seeds=0,1] [--full] \
      [--data=../shared/data/ucsd_covid_ct] [--out=results/table3] [--report_only]

Every model gets the same budget and preprocessing: `tools/train_centralized.py`'s recipe
(its `TrainSettings`, `train` and `evaluate`: grey images resized with aspect kept and
padded, random flips and shifts, AdamW with warm-up and cosine decay, threshold 0.5, no
model selection on val). The default (CPU) setup is small, `CPU` below: 64 px, width 0.25
(channels of every layer x 0.25, depth unchanged), 5 epochs, 2 seeds, about 45 minutes for
the whole table on a shared 2-core CPU; `--full` is full width at 224 px for an accelerator
(`FULL`). `--image_size`, `--width`, `--epochs` and `--batch_size` override
either.

Per model: parameters as trained; forward FLOPs per image from XLA's cost analysis of the
compiled evaluation forward (the batch's count / batch size; XLA counts a multiply-add as 2);
parameters and FLOPs at full size (width 1, 224 px, the same head; from `jax.eval_shape`
and the lowered, unoptimized HLO: nothing is allocated or compiled); the seconds spent
compiling (init, train step, evaluation forward: once per model, shared by its seeds) and
per seed training. Per seed: precision, sensitivity, specificity, accuracy, AUC.

A (model, seed) already in the .json is not rerun, so an interrupted table resumes; the
.json and .md are rewritten after every model, so a partial table shows what finished and
lists what did not. A .json made with another setup is refused (choose another --out).
"""
import dataclasses
import json
import math
import os
import pathlib
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from ccfl_jax import environment, files, inference, nulls
from ccfl_jax.models import get_model, parameter_count
# tools/ is on sys.path when run as a script
from train_centralized import (TrainSettings, evaluate, load_splits, make_optimizer,
                               make_train_step, train)
from ucsd_pretrained import mean_sd

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = "../shared/data/ucsd_covid_ct"
FULL_IMAGE_SIZE = 224
MLP_HEAD = (1024,)  # the paper's "MLP" learnable node: Dense(1024, ReLU) -> Dense(2)
METRICS = ("precision", "sensitivity", "specificity", "accuracy", "auc")
PAPER_METRICS = ("precision", "sensitivity", "specificity")  # all Table III reports
# Init runs once per seed, so it is compiled for compile speed (XLA:CPU, measured: mobilenet
# at width 0.25 6 s instead of 16 s, densenet121 28 s instead of 37 s); eager init is no
# cheaper (every initializer op compiled on its own: 23-127 s for the deep models).
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@dataclasses.dataclass(frozen=True)
class Setup:
  """What every model of one table is trained with: the width multiplier and the recipe."""
  mode: str  # 'cpu' | 'full'
  width: float
  train: TrainSettings


CPU = Setup("cpu", 0.25, TrainSettings(image_size=64, epochs=5))
FULL = Setup("full", 1.0, TrainSettings(image_size=FULL_IMAGE_SIZE, epochs=30))


@dataclasses.dataclass(frozen=True)
class Entry:
  """One row: a registered model, the constructor field its width multiplier goes to (None:
  fixed, a pretrained backbone), its head's kwargs, and the Table III row it stands beside."""
  model: str
  paper_row: str | None
  width_field: str | None = "width"
  head: tuple[tuple[str, object], ...] = (("hidden", MLP_HEAD),)
  head_name: str = "MLP 1024"
  pretrained: bool = False

  def kwargs(self, width: float) -> dict:
    return {**({self.width_field: width} if self.width_field else {}), **dict(self.head)}


ENTRIES = (
    Entry("vgg16", "VGG16"), Entry("vgg19", "VGG19"), Entry("alexnet", "AlexNet"),
    Entry("xception", "Xception V1"), Entry("resnet50", "ResNet50"),
    Entry("resnet50v2", "ResNet50 V2"), Entry("resnet152v2", "ResNet152 V2"),
    Entry("inceptionv3", "Inception V3", head=(), head_name="Dense (Keras classifier)"),
    Entry("iv3_mlp", "Inception V3", width_field="width_multiplier"),
    Entry("mobilenet", "MobileNet"), Entry("mobilenetv2", "MobileNet V2"),
    Entry("densenet121", "DenseNet121"), Entry("densenet169", "DenseNet169"),
    Entry("densenet201", "DenseNet201"),
    Entry("iv3_capsule", "IV3* (Ours)", width_field="width_multiplier", head=(),
          head_name="capsules (paper variant)"),
    Entry("efficientnet_lite", None, width_field=None, head=(("mlp_hidden", MLP_HEAD),),
          pretrained=True),
)
ENTRY = {e.model: e for e in ENTRIES}

# Kumar et al., Table III: (learnable node, pre-trained on, precision, sensitivity, specificity).
PAPER = {
    "VGG16": ("MLP", "Imagenet", 0.8269, 0.8294, 0.1561),
    "AlexNet": ("MLP", "Scratch", 0.833, 0.831, 0.191),
    "Xception V1": ("MLP", "Imagenet", 0.830, 0.894, 0.110),
    "VGG19": ("MLP", "Imagenet", 0.827, 0.8616, 0.128),
    "ResNet50": ("MLP", "Imagenet", 0.833, 0.771, 0.249),
    "ResNet50 V2": ("MLP", "Imagenet", 0.830, 0.837, 0.166),
    "ResNet152 V2": ("MLP", "Imagenet", 0.828, 0.861, 0.134),
    "Inception V3": ("MLP", "Imagenet", 0.828, 0.833, 0.159),
    "MobileNet": ("MLP", "Imagenet", 0.830, 0.912, 0.089),
    "MobileNet V2": ("MLP", "Imagenet", 0.828, 0.873, 0.118),
    "DenseNet121": ("MLP", "Imagenet", 0.832, 0.903, 0.113),
    "DenseNet169": ("MLP", "Imagenet", 0.831, 0.886, 0.126),
    "DenseNet201": ("MLP", "Imagenet", 0.829, 0.844, 0.152),
    "IV3* (Ours)": ("Capsule Network", "Scratch", 0.830, 0.967, 0.004),
}


def define_flags():
  flags.DEFINE_list("models", [e.model for e in ENTRIES],
                    f"Models to train, in order: {', '.join(ENTRY)}.")
  flags.DEFINE_list("seeds", ["0", "1"], "Seeds (init, batch order, augmentation) per model.")
  flags.DEFINE_bool("full", False, "Full width at 224 px (an accelerator's setup) instead of "
                    "the CPU's small one.")
  flags.DEFINE_integer("image_size", None, "Override the setup's image size.")
  flags.DEFINE_float("width", None, "Override the setup's width multiplier.")
  flags.DEFINE_integer("epochs", None, "Override the setup's epochs.")
  flags.DEFINE_integer("batch_size", None, "Override the setup's batch size.")
  flags.DEFINE_string("data", DATA, "Image folder with labels.csv and an official train/val split.")
  flags.DEFINE_string("out", "results/table3", "Output path without suffix (.json, .md).")
  flags.DEFINE_bool("report_only", False, "Train nothing: rebuild the .md from the .json.")


def chosen_setup(full: bool, width=None, **train_overrides) -> Setup:
  """The CPU or full setup with the overrides that are not None applied."""
  setup = FULL if full else CPU
  train_settings = dataclasses.replace(
      setup.train, **{k: v for k, v in train_overrides.items() if v is not None})
  return dataclasses.replace(setup, train=train_settings,
                             **({} if width is None else dict(width=width)))


def setup_record(setup: Setup) -> dict:
  return dict(mode=setup.mode, width=setup.width, **dataclasses.asdict(setup.train))


def machine() -> dict:
  """Where the table was made (environment.describe plus the CPU count)."""
  return dict(environment.describe(jax.devices()), cpu_count=os.cpu_count(),
              processor=platform.processor() or platform.machine())


def full_size_cost(entry: Entry) -> dict:
  """Parameters and forward FLOPs of one 224 px image at width 1, nothing allocated or
  compiled: `jax.eval_shape` and the cost analysis of the lowered (unoptimized) HLO."""
  spec = get_model(entry.model, **entry.kwargs(1.0))
  images = jax.ShapeDtypeStruct((1, FULL_IMAGE_SIZE, FULL_IMAGE_SIZE, 1), jnp.float32)
  variables = jax.eval_shape(spec.module.init, jax.random.key(0), images)
  cost = jax.jit(spec.module.apply).lower(variables, images).cost_analysis()
  return dict(parameters=parameter_count(variables), flops=float(cost["flops"]))


def compiled_forward_flops(spec, params, image_size: int, batch: int) -> float:
  """FLOPs per image of the evaluation forward (inference.probability_function) as XLA's cost
  analysis counts the compiled batch; compiling it here also serves `evaluate`'s calls."""
  images = jnp.zeros((batch, image_size, image_size, 1), jnp.float32)
  compiled = inference.probability_function(spec).lower(params, images).compile()
  return float(compiled.cost_analysis()["flops"]) / batch


def run_model(entry: Entry, setup: Setup, seeds, splits, done) -> tuple[dict, list[dict]]:
  """Trains and scores `entry` for each seed not in `done`; (its model record, new records)."""
  train_split, val = splits
  settings = setup.train
  spec = get_model(entry.model, **entry.kwargs(setup.width))
  images = jnp.zeros((settings.batch_size, settings.image_size, settings.image_size, 1))
  labels = jnp.zeros((settings.batch_size,), jnp.int32)
  optimizer = make_optimizer(settings, len(train_split))
  step = make_train_step(spec, optimizer)
  started = time.time()
  init = jax.jit(spec.module.init).lower(jax.random.key(0), images[:1]).compile(
      compiler_options=FAST_COMPILE)
  params = init(jax.random.key(0), images[:1])
  step.lower(params, optimizer.init(params), images, labels).compile()
  flops = compiled_forward_flops(spec, params, settings.image_size, 64)  # evaluate's batch
  model = dict(model=entry.model, kwargs=entry.kwargs(setup.width), parameters=
               parameter_count(params), flops=flops, compile_seconds=time.time() - started,
               full_size=full_size_cost(entry))
  model_started, records = started, []
  for seed in seeds:
    if (entry.model, seed) in done:
      continue
    params = init(jax.random.key(seed), images[:1])
    started = time.time()
    params = train(step, optimizer, params, train_split, settings, seed)
    seconds = time.time() - started
    metrics = evaluate(spec, params, val)
    records.append(dict(model=entry.model, seed=seed, train_seconds=seconds,
                        **{k: metrics[k] for k in METRICS},
                        confusion_matrix=metrics["confusion_matrix"]))
    print(f"{entry.model} seed {seed}: AUC {metrics['auc']:.3f}, accuracy "
          f"{metrics['accuracy']:.3f}, {seconds:.0f} s", flush=True)
  model["wall_seconds"] = time.time() - model_started
  return model, records


def read_table(path: pathlib.Path) -> dict | None:
  return json.loads(path.read_text()) if path.exists() else None


def check_same_setup(table: dict, setup: dict, path: pathlib.Path) -> None:
  """SystemExit naming the fields where `table` was made with another setup."""
  theirs = table["setup"]
  differing = [f"{k}: {theirs.get(k)} there, {v} here" for k, v in setup.items()
               if theirs.get(k) != v]
  if differing:
    sys.exit(f"error: {path} was made with another setup ({'; '.join(differing)}); "
             "pass another --out")


def _g(value: float) -> str:
  """A count in engineering units: 4.1G, 25.6M, 950k."""
  for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(value) >= scale:
      return f"{value / scale:.1f}{unit}"
  return f"{value:.0f}"


def _paper_cell(entry: Entry, index: int) -> str:
  row = PAPER.get(entry.paper_row)
  return "-" if row is None else f"{row[2 + index]:g}"


def metric_cell(values: list) -> str:
  """Mean ± sd of the defined values (None: undefined), saying how many when some are not."""
  defined = [v for v in values if v is not None]
  cell = mean_sd(defined)
  return cell if len(defined) == len(values) else f"{cell} ({len(defined)} of {len(values)})"


def null_auc_sd(positives: int, negatives: int) -> float:
  """The sd of a classifier's AUC when its scores ignore the image (Mann-Whitney U under
  the null, no ties): sqrt((n1 + n0 + 1) / (12 n1 n0))."""
  return math.sqrt((positives + negatives + 1) / (12 * positives * negatives))


def chance_lines(table: dict) -> list[str]:
  """Which models' mean AUC is within 1.96 null sds (over their seeds) of 0.5."""
  d = table["data"]
  sd = null_auc_sd(d["val_covid"], d["val"] - d["val_covid"])
  near, far = [], []
  for entry in ENTRIES:
    aucs = [r["auc"] for r in table["records"]
            if r["model"] == entry.model and r["auc"] is not None]
    if aucs:
      mean = sum(aucs) / len(aucs)
      (near if abs(mean - 0.5) < 1.96 * sd / math.sqrt(len(aucs)) else far).append(
          f"`{entry.model}` {mean:.3f}")
  lines = [f"- Chance: a model whose scores ignore the image has an AUC of 0.5 ± {sd:.3f} (sd) "
           f"on these {d['val']} val images. Mean AUC within 1.96 such sds (over its seeds) of "
           f"0.5, so no evidence of learning at this budget: {', '.join(near) or 'none'}."]
  if far:
    lines.append(f"- Further from 0.5: {', '.join(far)}.")
  return lines


def table_rows(table: dict) -> list[str]:
  """The main table: one row per model that has records, ours beside the paper's numbers."""
  header = ["model", "head", "paper row (its head, pre-trained on)", "n", "params",
            "FLOPs/image", "params full", "FLOPs full"]
  for name in METRICS:
    header += [name, "paper"] if name in PAPER_METRICS else [name]
  header += ["train s/seed", "compile s"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for entry in ENTRIES:
    model = table["models"].get(entry.model)
    records = [r for r in table["records"] if r["model"] == entry.model]
    if model is None or not records:
      continue
    paper = PAPER.get(entry.paper_row)
    paper_text = ("not in the paper" if paper is None
                  else f"{entry.paper_row} ({paper[0]}, {paper[1]})")
    cells = [f"`{entry.model}`", entry.head_name + (", ImageNet-pretrained" if entry.pretrained
                                                    else ", from scratch"),
             paper_text, str(len(records)), _g(model["parameters"]), _g(model["flops"]),
             _g(model["full_size"]["parameters"]), _g(model["full_size"]["flops"])]
    for name in METRICS:
      cells.append(metric_cell([r[name] for r in records]))
      if name in PAPER_METRICS:
        cells.append(_paper_cell(entry, PAPER_METRICS.index(name)))
    cells += [mean_sd([r["train_seconds"] for r in records], 0), f"{model['compile_seconds']:.0f}"]
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def missing_models(table: dict) -> list[str]:
  """Table III models (and the extra rows) without records for every seed asked."""
  seeds = set(table["seeds"])
  return [e.model for e in ENTRIES
          if {r["seed"] for r in table["records"] if r["model"] == e.model} < seeds]


def predicted_counts(confusion_matrix) -> tuple[int, int]:
  """(predicted not COVID, predicted COVID) from [[tn, fp], [fn, tp]]."""
  (tn, fp), (fn, tp) = confusion_matrix
  return tn + fn, fp + tp


def one_class_lines(records: list[dict]) -> list[str]:
  """Which (model, seed) gave every val image one class, as the paper's rows nearly do."""
  one_class = [f"{r['model']} seed {r['seed']} (all {'COVID' if negatives == 0 else 'not COVID'})"
               for r in records
               for negatives, positives in [predicted_counts(r["confusion_matrix"])]
               if 0 in (negatives, positives)]
  if not one_class:
    return ["- Every model and seed predicted both classes on the val split."]
  return [f"- One class for every val image (the AUC can still rank them): "
          f"{', '.join(one_class)}."]


def markdown(table: dict) -> str:
  s, m, d = table["setup"], table["machine"], table["data"]
  covid = d["val_covid"] / d["val"]
  total = sum(model.get("wall_seconds", 0.0) for model in table["models"].values())
  where = (f"{m['backend']} ({m['device_count']} device(s): {m['devices'][0]}), "
           f"{m['cpu_count']} CPU cores, jax {m['packages']['jax']}")
  lines = [
      "# Table III on UCSD COVID-CT: every baseline trained centrally, scored on the val split",
      "",
      f"Made by `python tools/table3.py{' --full' if s['mode'] == 'full' else ''}` "
      f"(`--report_only` rebuilds this file from `{table['json_name']}`). Setup "
      f"`{s['mode']}`: images {s['image_size']} px, width multiplier {s['width']} "
      "(every layer's channels scaled, rounded to multiples of 8, or 16 in the Inception "
      f"models; depth and block structure as published), {s['epochs']} epochs, batch "
      f"{s['batch_size']} ({s['epochs'] * (d['train'] // s['batch_size'])} steps), AdamW "
      f"(peak lr {s['learning_rate']} after {s['warmup_epochs']} warm-up epoch(s), cosine "
      f"decay to 5%, weight decay {s['weight_decay']}), random "
      "horizontal flips and shifts of up to 1/16 of the image; the same for every model "
      f"(`tools/train_centralized.py`'s recipe). Seeds {', '.join(map(str, table['seeds']))} "
      "(init, batch order, augmentation); mean ± sd over the n seeds. Machine: "
      f"{where}{', shared with other jobs' if m['backend'] == 'cpu' else ''}; "
      f"code {m['git_commit']}. Wall time of the models below: {total / 60:.0f} min "
      "(compiling, training, scoring; data loading not included).",
      "",
      f"- Data: the official UCSD COVID-CT split, {table['data']['train']} train images "
      f"({table['data']['train_covid']} COVID) and {table['data']['val']} val images "
      f"({table['data']['val_covid']} COVID), grey, aspect kept, padded to square. Metrics per "
      "image at threshold 0.5 on P(COVID) (normalized capsule lengths for IV3*) after the last "
      "epoch; no model selection on val. Precision of a model that never predicts COVID is "
      "undefined and left out of its mean.",
      "- Normalization is GroupNorm wherever the published models have BatchNorm (BiT's 32 "
      "groups where they divide the channels; batch statistics break federated averaging and "
      "leak under DP). VGG and AlexNet have none. EfficientNet-Lite0's BatchNorm is frozen "
      "(ImageNet statistics folded into a trainable scale and bias), and it keeps its full "
      "width (its pretrained weights fix it): only the image size applies to it.",
      "- Heads: the paper's \"MLP\" learnable node is Dense(1024, ReLU) -> Dense(2) on the "
      "globally average-pooled features; `inceptionv3` keeps Keras' single Dense classifier "
      "(`iv3_mlp` is the same extractor with the MLP head); IV3* is the capsule head of the "
      "paper's code. All from scratch but EfficientNet-Lite0 (ImageNet).",
      "- params: as trained; FLOPs/image: XLA's cost analysis of the compiled evaluation "
      "forward (per image; a multiply-add counts 2; depthwise convolutions on the CPU are "
      "shifted multiply-adds, counted as such); params full / FLOPs full: the same model at "
      f"width 1 and {FULL_IMAGE_SIZE} px with its 2-class head, from jax.eval_shape and the "
      "lowered HLO (nothing compiled); the published 1000-class counts are pinned in "
      "tests/models/test_zoo.py. train s/seed: the epochs' wall time after compiling; "
      "compile s: the init, train step and evaluation forward, once per model.",
      "",
      *table_rows(table),
      "",
      "## Where these numbers differ from the paper's, and why",
      "",
      "- The paper reports precision, sensitivity and specificity only (no accuracy or AUC), "
      "on CC-19 test lists of about 11,450 slices, with ImageNet-pretrained backbones "
      "(BatchNorm) for all but AlexNet and IV3*, at full size and an unstated budget. Here: "
      f"the public UCSD images ({d['val']} val images, {covid:.0%} COVID), from scratch but "
      f"EfficientNet-Lite0, GroupNorm, "
      f"{'small models on a CPU' if s['mode'] == 'cpu' else 'full size'}, one fixed budget.",
      "- The paper's rows pair precision about 0.83 with specificity 0.004-0.25 and "
      "sensitivity 0.77-0.97: a model that calls almost every slice COVID has precision equal "
      "to the test set's COVID fraction, so those rows suggest test lists about 83% COVID and "
      "models close to always answering COVID (IV3*: specificity 0.004, the paper's \"highest "
      "sensitivity\"). Precision here cannot be compared with theirs directly: the val split "
      f"is {covid:.0%} COVID, so the same behaviour would give precision about {covid:.2f}.",
      "- Pre-training: the paper's baselines start from ImageNet; here only EfficientNet-Lite0 "
      "does (the from-scratch zoo has no ImageNet weights: GroupNorm replaces their BatchNorm), "
      "so its row, not in the paper, is the closest to the paper's setting.",
      *([] if s["mode"] != "cpu" else [
          f"- Budget: {s['epochs'] * (d['train'] // s['batch_size'])} optimizer steps from "
          "scratch is what the CPU allows for 16 models x the seeds; at this budget the models "
          "differ more by how fast they start learning than by capacity. `--full` (or more "
          "`--epochs`) on an accelerator is the comparison the paper's table implies."]),
      *chance_lines(table),
      *one_class_lines(table["records"]),
  ]
  missing = missing_models(table)
  if missing:
    lines += ["", "## Not finished", "",
              "No records (or fewer seeds than asked) for: " +
              ", ".join(f"`{m}`" for m in missing) + "."]
  lines += ["", "Per seed:", "", "| model | seed | " + " | ".join(METRICS) +
            " | confusion [[tn, fp], [fn, tp]] | train s |", "|" + "---|" * (len(METRICS) + 4)]
  lines += [f"| {r['model']} | {r['seed']} | " + " | ".join(
      "undefined" if r[k] is None else f"{r[k]:.3f}" for k in METRICS) +
      f" | {r['confusion_matrix']} | {r['train_seconds']:.0f} |" for r in table["records"]]
  return "\n".join(lines) + "\n"


def write(table: dict, out: pathlib.Path) -> None:
  """The .json (strict: an undefined metric is null) and the .md made from exactly it."""
  table = nulls.strict_json(table)
  files.write_atomically(out.with_suffix(".json"), json.dumps(table, indent=2) + "\n")
  files.write_atomically(out.with_suffix(".md"), markdown(table))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  out = REPO / f.out if not pathlib.Path(f.out).is_absolute() else pathlib.Path(f.out)
  table = read_table(out.with_suffix(".json"))
  if f.report_only:
    if table is None:
      sys.exit(f"error: --report_only: no {out.with_suffix('.json')} to report")
    files.write_atomically(out.with_suffix(".md"), markdown(table))
    print(f"wrote {out.with_suffix('.md')}")
    return
  unknown = sorted(set(f.models) - set(ENTRY))
  if unknown:
    sys.exit(f"error: --models: unknown {', '.join(unknown)}; known: {', '.join(ENTRY)}")
  seeds = [int(s) for s in f.seeds]
  setup = chosen_setup(f.full, f.width, image_size=f.image_size, epochs=f.epochs,
                       batch_size=f.batch_size)
  if table is not None:
    check_same_setup(table, setup_record(setup), out.with_suffix(".json"))
  splits = load_splits(f.data, setup.train.image_size)
  train_split, val = splits
  table = table or dict(setup=setup_record(setup), models={}, records=[])
  table.update(json_name=out.with_suffix(".json").name, machine=machine(),
               seeds=sorted(set(table.get("seeds", [])) | set(seeds)),
               data=dict(path=f.data, train=len(train_split),
                         train_covid=int(train_split.labels.sum()), val=len(val),
                         val_covid=int(val.labels.sum())))
  for name in f.models:
    done = {(r["model"], r["seed"]) for r in table["records"]}
    if all((name, seed) in done for seed in seeds):
      continue
    model, records = run_model(ENTRY[name], setup, seeds, splits, done)
    table["models"][name] = model
    table["records"] = sorted(table["records"] + records, key=lambda r: (r["model"], r["seed"]))
    write(table, out)
  write(table, out)
  print(f"wrote {out.with_suffix('.md')} and .json")


if __name__ == "__main__":
  define_flags()
  app.run(main)
