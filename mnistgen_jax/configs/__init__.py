"""Configs as data, the google/flax examples way: one `configs/<family>.py` per family with a
`get_config(preset="")`, read by `ml_collections.config_flags` (`--config=.../vae.py:1m
--config.model.latent_dim=2`) or here by name (`get_config("vae", latent_dim=2)`).

A config has five sections (base.py): `model` (the family's own fields), `train`, `data`, `run`
and `sampling`; `run` and `sampling` may change on resume and in generate/evaluate, the others
are fixed by a run's first step. Each family's file adds its fields to `config.model` (and how it
samples to `config.sampling`), its PRESETS and its `validate`. A field's name is unique over the
sections: overrides, presets and command lines name fields without their section. This package
imports no model: a config is data.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re

import ml_collections

from mnistgen_jax.configs import base, migrations

SECTIONS, RESUMABLE_SECTIONS = base.SECTIONS, base.RESUMABLE_SECTIONS
section_of, fields, field, resumable_fields = (base.section_of, base.fields, base.field,
                                               base.resumable_fields)
DIRECTORY = os.path.dirname(os.path.abspath(__file__))



# Families whose config file lives outside this folder (a user's own family): name -> module.
_EXTERNAL: dict[str, str] = {}


def register(model: str, module_name: str) -> None:
  """Registers the config file of a family defined outside the package: the module
  `module_name` (importable) with get_config(preset) and, optionally, PRESETS and validate, as
  the files of this folder have. The family's model module registers its Family with
  models.register; nothing else is edited."""
  if model in names() and _EXTERNAL.get(model) != module_name:
    raise ValueError(f"a config file of {model!r} is registered already")
  _EXTERNAL[model] = module_name


def names() -> list[str]:
  """Every family with a config file."""
  return sorted({f[:-3] for f in os.listdir(DIRECTORY)
                 if f.endswith(".py") and f not in ("__init__.py", "base.py", "migrations.py")}
                | set(_EXTERNAL))


def _module_name(model: str) -> str:
  return _EXTERNAL.get(model, f"mnistgen_jax.configs.{model}")


def path(model: str) -> str:
  """The config file of a family, for --config."""
  if model in _EXTERNAL:
    return importlib.util.find_spec(_EXTERNAL[model]).origin
  return os.path.join(DIRECTORY, f"{model}.py")


def _module(model: str):
  if model not in names():
    raise ValueError(f"unknown model {model!r}; choose one of: {', '.join(names())}")
  return importlib.import_module(_module_name(model))


def presets(model: str) -> dict:
  return getattr(_module(model), "PRESETS", {})


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The shared checks, then the family's own; returns config."""
  base.validate(config)
  family_check = getattr(_module(config.family), "validate", None)
  if family_check is not None:
    family_check(config)
  return config


def with_preset(config: ml_collections.ConfigDict, preset: str) -> ml_collections.ConfigDict:
  """The family's settings for a named preset (its config file's PRESETS[preset], fields by
  name): widths for a parameter budget (1m), or a whole recipe (accelerator, iwae_1layer)."""
  if preset:
    table = presets(config.family)
    if preset not in table:
      known = ", ".join(table) or "none"
      raise ValueError(f"--preset={preset} is not a preset of {config.family!r} (its presets: "
                       f"{known})")
    for key, value in table[preset].items():
      set_field(config, key, value)
    config.preset = preset
  return config


def set_field(config, key: str, value) -> None:
  """config's field `key` (in whichever section holds it) set to value, checked for type; a
  comma-separated string for a tuple of widths."""
  section = section_of(config, key)
  if section is None:
    raise ValueError(f"unknown config field {key!r} for {config.family!r}; known: "
                     f"{', '.join(sorted(fields(config)))}")
  values = config[section]
  if isinstance(values[key], tuple):
    try:
      value = tuple(int(v) for v in (value.split(",") if isinstance(value, str) else value))
    except ValueError:
      raise ValueError(f"--{key}={value!r}: expected comma-separated integers like 400 or "
                       "512,256") from None
  try:
    values[key] = value
  except TypeError as e:
    raise ValueError(f"--{key}={value!r} has the wrong type: {e}") from e


def get_config(model: str = "vae", **overrides) -> ml_collections.ConfigDict:
  """The family's config file, its preset (overrides['preset']), then `overrides` (fields by
  name, whatever their section); validated."""
  config = _module(model).get_config(overrides.pop("preset", "") or "")
  for key, value in overrides.items():
    set_field(config, key, value)
  return validate(config)


# The fields a stage 1 trained by --stage1=FAMILY takes from its prior's config: the same data,
# devices and seed.
SHARED_WITH_STAGE1 = ("seed", "dataset", "train_size", "test_size", "data_source", "data_dir",
                      "num_devices")


