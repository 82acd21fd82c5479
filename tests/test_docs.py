"""The documentation: tables written from the result records, every command it shows runs (its
flags parse, its workdirs come from an earlier command), a short README, no project history."""
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
from mnistgen_jax import docs

DOCUMENTS = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def _check(root):
  return subprocess.run([sys.executable, "-m", "mnistgen_jax.docs", "--check", f"--root={root}"],
                        cwd=ROOT, capture_output=True, text=True)


def test_the_tables_are_the_records():
  proc = _check(ROOT)
  assert proc.returncode == 0, proc.stderr


@pytest.fixture
def copy_of_the_docs(tmp_path):
  for path in DOCUMENTS:
    target = tmp_path / os.path.relpath(path, ROOT)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
  shutil.copytree(os.path.join(ROOT, "experiments", "results"), tmp_path / "experiments" / "results")
  return tmp_path


def test_a_changed_record_or_a_hand_typed_figure_fails_the_check(copy_of_the_docs):
  root = copy_of_the_docs
  record = root / docs.RECORDS / "dcgan.json"
  changed = json.loads(record.read_text())
  changed["figures"]["train_seconds"] = 1.0
  record.write_text(json.dumps(changed))
  proc = _check(root)
  assert proc.returncode == 1
  assert "README.md: table(s) results differ from the records" in proc.stderr
  # Writing the tables makes them agree again, and the figure is the record's.
  subprocess.run([sys.executable, "-m", "mnistgen_jax.docs", f"--root={root}"], cwd=ROOT,
                 check=True, capture_output=True)
  assert _check(root).returncode == 0
  assert "| 1 s |" in (root / "README.md").read_text()

  readme = root / "README.md"
  readme.write_text(readme.read_text() + "\n| family | fid |\n|---|---|\n| vae | 12.34 |\n")
  proc = _check(root)
  assert proc.returncode == 1 and "a figure outside a generated table: | vae | 12.34 |" in proc.stderr


def test_a_record_without_its_command_or_with_a_broken_reference_is_one_line(copy_of_the_docs):
  root = copy_of_the_docs
  record = root / docs.RECORDS / "dcgan.json"
  broken = json.loads(record.read_text())
  broken["figures"]["fid_samples"] = "experiments/results/dcgan_infogan/dcgan_eval.json#nothing.here"
  record.write_text(json.dumps(broken))
  proc = _check(root)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "error: experiments/results/dcgan_infogan/dcgan_eval.json has no 'nothing.here'"]
  del broken["command"]
  record.write_text(json.dumps(broken))
  proc = _check(root)
  assert proc.stderr.strip() == f"error: {docs.RECORDS}/dcgan.json lacks command"


def test_every_record_names_its_command_hardware_and_versions():
  records = docs.load_records(ROOT)
  used = {row for table in docs.TABLES.values() for row in table.rows}
  assert used <= set(records), used - set(records)
  for record in records.values():
    assert record["command"] and record["hardware"] and record["version"].get("jax"), record["name"]
    for value in record["figures"].values():
      assert value is None or isinstance(value, (int, float, str, list)), record["name"]


@pytest.mark.slow  # Trains a tiny run.
def test_a_finished_run_becomes_a_record_whose_figures_are_its_files(tiny_run, tmp_path):
  workdir = tiny_run("vae")
  path = docs.record_run(str(tmp_path), "tiny_vae", workdir, "mnistgen-train --model=vae", "tiny")
  record = json.loads(open(path).read())
  assert record["family"] == "vae" and record["hardware"] and record["version"]["jax"]
  resolved = docs.load_records(str(tmp_path))["tiny_vae"]["figures"]
  with open(os.path.join(workdir, "eval.json")) as f:
    evaluation = json.load(f)
  assert resolved["nll"] == evaluation["test"]["neg_elbo"]
  assert resolved["train_seconds"] == evaluation["train_seconds"]
  with pytest.raises(docs.RecordError, match="has no eval.json"):
    docs.record_run(str(tmp_path), "none", str(tmp_path / "missing"), "x", "y")


def test_the_readme_is_short_and_shows_samples_early():
  with open(os.path.join(ROOT, "README.md")) as f:
    lines = f.read().splitlines()
  assert len(lines) <= 200, len(lines)
  picture = next(i for i, line in enumerate(lines) if line.startswith("!["))
  assert picture < 60
  path = re.search(r"\]\(([^)]+)\)", lines[picture]).group(1)
  assert os.path.exists(os.path.join(ROOT, path))
  for link in re.findall(r"\]\((docs/[^)#]+)", "\n".join(lines)):
    assert os.path.exists(os.path.join(ROOT, link)), link


_HISTORY = re.compile(
    r"\b(work )?session\b(?! ?\()|\bissue \d+|\blent\b|\bborrowed\b|\bcommit [0-9a-f]{7}|"
    r"\b(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh) (session|round of work)",
    re.I)


def test_no_project_history_in_docs_code_tests_or_notebooks():
  paths = DOCUMENTS + glob.glob(os.path.join(ROOT, "mnistgen_jax", "**", "*.py"), recursive=True)
  paths += glob.glob(os.path.join(ROOT, "tests", "*.py")) + glob.glob(os.path.join(ROOT, "notebooks", "*"))
  paths += glob.glob(os.path.join(ROOT, "experiments", "*.py")) + glob.glob(os.path.join(ROOT, "experiments", "*.sh"))
  found = []
  for path in paths:
    if path == __file__ or os.path.isdir(path):
      continue
    with open(path, errors="replace") as f:
      for number, line in enumerate(f, 1):
        # pytest's scope="session" is a word of the tool, not of our history.
        if _HISTORY.search(line.replace('scope="session"', "")):
          found.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()[:80]}")
  assert not found, "\n".join(found)


