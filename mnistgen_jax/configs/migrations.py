"""Every older layout of config.json, brought to today's fields in this one file.

The layouts the project has written (a config.json of each: tests/data/old_config_layouts.json):
0. Today's: {"family", "preset", and a mapping per section}; older ones are flat, {"model":
   family, field: value}. from_saved flattens today's, then every layout goes through migrate.
1. The first version's one flat config shared by all families (mnistgen_jax/configs.py): every
   family's file held every field; those a family no longer has are dropped (LEGACY_FIELDS).
2. `vqvae_workdir`, now `stage1_workdir` (RENAMED).
3. Fields added later whose default would change what an older run's checkpoint holds: a
   family's config file declares them with the value older runs had (ABSENT_IN_OLDER_RUNS, a
   value or f(saved fields)); dcgan's generator widths, R1, TTUR, smoothing and EMA statistics,
   latent_flow's guide network, the pixel flows' patch folding, pixel_vae's KL warm-up. A field
   added with a default that changes nothing trained (e.g.
   conv_taps_ratio, ynn_fusions, train_loop: speed only) takes today's default.
"""
from __future__ import annotations

# Fields of the first version's one flat config that a family no longer has.
LEGACY_FIELDS = frozenset({
    "arch", "latent_dim", "hidden", "channels", "num_codes", "code_dim", "codebook_mode",
    "ema_decay", "commitment_cost", "restart_after", "vqvae_workdir", "prior_width",
    "prior_layers", "prior_heads", "temperature", "gan_ema_decay"})
RENAMED = {"vqvae_workdir": "stage1_workdir"}


def migrate(saved: dict, defaults, absent_in_older_runs: dict) -> dict:
  """The fields of a saved config.json (its 'model' taken out) as today's family config reads
  them. defaults: the family's config today (which fields it has); absent_in_older_runs: its
  config file's ABSENT_IN_OLDER_RUNS."""
  saved = dict(saved)
  for old, new in RENAMED.items():
    if old in saved and new in defaults:  # Else a field of the flat config this family lacks.
      value = saved.pop(old)
      saved.setdefault(new, value)
  saved = {k: v for k, v in saved.items() if k in defaults or k not in LEGACY_FIELDS}
  for name, value in absent_in_older_runs.items():
    if name not in saved:
      saved[name] = value(saved) if callable(value) else value
  return saved


def flatten(saved: dict, sections) -> dict:
  """{field: value} of a config.json in today's layout (its 'family' taken out)."""
  saved = dict(saved)
  flat = {"preset": saved.pop("preset", "")}
  for section in sections:
    values = saved.pop(section, {})
    if not isinstance(values, dict):
      raise ValueError(f"its {section!r} section is not a mapping of fields")
    flat.update(values)
  if saved:
    raise ValueError(f"it has fields outside the sections: {', '.join(sorted(saved))}")
  return flat