def stage1_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config of the stage 1 that a prior's --stage1=FAMILY trains first: that family's
  defaults, the prior's SHARED_WITH_STAGE1 fields, then --stage1_args ('FIELD=VALUE ...')."""
  family = config.model.stage1
  defaults = fields(_module(family).get_config(""))
  overrides = {name: field(config, name) for name in SHARED_WITH_STAGE1}
  for item in config.model.stage1_args.split():
    key, sep, text = item.partition("=")
    if not sep or key not in defaults:
      known = f"; its fields: {', '.join(sorted(defaults))}" if sep else ""
      raise ValueError(f"--stage1_args: {item!r} is not FIELD=VALUE of a {family} field{known}")
    overrides[key] = _typed(key, text, defaults[key])
  try:
    return get_config(family, **overrides)
  except ValueError as e:
    raise ValueError(f"--stage1_args (the {family} stage 1): {e}") from e


def _typed(key: str, text: str, default):
  """A --stage1_args value as the type of the field's default (tuples: set_field parses them)."""
  try:
    if isinstance(default, bool):
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(text)
      return text.lower() in ("true", "1")
    if isinstance(default, (int, float)):
      return type(default)(text)
  except ValueError:
    raise ValueError(f"--stage1_args: {key}={text!r} is not a {type(default).__name__}") from None
  return text


def changed_fields(config: ml_collections.ConfigDict) -> dict:
  """{field: value} of config's fields that differ from its family's defaults (of its preset)."""
  defaults = fields(get_config(config.family, preset=config.preset))
  return {name: value for name, value in fields(config).items() if defaults.get(name) != value}


def describe_changes(config: ml_collections.ConfigDict) -> str:
  """One line: the fields that differ from the family's defaults, as command-line flags."""
  changed = changed_fields(config)
  preset = f" (preset {config.preset})" if config.preset else ""
  if not changed:
    return f"config: {config.family}'s defaults{preset}"
  shown = " ".join(f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
                   for k, v in changed.items())
  return f"config: {shown}; the rest {config.family}'s defaults{preset}"


def saved_family(saved) -> str | None:
  """The family a saved config.json (a dict of any layout) names; None where it names none."""
  if not isinstance(saved, dict):
    return None
  family = saved.get("model") if isinstance(saved.get("model"), str) else saved.get("family")
  return family if isinstance(family, str) else None


def from_saved(saved: dict) -> ml_collections.ConfigDict:
  """The config of a saved config.json of any layout the project has written (migrations.py)."""
  model = saved_family(saved)
  if model is None:
    raise ValueError("the saved config names no family")
  saved = dict(saved)
  if isinstance(saved.get("model"), str):  # The flat layouts: {"model": family, field: value}.
    del saved["model"]
  else:
    del saved["family"]
    saved = migrations.flatten(saved, base.SECTIONS)
  module = _module(model)
  defaults = module.get_config("")
  saved = migrations.migrate(saved, {"preset", *fields(defaults)},
                             getattr(module, "ABSENT_IN_OLDER_RUNS", {}))
  return get_config(model, **saved)  # Its preset first, then the saved fields.


def _parents(model: str) -> list[str]:
  """base, then the family's file and the files it builds on (its `from mnistgen_jax.configs
  import ...`), nearest first."""
  order, todo = [], [model]
  while todo:
    name = todo.pop(0)
    if name in order:
      continue
    order.append(name)
    with open(path(name)) as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and node.module == "mnistgen_jax.configs":
        todo += [a.name for a in node.names if a.name in names() or a.name == "base"]
  return ["base"] + [n for n in order if n != "base"]


_FIELD_LINE = re.compile(r"^\s*(?:config\.(?:[a-z]+\.)?)?([a-z_][a-z0-9_]*)\s*=[^=].*?#\s*(.*)$")
_MORE_LINE = re.compile(r"^\s+#\s*(.*)$")


def field_help(model: str) -> dict:
  """{field: its one-line meaning}, from the comments beside the fields: a shared field's in
  base.py, a family's own in the nearest file that sets it with a comment; '' for none."""
  config = fields(get_config(model))
  meanings = {}
  for name in _parents(model):
    with open(path(name)) as f:
      lines = f.read().splitlines()
    for i, line in enumerate(lines):
      match = _FIELD_LINE.match(line)
      if not match or match.group(1) not in config or match.group(1) in meanings:
        continue
      text, column = [match.group(2)], line.index("#", match.end(1))
      for more in lines[i + 1:]:  # A comment continued on the lines below, aligned with it.
        cont = _MORE_LINE.match(more)
        if not cont or _FIELD_LINE.match(more) or more.index("#") != column:
          break
        text.append(cont.group(1))
      meanings[match.group(1)] = " ".join(text)
  return {k: meanings.get(k, "") for k in config}