# --- every command the docs show ---------------------------------------------------------------

def _commands(path):
  """The commands of a document's bash blocks, in order: each a token list."""
  with open(path) as f:
    blocks = re.findall(r"```bash\n(.*?)```", f.read(), re.S)
  commands = []
  for block in blocks:
    for line in block.splitlines():
      tokens = shlex.split(line, comments=True)
      command = []
      for token in tokens + ["&&"]:
        if token in ("&&", ";", "||"):
          if command:
            commands.append(command)
          command = []
        else:
          command.append(token)
  return commands


_CHECK_FLAGS = r"""
import importlib, json, sys
from absl import flags
from mnistgen_jax import cli, configs
name, argvs = sys.argv[1], json.loads(sys.argv[2])
sys.argv = [name] + argvs[0]  # The config flag registers the overrides of sys.argv when defined.
module = importlib.import_module(f"mnistgen_jax.cli.{name}")
parse = cli.parse_flags if name == "train" else cli.parse_plain_flags
for argv in argvs:
  flags.FLAGS.unparse_flags()
  parse([name] + argv)
  if name == "train":
    configs.validate(flags.FLAGS.config)
print("ok", len(argvs))
"""

_MAKES_RUN = {"train"}


def _workdirs_read(binary, args):
  read = []
  for arg in args:
    key, _, value = arg.partition("=")
    if key in ("--workdir", "--stage1_workdir") and not (key == "--workdir" and binary in _MAKES_RUN):
      read.append(value)
    elif key == "--workdirs":
      read += value.split(",")
  return read


@pytest.mark.slow  # One process per binary the docs use.
def test_every_command_in_the_docs_parses_and_reads_only_runs_made_before_it():
  by_binary, problems = {}, []
  for path in DOCUMENTS:
    made = set()
    rel = os.path.relpath(path, ROOT)
    for command in _commands(path):
      program, args = command[0], command[1:]
      shown = " ".join(command)[:100]
      if program.startswith(".venv/bin/mnistgen-"):
        binary = program[len(".venv/bin/mnistgen-"):].replace("-", "_")
        if not os.path.exists(os.path.join(ROOT, "mnistgen_jax", "cli", f"{binary}.py")):
          problems.append(f"{rel}: no binary for {shown}")
          continue
        missing = [w for w in _workdirs_read(binary, args) if w not in made]
        if missing:
          problems.append(f"{rel}: {shown} reads {missing}, which no earlier command makes")
        if binary in _MAKES_RUN:
          made.update(a.partition("=")[2] for a in args if a.startswith("--workdir="))
        by_binary.setdefault(binary, []).append(args)
      elif program in (".venv/bin/python", "python", "python3", "/tmp/torch/bin/python"):
        if args[:1] == ["-m"] and args[1] in ("venv", "pytest", "pip"):
          continue
        if args[:1] == ["-m"]:
          module = args[1]
          spec = os.path.join(ROOT, *module.split(".")) + ".py"
          if not os.path.exists(spec):
            problems.append(f"{rel}: no module {module} for {shown}")
          if module == "mnistgen_jax.docs" and "--record=" not in " ".join(args):
            proc = subprocess.run([sys.executable, "-m", module, *args[2:], "--check"], cwd=ROOT,
                                  capture_output=True, text=True)
            if proc.returncode:
              problems.append(f"{rel}: {shown}: {proc.stderr.strip()[-200:]}")
          elif module == "mnistgen_jax.docs":
            missing = [w for w in _workdirs_read("docs", args) if w not in made]
            if missing:
              problems.append(f"{rel}: {shown} reads {missing}, which no earlier command makes")
        elif not os.path.exists(os.path.join(ROOT, args[0])):
          problems.append(f"{rel}: no file {args[0]} for {shown}")
      elif program == "bash":
        if not os.path.exists(os.path.join(ROOT, args[0])):
          problems.append(f"{rel}: no script {args[0]} for {shown}")
      elif program.startswith(".venv/bin/pip"):
        for i, arg in enumerate(args):
          if arg == "-r" and not os.path.exists(os.path.join(ROOT, args[i + 1])):
            problems.append(f"{rel}: no {args[i + 1]} for {shown}")
      else:
        problems.append(f"{rel}: a command this test does not know how to check: {shown}")
  assert not problems, "\n".join(problems)
  assert {"train", "evaluate", "generate", "export"} <= set(by_binary)
  for binary, argvs in by_binary.items():
    # The train binary's config overrides are defined from its command line: a process each.
    for group in ([[a] for a in argvs] if binary == "train" else [argvs]):
      proc = subprocess.run([sys.executable, "-c", _CHECK_FLAGS, binary, json.dumps(group)],
                            cwd=ROOT, capture_output=True, text=True)
      assert proc.returncode == 0 and proc.stdout.split() == ["ok", str(len(group))], (
          binary, group, proc.stderr[-2000:])


def test_the_command_check_finds_a_bad_flag_and_a_run_never_made(tmp_path):
  proc = subprocess.run([sys.executable, "-c", _CHECK_FLAGS, "train",
                         json.dumps([["--model=vae", "--latnt_dim=2", "--workdir=x"]])],
                        cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 2 and "did you mean --latent_dim?" in proc.stderr
  assert _workdirs_read("generate", ["--workdir=runs/x", "--num=4"]) == ["runs/x"]
  assert _workdirs_read("train", ["--workdir=runs/y", "--stage1_workdir=runs/x"]) == ["runs/x"]


def test_ci_runs_the_readme_test_command():
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  with open(os.path.join(ROOT, ".ci", "run")) as f:
    ci = f.read()
  command = re.search(r"(\.venv/bin/python -m pytest [^\n`]*)", readme).group(1).strip()
  assert "-n 2" in command and command in ci, command
