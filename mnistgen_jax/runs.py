"""A run's workdir: its config.json, written once training has started, and checked on resume.

`workdir/config.json` records what the checkpoints were trained with; a later run in the same
workdir must match it (except the resumable fields), so a checkpoint is never restored into, or
overwritten by, another model or config. No model and no config registry here (layer 1): the
caller turns the saved dict into a config.
"""
from __future__ import annotations

import json
import os

from mnistgen_jax.checkpoint import CheckpointError


def config_path(workdir: str) -> str:
  return os.path.join(workdir, "config.json")


def read_config(workdir: str) -> dict | None:
  """The saved config.json as a dict; None for a workdir that holds no run yet."""
  path = config_path(workdir)
  if not os.path.exists(path):
    folder = os.path.join(workdir, "checkpoints")
    if os.path.isdir(folder) and os.listdir(folder):
      raise CheckpointError(f"{workdir} holds checkpoints but no config.json; pass another --workdir")
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path} is unreadable ({e}); pass another --workdir") from e
  if not isinstance(saved, dict) or not isinstance(saved.get("model"), str):
    raise CheckpointError(f"{path} names no model; pass another --workdir")
  return saved


def check_same_run(workdir: str, saved: dict, current: dict, resumable) -> None:
  """Raises CheckpointError if the saved config (a dict) differs from current beyond resumable."""
  if saved.get("model") != current["model"]:
    raise CheckpointError(f"{workdir} holds a {saved.get('model')!r} run, not "
                          f"{current['model']!r}; pass another --workdir or --model="
                          + str(saved.get("model")))
  diffs = [f"{k}={saved.get(k)!r} (now {current.get(k)!r})" for k in sorted(current)
           if k not in resumable and saved.get(k) != current.get(k)]
  if diffs:
    raise CheckpointError(f"{workdir} was trained with {', '.join(diffs)}; pass the same values "
                          "or another --workdir")


def write_config(workdir: str, config) -> None:
  os.makedirs(workdir, exist_ok=True)
  path, text = config_path(workdir), config.to_json(indent=2)
  if os.path.exists(path):
    with open(path) as f:
      if f.read() == text:
        return  # Unchanged (a resumed run): leave the file, and the folder, untouched.
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)  # Atomic: never a half-written config.
