"""The package's shape: no import cycle, lower layers never import higher ones, one config file
per registered family, and no family capabilities probed outside the interface."""
import ast
import os
import re

import pytest

from mnistgen_jax import configs, models
from conftest import ROOT

PACKAGE = os.path.join(ROOT, "mnistgen_jax")


def _module_name(path: str) -> str:
  rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
  return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _package_modules() -> dict:
  modules = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        modules[_module_name(path)] = path
  return modules


def import_graph() -> dict:
  """{module: set of mnistgen_jax modules it imports (anywhere in the file)}, from the ast."""
  modules = _package_modules()
  graph = {}
  for module, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    imported = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # Relative import.
          parts = module.split(".")[: len(module.split(".")) - node.level + is_package]
          base = ".".join(parts + ([base] if base else []))
        submodules = [f"{base}.{alias.name}" for alias in node.names]
        names = [n for n in submodules if n in modules] or [base]  # modules, else names in base
      else:
        continue
      imported.update(n for n in names if n in modules and n != module)
    graph[module] = imported
  return graph


def find_cycle(graph: dict):
  """One import cycle as a list of modules, or None (depth-first search)."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = "done"
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_cycle_finder_finds_a_planted_cycle():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_the_package():
  graph = import_graph()
  assert "mnistgen_jax.models.vqvae_prior" in graph and graph["mnistgen_jax.trainer"]
  assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


# Each layer may import only modules of its own layer or lower ones (shared/DESIGN.md).
LAYERS = [
    {"mnistgen_jax.errors", "mnistgen_jax.files", "mnistgen_jax.data", "mnistgen_jax.quantizer", "mnistgen_jax.parallel",
     "mnistgen_jax.checkpoint", "mnistgen_jax.cpu_compiler", "mnistgen_jax.train", "mnistgen_jax.viz",
     "mnistgen_jax.latent", "mnistgen_jax.export", "mnistgen_jax.flow"},
    {"mnistgen_jax.models"},   # and every mnistgen_jax.models.* module
    {"mnistgen_jax.configs"},  # and every config file
]


def _layer(module: str) -> int:
  for i, layer in enumerate(LAYERS):
    if module in layer or any(module.startswith(m + ".") for m in layer):
      return i
  return len(LAYERS)  # The loop, the run driver, evaluators, reports, the CLI.


def test_lower_layers_never_import_higher_ones():
  graph = import_graph()
  bad = [f"{m} imports {n}" for m, deps in graph.items() for n in deps
         if _layer(n) > _layer(m) and not (m.startswith("mnistgen_jax.configs")
                                          and n == "mnistgen_jax.configs")]
  assert not bad, bad
  assert _layer("mnistgen_jax.trainer") == _layer("mnistgen_jax.runs") == len(LAYERS)


def test_every_family_has_one_config_file_and_vice_versa():
  assert models.names() == configs.names()
  for name in models.names():
    assert configs.get_config(name).family == name


def test_no_capability_probes_or_family_names_outside_the_family_files():
  """hasattr on models lives in interface.supports only; no `if ... == "vqvae"`-style branches."""
  offenders = []
  names = "|".join(models.names())
  for folder in (PACKAGE, os.path.join(ROOT, "experiments")):
    for dirpath, _, files in os.walk(folder):
      for name in files:
        path = os.path.join(dirpath, name)
        if not name.endswith(".py") or "models" in os.path.relpath(path, ROOT).split(os.sep)[1:2] \
            or os.sep + "configs" + os.sep in path:
          continue
        text = open(path).read()
        if re.search(r"hasattr\((model|family)", text):
          offenders.append(f"{path}: hasattr")
        if re.search(rf"""(==|\bin)\s*\(?\s*["']({names})["']""", text):
          offenders.append(f"{path}: branches on a family name")
  assert not offenders, offenders


@pytest.mark.parametrize("name", models.names())
def test_family_records_are_complete(name):
  family = models.get(name)
  assert isinstance(family.training, models.Training)
  assert family.description
  for first in family.stage1_families:
    assert first in models.names()
    assert "stage1_workdir" in configs.get_config(name).model


def test_the_layers_and_the_metrics_import_nothing_of_training_or_runs():
  graph = import_graph()
  driver = {"mnistgen_jax.train", "mnistgen_jax.trainer", "mnistgen_jax.train_setup"}
  assert not graph["mnistgen_jax.models.nets"] & driver
  for module, deps in graph.items():
    if module.startswith("mnistgen_jax.metrics"):
      assert not {d for d in deps if d in driver | {"mnistgen_jax.runs", "mnistgen_jax.report"}
                  or d.startswith("mnistgen_jax.cli")}, module
    if any(k in module.rsplit(".", 1)[-1] for k in ("evaluat", "generat", "export", "sampl")):
      assert "mnistgen_jax.trainer" not in deps, module


@pytest.mark.slow
def test_the_wheel_installs_the_package_only(tmp_path):
  """experiments/ (wrappers, reproduction scripts) stays in the checkout; console scripts point
  into mnistgen_jax.cli."""
  import shutil
  import subprocess
  import sys
  import zipfile
  source = tmp_path / "source"  # A copy: building writes build/ and *.egg-info beside the code.
  shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
      ".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", "results"))
  proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                         str(tmp_path), str(source)], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  wheel, = tmp_path.glob("*.whl")
  with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    tops = {n.split("/")[0] for n in names}
    entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
  assert {t for t in tops if not t.endswith(".dist-info")} == {"mnistgen_jax"}, tops
  assert "mnistgen_jax/metrics/weights/lenet_mnist.msgpack" in names
  scripts = [line for line in entry_points.splitlines() if line.startswith("mnistgen-")]
  assert len(scripts) >= 10 and all("= mnistgen_jax.cli." in line for line in scripts), scripts
