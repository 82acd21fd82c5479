"""Result tables of README.md and docs/*.md, written from the committed result records.

A record (experiments/results/records/<name>.json) is one measurement: the command that made it,
its config, the hardware, the versions and its figures. A figure is a number, or a reference
"<path>#<key.key.0.key>" to a JSON file the command wrote (an eval.json, a sampling curve), read
from there. A document holds a generated table between two markers:

  <!-- table:NAME -->
  ... written by `python -m mnistgen_jax.docs` ...
  <!-- /table -->

`python -m mnistgen_jax.docs` rewrites every such block from the records; `--check` writes nothing
and exits 1 naming each block that differs from what the records give, and each table row outside
a block that carries a decimal figure (a number typed by hand).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import glob
import json
import math
import os
import re
import sys
from typing import Callable

from mnistgen_jax import files

RECORDS = os.path.join("experiments", "results", "records")
DOCUMENTS = ("README.md", "docs/*.md")
_BLOCK = re.compile(r"(<!-- table:([a-z_]+) -->\n)(.*?)(<!-- /table -->)", re.S)
_FIGURE = re.compile(r"(?<![\w.])\d+\.\d+")  # a decimal figure: 98.86, 0.5 (not v0.1.0)

REQUIRED = ("name", "what", "command", "config", "hardware", "version", "figures")


class RecordError(ValueError):
  """A record that cannot be read or does not give a figure a table needs."""


def _lookup(root: str, reference: str):
  path, _, key = reference.partition("#")
  try:
    with open(os.path.join(root, path)) as f:
      value = json.load(f)
  except (OSError, ValueError) as e:
    raise RecordError(f"cannot read {path} ({e})") from e
  parts = key.split(".") if key else []
  while parts:
    # A key may hold dots itself ("test + N(0, 0.1^2) pixel noise"): the longest one that exists.
    for n in range(len(parts), 0, -1):
      part = ".".join(parts[:n])
      if isinstance(value, dict) and part in value:
        value, parts = value[part], parts[n:]
        break
      if isinstance(value, list) and n == 1 and part.isdigit() and int(part) < len(value):
        value, parts = value[int(part)], parts[1:]
        break
    else:
      raise RecordError(f"{path} has no {key!r}")
  return value


def load_records(root: str) -> dict:
  """name -> record, its figures resolved (references read from their files)."""
  records = {}
  for path in sorted(glob.glob(os.path.join(root, RECORDS, "*.json"))):
    try:
      with open(path) as f:
        record = json.load(f, parse_constant=_refuse_constant)
    except (OSError, ValueError) as e:
      raise RecordError(f"{os.path.relpath(path, root)}: not strict JSON ({e})") from e
    missing = [k for k in REQUIRED if k not in record]
    if missing:
      raise RecordError(f"{os.path.relpath(path, root)} lacks {', '.join(missing)}")
    if record["name"] != os.path.basename(path)[:-len(".json")]:
      raise RecordError(f"{os.path.relpath(path, root)}: its name must be its file's name")
    figures = {}
    for key, value in record["figures"].items():
      figures[key] = _lookup(root, value) if isinstance(value, str) and "#" in value else value
    records[record["name"]] = {**record, "figures": figures}
  return records


def _refuse_constant(name):
  raise ValueError(f"{name} is not JSON")


# --- formatting --------------------------------------------------------------------------------

def number(decimals: int, scale: float = 1.0, suffix: str = "") -> Callable:
  def fmt(value):
    if value is None:
      return "—"
    if not isinstance(value, (int, float)) or not math.isfinite(value):
      raise RecordError(f"{value!r} is not a finite number")
    return f"{value * scale:,.{decimals}f}{suffix}"
  return fmt


def seconds(value) -> str:
  """412 -> '6.9 min', 5228 -> '1.45 h'."""
  if value is None:
    return "—"
  if value < 120:
    return f"{value:.0f} s"
  if value < 7200:
    return f"{value / 60:.1f} min"
  return f"{value / 3600:.2f} h"


def rounds(value) -> str:
  """[2233, 2308, 2528] -> '2,308 (2,233-2,528)': the median round and the range."""
  if not isinstance(value, list) or not value:
    raise RecordError(f"{value!r} is not a list of rounds")
  ordered = sorted(value)
  median = ordered[len(ordered) // 2] if len(ordered) % 2 else sum(
      ordered[len(ordered) // 2 - 1:len(ordered) // 2 + 1]) / 2
  return f"{median:,.0f} ({ordered[0]:,.0f}-{ordered[-1]:,.0f})"


def speedup(record: dict) -> str:
  ours, theirs = record["figures"]["ours_img_per_s"], record["figures"]["torch_img_per_s"]
  ratios = sorted(a / b for a, b in zip(ours, theirs))
  return f"{ratios[0]:.2f}-{ratios[-1]:.2f}x"


def text(value) -> str:
  return "—" if value is None else str(value)


@dataclasses.dataclass(frozen=True)
class Column:
  header: str
  figure: str | Callable             # a key of the record's figures, "record:<key>", or
  fmt: Callable = text               # record -> the cell (a figure made of several)

  def cell(self, record: dict) -> str:
    if callable(self.figure):
      return self.figure(record)
    if self.figure.startswith("record:"):
      value = record.get(self.figure[len("record:"):])
    else:
      value = record["figures"].get(self.figure)
    try:
      return self.fmt(value)
    except RecordError as e:
      raise RecordError(f"record {record['name']}, {self.figure}: {e}") from e


@dataclasses.dataclass(frozen=True)
class Table:
  columns: tuple
  rows: tuple                        # record names, in order


# Rows of the tables: record names (experiments/results/records/<name>.json).
_RESULTS = ("vae", "conv_vae", "cond_vae", "spatial_vae", "ae", "pixel_vae_accelerator", "vqvae",
            "vqvae_cond_prior", "latent_flow_conv_vae", "latent_flow_cond_vae", "latent_flow_grid",
            "latent_flow_grid_cond", "flow_cpu",
            "cond_flow_cpu", "flow_accelerator", "cond_flow_accelerator", "dcgan", "cond_dcgan")
_SAMPLERS = ("latent_flow_grid", "latent_flow_grid_cond", "latent_flow_conv_vae",
             "latent_flow_cond_vae", "vqvae_cond_prior", "flow_cpu",
             "cond_flow_cpu", "flow_accelerator", "cond_flow_accelerator", "dcgan", "cond_dcgan")
_LIKELIHOODS = ("iwae1_vae_k1", "iwae1_iwae_k5", "iwae2_iwae_k50_accelerator",
                "pixel_vae_accelerator")
_CPU_BENCHMARKS = tuple(f"benchmark_cpu_{family}" for family in
                        "ae vae conv_vae cond_vae vqvae vqvae_prior dcgan cond_dcgan".split())
_GPU_BENCHMARKS = tuple(f"benchmark_h100_{family}" for family in
                        "conv_vae hvae pixel_vae vqvae_prior".split())
_PEERS = tuple(f"peers_{family}" for family in "vae conv_vae vqvae dcgan".split())
_CALIBRATION = tuple(f"calibration_{row}" for row in (
    "train", "noise01", "blur", "noise03", "pure"))

_GRID_PRIORS = ("grid_ab_unet", "grid_ab_mlp", "grid_ab_mlp_global", "grid_ab_mlp_global_c2",
                "latent_flow_grid", "latent_flow_grid_cond", "latent_flow_grid_cond_60")
_GRID_STEPS = (4, 8, 16, 25, 50)

_NLL = Column("−ELBO / NLL (nats)", "nll", number(2))
_FID = Column("sample fid_lenet", "fid_samples", number(2))
_TIME = Column("training", "train_seconds", seconds)
_HARDWARE = Column("hardware", "record:hardware")

TABLES = {
    "results": Table(
        (Column("family", "record:family"), Column("run", "record:what"), _NLL, _FID, _TIME,
         _HARDWARE),
        _RESULTS),
    "best_cpu": Table(
        (Column("command", "record:command", lambda c: f"`{c}`"),
         Column("wall time", "wall_seconds", seconds), _FID,
         Column("digit read as asked", "label_accuracy", number(1, 100, " %")), _HARDWARE),
        ("latent_flow_grid_cond", "best_cpu_digits")),
    "grid_prior": Table(
        (Column("prior over a spatial_vae's 7x7 grid", "record:what"),
         Column("stage-1 reconstruction fid_lenet", "fid_reconstructions", number(2)), _FID,
         Column("precision", "precision", number(2)), Column("recall", "recall", number(2)),
         Column("digit read as asked", "label_accuracy", number(1, 100, " %")),
         Column("prior training", "train_seconds", seconds), _HARDWARE),
        _GRID_PRIORS),
    "grid_time": Table(
        (Column("command", "record:command", lambda c: f"`{c}`"),
         Column("stage-1 training", "stage1_train_seconds", seconds),
         Column("prior training", "train_seconds", seconds),
         Column("whole command", "wall_seconds", seconds), _FID, _HARDWARE),
        ("latent_flow_grid_cond", "latent_flow_grid", "latent_flow_grid_cond_60")),
    "grid_steps": Table(
        (Column("run", "record:what"),
         *(Column(f"fid_lenet, {n} steps", f"fid_{n}", number(2)) for n in _GRID_STEPS),
         *(Column(f"samples/s, {n} steps", f"rate_{n}", number(0)) for n in (4, 25)),
         _HARDWARE),
        ("latent_flow_grid_cond_steps",)),
    "sample_quality": Table(
        (Column("family", "record:family"), Column("run", "record:what"), _FID,
         Column("KID x1000", "kid_samples", number(1)),
         Column("precision", "precision", number(2)), Column("recall", "recall", number(2)),
         Column("digit read as asked", "label_accuracy", number(1, 100, " %")), _HARDWARE),
        _SAMPLERS),
    "likelihoods": Table(
        (Column("model (dynamically binarized MNIST)", "record:what"),
         Column("test NLL (nats)", "nll", number(2)),
         Column("± (std. error)", "nll_stderr", number(2)),
         Column("bound", "bound"), Column("test images", "images", number(0)),
         Column("paper (Burda et al. 2016)", "paper_nll", number(2)), _HARDWARE),
        _LIKELIHOODS),
    "throughput": Table(
        (Column("family", "record:family"), Column("train img/s", "train_img_per_s", number(0)),
         Column("share of the f32 matmul peak", "roofline_share", number(0, 100, " %")),
         Column("sample img/s", "sample_img_per_s", number(0)), _HARDWARE),
        _CPU_BENCHMARKS),
    "throughput_gpu": Table(
        (Column("family", "record:family"), Column("train img/s", "train_img_per_s", number(0)),
         Column("sample img/s", "sample_img_per_s", number(0)), _HARDWARE),
        _GPU_BENCHMARKS),
    "pytorch": Table(
        (Column("family", "record:family"),
         Column("PyTorch img/s, median round (range)", "torch_img_per_s", rounds),
         Column("ours img/s, median round (range)", "ours_img_per_s", rounds),
         Column("ours / PyTorch, per round", speedup), _HARDWARE),
        _PEERS),
    "calibration": Table(
        (Column("images vs the MNIST test set", "record:what"), _FID,
         Column("KID x1000", "kid_samples", number(1)),
         Column("precision", "precision", number(3)), Column("recall", "recall", number(3)),
         Column("classifier score", "classifier_score", number(2))),
        _CALIBRATION),
}


def render(name: str, records: dict) -> str:
  table = TABLES[name]
  lines = ["| " + " | ".join(c.header for c in table.columns) + " |",
           "|" + "---|" * len(table.columns)]
  for row in table.rows:
    if row not in records:
      raise RecordError(f"table {name!r} needs the record {RECORDS}/{row}.json")
    lines.append("| " + " | ".join(c.cell(records[row]) for c in table.columns) + " |")
  return "\n".join(lines) + "\n"


def documents(root: str) -> list:
  paths = []
  for pattern in DOCUMENTS:
    paths += sorted(glob.glob(os.path.join(root, pattern)))
  return paths


def regenerate(text_: str, records: dict) -> str:
  def replace(match):
    name = match.group(2)
    if name not in TABLES:
      raise RecordError(f"unknown table {name!r} (known: {', '.join(TABLES)})")
    return match.group(1) + render(name, records) + match.group(4)
  return _BLOCK.sub(replace, text_)


def hand_typed_rows(text_: str) -> list:
  """Table rows outside the generated blocks that carry a decimal figure: (line number, line)."""
  blanked = _BLOCK.sub(lambda m: m.group(1) + "\n" * m.group(3).count("\n") + m.group(4), text_)
  return [(i + 1, line) for i, line in enumerate(blanked.splitlines())
          if line.startswith("|") and _FIGURE.search(line)]


_INSTRUCTION_SETS = {"avx512": "AVX-512", "avx2": "AVX2"}


def machine() -> str:
  """'2-vCPU AMD EPYC (AVX-512)': the CPU a record was measured on (its accelerator is named by
  the command's own output)."""
  from mnistgen_jax import cpu_compiler  # Imports jax: only when a record is written.
  name, kind = cpu_compiler.cpu_info()
  return f"{os.cpu_count()}-vCPU {name} ({_INSTRUCTION_SETS.get(kind, kind)})"


def record_run(root: str, name: str, workdir: str, command: str, what: str,
               wall_seconds: float | None = None) -> str:
  """Writes the record `name` of a finished run: its eval.json and config.json are copied beside
  the record, and every figure refers to them. Returns the record's path."""
  import importlib.metadata
  import shutil
  import jax
  folder = os.path.join(root, RECORDS, name)
  run_files = ("eval.json", "config.json")
  for file in run_files:  # Both, before anything is written.
    if not os.path.exists(os.path.join(workdir, file)):
      raise RecordError(f"{workdir} has no {file}: record a finished, evaluated run")
  os.makedirs(folder, exist_ok=True)
  for file in run_files:
    shutil.copyfile(os.path.join(workdir, file), os.path.join(folder, file))
  with open(os.path.join(folder, "eval.json")) as f:
    evaluation = json.load(f)
  with open(os.path.join(folder, "config.json")) as f:
    family = json.load(f).get("family")
  ref = f"{RECORDS}/{name}/eval.json#"
  samples = evaluation.get("evaluation", {}).get("samples", {})
  figures = {"train_seconds": ref + "train_seconds"}
  if evaluation.get("loss_name") == "neg_elbo":
    figures["nll"] = ref + "test.neg_elbo"
  for figure, key in (("fid_samples", "fid_lenet"), ("kid_samples", "kid_lenet"),
                      ("precision", "precision"), ("recall", "recall"),
                      ("label_accuracy", "label_accuracy")):
    if key in samples:
      figures[figure] = ref + "evaluation.samples." + key
  if "reconstructions" in evaluation.get("evaluation", {}):
    figures["fid_reconstructions"] = ref + "evaluation.reconstructions.fid_lenet"
  for key in evaluation.get("evaluation", {}):
    if key.startswith("iwae_nll_k") and not key.endswith("_stderr"):
      figures["iwae_nll"] = ref + "evaluation." + key
  if wall_seconds is not None:
    figures["wall_seconds"] = round(wall_seconds, 1)
  record = dict(name=name, family=family, what=what, command=command,
                config=f"{RECORDS}/{name}/config.json", hardware=machine(),
                version={"mnistgen_jax": importlib.metadata.version("mnistgen_jax"),
                         "jax": jax.__version__},
                date=datetime.date.today().isoformat(),
                source=f"{RECORDS}/{name}/ (the run's eval.json and config.json)",
                figures=figures)
  path = os.path.join(root, RECORDS, f"{name}.json")
  text_ = json.dumps(record, indent=1, allow_nan=False) + "\n"
  files.write_atomically(path, lambda tmp: _write_text(tmp, text_))
  return path


def _write_text(path: str, content: str) -> None:
  with open(path, "w") as f:
    f.write(content)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m mnistgen_jax.docs", description=__doc__.split(
      "\n")[0])
  parser.add_argument("--check", action="store_true",
                      help="write nothing; exit 1 if a table differs from the records")
  parser.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))), help="the checkout (default: the one this package is in)")
  parser.add_argument("--record", metavar="NAME",
                      help="write the record NAME of the finished run --workdir (then run without it to "
                      "write the tables)")
  parser.add_argument("--workdir", help="with --record: the run")
  parser.add_argument("--command", help="with --record: the command that made the run")
  parser.add_argument("--what", default="", help="with --record: the run in a few words")
  parser.add_argument("--wall_seconds", type=float,
                      help="with --record: the command's wall time, if measured")
  args = parser.parse_args(argv)
  try:
    if args.record:
      if not (args.workdir and args.command):
        raise RecordError("--record needs --workdir and --command")
      print("wrote", os.path.relpath(record_run(args.root, args.record, args.workdir,
                                                args.command, args.what, args.wall_seconds),
                                     args.root))
      return 0
    records = load_records(args.root)
    problems = []
    for path in documents(args.root):
      with open(path) as f:
        old = f.read()
      new = regenerate(old, records)
      rel = os.path.relpath(path, args.root)
      for line_number, line in hand_typed_rows(old):
        problems.append(f"{rel}:{line_number}: a figure outside a generated table: {line[:80]}")
      if new != old:
        if args.check:
          names = [m.group(2) for m in _BLOCK.finditer(old)
                   if render(m.group(2), records) != m.group(3)]
          problems.append(f"{rel}: table(s) {', '.join(names)} differ from the records")
        else:
          files.write_atomically(path, lambda tmp, new=new: _write_text(tmp, new))
          print(f"wrote {rel}")
  except RecordError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for problem in problems:
    print(problem, file=sys.stderr)
  if problems and args.check:
    print("run `python -m mnistgen_jax.docs` to write the tables from the records",
          file=sys.stderr)
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main())
